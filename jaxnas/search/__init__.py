"""Search strategies: one interface, one file each.

Every strategy is ``run(cfg, run_dir=None, log=print, resume=False) -> dict``
registered by name (``cfg.search.strategy`` picks it); the dict holds at least
``genotype`` (the architecture found) and ``history`` (one record per epoch or
evaluation). Gradient-based search (``darts``) implements ``run`` directly.

Discrete strategies are ask/tell objects (``jaxnas.search.base.Strategy``):
``ask()`` proposes an architecture, ``tell(arch, score)`` reports its score, and
``state_dict()`` is plain JSON, so a search resumes exactly. One file each
(``random_search.py``, ``greedy.py``, ``evolution.py``) registered with
``register_discrete_strategy``; ``jaxnas.search.discrete`` drives them with an
evaluator, a budget, checkpoints and reports.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxnas.errors import unknown

STRATEGIES: dict[str, Callable] = {}
DISCRETE_STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    def wrap(fn):
        STRATEGIES[name] = fn
        return fn

    return wrap


def register_discrete_strategy(name: str):
    """Register an ask/tell ``Strategy`` class; ``jaxnas search --config.search.strategy=<name>`` runs it."""

    def wrap(cls):
        from jaxnas.search import discrete

        DISCRETE_STRATEGIES[name] = cls
        STRATEGIES[name] = discrete.runner(cls)
        return cls

    return wrap


def get_strategy(name: str) -> Callable:
    if name not in STRATEGIES:
        raise unknown("search strategy", name, STRATEGIES)
    return STRATEGIES[name]


from jaxnas.search import darts, evolution, greedy, random_search, rsws  # noqa: E402,F401  (register them)
