"""Learned augmentations (``registry`` explains them); one file registers each: ``noise``,
``translate``, ``brightness``, ``contrast``."""

from jaxnas.hyper.augments import brightness, contrast, noise, translate  # noqa: F401  (registrations)
from jaxnas.hyper.augments.registry import AUGMENTS, Augment, magnitude, register_augment

__all__ = ["AUGMENTS", "Augment", "magnitude", "register_augment"]
