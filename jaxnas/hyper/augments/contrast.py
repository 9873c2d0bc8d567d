"""Contrast: each image's deviation from its own mean scaled by ``1 + m * u``, ``u ~ U[-1, 1]`` per
image (``m`` at most 1, starting at 0.5: DiffAugment's ``rand_contrast`` factor range [0.5, 1.5],
Zhao et al. 2020, as the starting point of a learned one)."""

from __future__ import annotations

import jax

from jaxnas.hyper.augments.registry import Augment, register_augment, uniform_per_image


def contrast(x: jax.Array, m: jax.Array, u: jax.Array) -> jax.Array:
    """``mean + (1 + m u) (x - mean)`` per image of the NHWC batch, the mean over pixels and channels."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + (1 + m * u[:, None, None, None].astype(x.dtype)) * (x - mean)


register_augment("contrast", Augment(
    apply=contrast,
    draw=uniform_per_image,
    bound=lambda image_shape: 1.0,
    start=0.5,
    unit="factor"))
