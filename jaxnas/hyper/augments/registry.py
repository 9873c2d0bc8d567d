"""Differentiable augmentations whose magnitudes are hyperparameters learned by hypergradients
(``optimize.hyper.learn=augment_<name>``, ``jaxnas/hyper/reweight.py``).

An augmentation is ``x -> apply(x, m, draw)``: differentiable in its magnitude ``m``, with its
randomness ``draw`` drawn on the host for each training batch (seeded by the fit's seed, epoch and
step, so a resumed fit draws the same) and handed to the jitted step with the batch, split over the
devices as the batch is. The magnitude is ``m = bound(image shape) * sigmoid(z)``: ``z`` is the
learned parameter, ``start`` the fraction of the bound it starts at. The meta loss sees the
validation images without it. Each augmentation is one ``register_augment`` in a file of this
package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxnas.registry import Registry


class Augment(NamedTuple):
    """One learned augmentation: ``apply(x, m, draw) -> x`` on a batch of NHWC images (normalized);
    ``draw(rng, batch_shape) -> array`` of leading axis the batch; ``bound((H, W, C)) -> m_max``;
    ``start``: the magnitude at the start as a fraction of the bound; ``unit``: what ``m`` counts."""

    apply: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    draw: Callable[[np.random.Generator, tuple], np.ndarray]
    bound: Callable[[tuple], float]
    start: float
    unit: str


def uniform_per_image(rng: np.random.Generator, batch_shape: tuple) -> np.ndarray:
    """The draw of an augmentation with one ``u ~ U[-1, 1]`` per image: shape (N,)."""
    return rng.uniform(-1.0, 1.0, batch_shape[:1]).astype("float32")


AUGMENTS: Registry = Registry("learned augmentation")


def register_augment(name: str, augment: Augment) -> Augment:
    """Register ``augment`` as ``optimize.hyper.learn=augment_<name>``."""
    if not 0.0 < augment.start < 1.0:
        raise ValueError(f"augmentation {name!r}: start must be a fraction of the bound in (0, 1), got {augment.start}")
    return AUGMENTS.add(name, augment)


def magnitude(augment: Augment, z: jax.Array, image_shape: tuple) -> jax.Array:
    """``bound * sigmoid(z)``: the magnitude a learned parameter ``z`` stands for."""
    return augment.bound(tuple(image_shape)) * jax.nn.sigmoid(z)
