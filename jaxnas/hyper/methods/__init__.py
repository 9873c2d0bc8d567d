"""The methods of ``optimize.tune=gradient`` (``registry`` explains them). Every module of this package
that does not start with ``_`` registers one (``l2rw``, ``mwnet``, ``hypergrad``, ``oracle``) and is
imported here, so a new method is one new file."""

import importlib
import pkgutil

from jaxnas.hyper.methods.registry import METHODS, Built, Context, Hyper, Method, register_hyper_method

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module != "registry":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "Built", "Context", "Hyper", "Method", "register_hyper_method"]
