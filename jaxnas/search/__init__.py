"""Search strategies: one interface, one file each.

A strategy is ``run(cfg, run_dir=None, log=print) -> dict`` registered by name; the
dict holds at least ``genotype`` (the architecture found) and ``history`` (one
record per epoch or evaluation). ``cfg.search.strategy`` picks it.
"""

from __future__ import annotations

from typing import Callable

from jaxnas.errors import unknown

STRATEGIES: dict[str, Callable] = {}


def register_strategy(name: str):
    def wrap(fn):
        STRATEGIES[name] = fn
        return fn

    return wrap


def get_strategy(name: str) -> Callable:
    if name not in STRATEGIES:
        raise unknown("search strategy", name, STRATEGIES)
    return STRATEGIES[name]


from jaxnas.search import darts  # noqa: E402,F401  (registers 'darts')
