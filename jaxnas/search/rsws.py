"""Random search with weight sharing (Li & Talwalkar, UAI 2019): random architectures scored by
a weight-sharing supernet (the ``supernet`` evaluator), the best retrained from scratch (or
looked up in a table) for the test report."""

from __future__ import annotations

from jaxnas.evaluators.supernet import SupernetEvaluator
from jaxnas.search import discrete
from jaxnas.search.random_search import RandomSearch
from jaxnas.search.registry import register_strategy


@register_strategy("rsws")
def run(cfg, run_dir=None, log=print, resume=False, data=None) -> dict:
    """Random search scored by a weight-sharing supernet, then the best retrained (or looked up) for test."""
    discrete.check_budget(cfg.discrete)
    space = discrete.space_of(cfg, data)
    return discrete.run(cfg, run_dir, log, resume, RandomSearch, evaluator=SupernetEvaluator(space, cfg, log, data),
                        data=data)
