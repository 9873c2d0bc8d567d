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

from jaxnas.registry import Registry
from jaxnas.search import discrete

STRATEGIES: Registry = Registry("search strategy")
DISCRETE_STRATEGIES: Registry = Registry("discrete search strategy")


def register_strategy(name: str):
    """Decorator registering ``run(cfg, run_dir, log, resume, data) -> dict`` as ``search.strategy=<name>``;
    ``data`` is the search's ``jaxnas.data.SearchData`` when the caller loaded it (``--check``'s setup), else None
    (``jaxnas.data.search_data(cfg.data)`` loads it)."""

    return lambda fn: STRATEGIES.add(name, fn)


def register_discrete_strategy(name: str):
    """Register an ask/tell ``Strategy`` class; ``jaxnas search --config.search.strategy=<name>`` runs it."""

    def wrap(cls):
        STRATEGIES.add(name, discrete.runner(cls))
        return DISCRETE_STRATEGIES.add(name, cls)

    return wrap


def get_strategy(name: str) -> Callable:
    return STRATEGIES.lookup(name)
