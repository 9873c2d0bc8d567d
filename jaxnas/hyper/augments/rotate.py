"""Rotation of each image about its centre by ``m * u`` degrees, ``u ~ U[-1, 1]`` per image,
counter-clockwise as displayed for a positive angle, by bilinear interpolation with zeros (the
normalized mean) rotated in. At most 30 degrees, starting at a quarter of that (7.5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnas.hyper.augments._warp import about_centre
from jaxnas.hyper.augments.registry import Augment, register_augment, uniform_per_image


def rotate(x: jax.Array, m: jax.Array, u: jax.Array) -> jax.Array:
    """Each image of the NHWC batch ``x`` rotated by ``m * u[n]`` degrees (module docstring): the
    output pixel at offset (dy, dx) from the centre reads the input at (cos t dy + sin t dx,
    -sin t dy + cos t dx)."""
    t = jnp.deg2rad(m * u.astype(x.dtype))
    c, s = jnp.cos(t), jnp.sin(t)
    matrices = jnp.stack([jnp.stack([c, s], -1), jnp.stack([-s, c], -1)], -2)
    return jax.vmap(about_centre)(x, matrices)


register_augment("rotate", Augment(
    apply=rotate,
    draw=uniform_per_image,
    bound=lambda image_shape: 30.0,
    start=0.25,
    unit="degrees"))
