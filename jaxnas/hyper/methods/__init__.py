"""The methods of ``optimize.tune=gradient`` (``registry`` explains them). Every module of this package
that does not start with ``_`` registers one (``l2rw``, ``mwnet``, ``hypergrad``, ``oracle``) and is
imported here, so a new method is one new file."""

from jaxnas.hyper.methods.registry import METHODS, Built, Context, Hyper, Method, register_hyper_method
from jaxnas.registry import import_registrations

import_registrations(__name__, __path__)

__all__ = ["METHODS", "Built", "Context", "Hyper", "Method", "register_hyper_method"]
