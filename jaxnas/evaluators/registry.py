"""The evaluator registry: how discrete strategies score an architecture.

An evaluator has ``score(arch) -> (score, cost)`` (higher score is better; cost in seconds,
which ``discrete.budget_seconds`` counts), a ``has_cost`` attribute (False when every cost is
0, so a time budget could never end), and optionally ``test(arch) -> dict`` (accuracy,
macro_f1, ...: the final report on the test split). It is registered by name as a factory
``make(space, cfg, log) -> evaluator`` (a class whose ``__init__`` takes these does);
``evaluator.kind`` picks it.
"""

from __future__ import annotations

from jaxnas.registry import Registry

EVALUATORS: Registry = Registry("evaluator.kind")


def register_evaluator(name: str):
    """Decorator registering ``make(space, cfg, log) -> evaluator`` as ``evaluator.kind=<name>``."""

    return lambda factory: EVALUATORS.add(name, factory)


def _make(cls, space, cfg, log, data):
    """An evaluator; one that declares ``takes_data = True`` gets the search's loaded data (``data.SearchData``)
    instead of loading it again."""
    if data is not None and getattr(cls, "takes_data", False):
        return cls(space, cfg, log, data=data)
    return cls(space, cfg, log)


def make_evaluator(cfg, space, log=print, data=None):
    """The evaluator named by ``evaluator.kind`` (``data``: the search's ``SearchData``, when loaded)."""
    return _make(EVALUATORS.lookup(cfg.evaluator.kind), space, cfg, log, data)


def final_tester(cfg, space, evaluator, log=print, data=None):
    """What measures the found architecture on test: the evaluator itself when it has ``test``;
    else (weight sharing) the table if one is given, else training from scratch."""
    if hasattr(evaluator, "test"):
        return evaluator
    kind = "table" if cfg.evaluator.table else "train"
    return _make(EVALUATORS[kind], space, cfg, log, data)
