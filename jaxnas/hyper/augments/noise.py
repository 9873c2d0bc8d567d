"""Additive Gaussian noise ``x + m * eps``, ``eps ~ N(0, 1)`` per pixel and channel, on the
normalized image (``m`` in units of the training split's per-channel standard deviation; at most 1,
starting at 0.1). Its derivative in ``m`` is ``eps`` (the reparameterization)."""

from __future__ import annotations

from jaxnas.hyper.augments.registry import Augment, register_augment

register_augment("noise", Augment(
    apply=lambda x, m, eps: x + m * eps,
    draw=lambda rng, shape: rng.standard_normal(shape, dtype=float).astype("float32"),
    bound=lambda image_shape: 1.0,
    start=0.1,
    unit="std"))
