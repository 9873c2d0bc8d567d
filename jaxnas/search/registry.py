"""The strategy registry: one interface, one file per strategy.

Every strategy is ``run(cfg, run_dir=None, log=print, resume=False) -> dict`` registered by
name (``cfg.search.strategy`` picks it); the dict holds at least ``genotype`` (the
architecture found) and ``history`` (one record per epoch or evaluation). Discrete
strategies are ask/tell ``jaxnas.search.base.Strategy`` classes registered with
``register_discrete_strategy``; ``jaxnas.search.discrete`` drives them with an evaluator,
a budget, checkpoints and reports.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxnas.errors import unknown
from jaxnas.search import discrete

STRATEGIES: dict[str, Callable] = {}
DISCRETE_STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    """Decorator registering ``run(cfg, run_dir, log, resume) -> dict`` as ``search.strategy=<name>``."""

    def wrap(fn):
        STRATEGIES[name] = fn
        return fn

    return wrap


def register_discrete_strategy(name: str):
    """Register an ask/tell ``Strategy`` class; ``jaxnas search --config.search.strategy=<name>`` runs it."""

    def wrap(cls):
        DISCRETE_STRATEGIES[name] = cls
        STRATEGIES[name] = discrete.runner(cls)
        return cls

    return wrap


def get_strategy(name: str) -> Callable:
    if name not in STRATEGIES:
        raise unknown("search strategy", name, STRATEGIES)
    return STRATEGIES[name]
