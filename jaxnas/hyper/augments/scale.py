"""Zoom of each image about its centre by the factor ``1 + m * u``, ``u ~ U[-1, 1]`` per image (above
1 enlarges), by bilinear interpolation with zeros (the normalized mean) outside the image. ``m`` at
most 0.5 (factors 0.5 to 1.5), starting at a quarter of that (0.875 to 1.125)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnas.hyper.augments._warp import about_centre
from jaxnas.hyper.augments.registry import Augment, register_augment, uniform_per_image


def scale(x: jax.Array, m: jax.Array, u: jax.Array) -> jax.Array:
    """Each image of the NHWC batch ``x`` zoomed by ``1 + m * u[n]`` (module docstring): the output
    pixel at offset d from the centre reads the input at d / (1 + m u)."""
    inv = 1.0 / (1.0 + m * u.astype(x.dtype))
    eye = jnp.eye(2, dtype=x.dtype)
    return jax.vmap(about_centre)(x, inv[:, None, None] * eye)


register_augment("scale", Augment(
    apply=scale,
    draw=uniform_per_image,
    bound=lambda image_shape: 0.5,
    start=0.25,
    unit="zoom factor - 1"))
