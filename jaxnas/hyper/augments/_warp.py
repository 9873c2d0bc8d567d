"""Bilinear resampling of images under a geometric map, shared by the learned geometric
augmentations (``rotate``, ``scale``): differentiable in the map's parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


def about_centre(image: jax.Array, matrix: jax.Array) -> jax.Array:
    """One HWC image resampled at ``c + matrix @ (p - c)`` for each output pixel ``p`` = (row, col),
    ``c`` the image's centre, by bilinear interpolation with zeros (the normalized mean) outside."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy = jnp.broadcast_to(jnp.arange(h, dtype=image.dtype)[:, None] - cy, (h, w))
    dx = jnp.broadcast_to(jnp.arange(w, dtype=image.dtype)[None, :] - cx, (h, w))
    rows = cy + matrix[0, 0] * dy + matrix[0, 1] * dx
    cols = cx + matrix[1, 0] * dy + matrix[1, 1] * dx
    channel = lambda c: ndimage.map_coordinates(c, [rows, cols], order=1, mode="constant", cval=0.0)  # noqa: E731
    return jax.vmap(channel, in_axes=2, out_axes=2)(image)
