"""Learned augmentations (``registry`` explains them). Every module of this package that does not
start with ``_`` registers one (``noise``, ``translate``, ``brightness``, ``contrast``, ``rotate``,
``scale``) and is imported here, so a new augmentation is one new file."""

import importlib
import pkgutil

from jaxnas.hyper.augments.registry import AUGMENTS, Augment, magnitude, register_augment

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module != "registry":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["AUGMENTS", "Augment", "magnitude", "register_augment"]
