"""Learned augmentations (``registry`` explains them). Every module of this package that does not
start with ``_`` registers one (``noise``, ``translate``, ``brightness``, ``contrast``, ``rotate``,
``scale``) and is imported here, so a new augmentation is one new file."""

from jaxnas.hyper.augments.registry import AUGMENTS, Augment, magnitude, register_augment
from jaxnas.registry import import_registrations

import_registrations(__name__, __path__)

__all__ = ["AUGMENTS", "Augment", "magnitude", "register_augment"]
