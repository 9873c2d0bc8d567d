"""Translation of each image by ``m * (u_y, u_x)`` pixels, ``u ~ U[-1, 1]^2`` per image, by
bilinear interpolation with zeros (the normalized mean) shifted in: a fractional shift is a
weighted sum of the two nearest integer shifts, so the image is differentiable in ``m``. At most a
quarter of the image's side, starting at a sixteenth (2 pixels at 32x32, half a pixel at 8x8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from jaxnas.hyper.augments.registry import Augment, register_augment


def _shift(image: jax.Array, offset: jax.Array) -> jax.Array:
    """One HWC image moved by ``offset`` = (dy, dx) pixels: out[i, j] = image[i - dy, j - dx]."""
    h, w, _ = image.shape
    rows = jnp.arange(h, dtype=image.dtype)[:, None] - offset[0]
    cols = jnp.arange(w, dtype=image.dtype)[None, :] - offset[1]
    rows, cols = jnp.broadcast_to(rows, (h, w)), jnp.broadcast_to(cols, (h, w))
    channel = lambda c: ndimage.map_coordinates(c, [rows, cols], order=1, mode="constant", cval=0.0)  # noqa: E731
    return jax.vmap(channel, in_axes=2, out_axes=2)(image)


def translate(x: jax.Array, m: jax.Array, u: jax.Array) -> jax.Array:
    """Each image of the NHWC batch ``x`` moved by ``m * u[n]`` pixels (module docstring)."""
    return jax.vmap(_shift)(x, m * u.astype(x.dtype))


register_augment("translate", Augment(
    apply=translate,
    draw=lambda rng, shape: rng.uniform(-1.0, 1.0, (shape[0], 2)).astype("float32"),
    bound=lambda image_shape: image_shape[0] / 4,
    start=0.25,
    unit="pixels"))
