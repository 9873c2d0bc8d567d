"""The DARTS family as compositions of parts over the one bilevel step (``registry`` explains the parts).

One file per method registers that method's parts and its preset: ``darts``, ``gdas``, ``snas``,
``drnas``, ``betadarts``, ``fairdarts``, ``pcdarts``, ``darts_minus``, ``sdarts_rs``/``sdarts_adv``.
"""

from jaxnas.methods import (betadarts, darts, darts_minus, drnas, fairdarts, gdas,  # noqa: F401  (registrations)
                            pcdarts, sdarts, snas)
from jaxnas.methods.registry import (HYPER, METHODS, PERTURBATIONS, REGULARIZERS, Parts, method_defaults,
                                     op_alphas, parts, register_method, register_perturbation,
                                     register_regularizer, schedule)

__all__ = ["HYPER", "METHODS", "PERTURBATIONS", "REGULARIZERS", "Parts", "method_defaults", "op_alphas", "parts",
           "register_method", "register_perturbation", "register_regularizer", "schedule"]
