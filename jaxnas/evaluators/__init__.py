"""Evaluators score architectures for discrete search; one file each, registered by name.

``table`` (a tabular benchmark CSV), ``train`` (train from scratch, score search-val) and
``supernet`` (a weight-sharing supernet). See ``registry.py`` for the protocol.
"""

from jaxnas.evaluators.registry import EVALUATORS, final_tester, make_evaluator, register_evaluator
from jaxnas.evaluators.table import TableEvaluator
from jaxnas.evaluators.train import TrainEvaluator, make_classifier_steps
from jaxnas.evaluators.supernet import SupernetEvaluator  # noqa: I001  (registered in this order)

__all__ = ["EVALUATORS", "SupernetEvaluator", "TableEvaluator", "TrainEvaluator", "final_tester",
           "make_classifier_steps", "make_evaluator", "register_evaluator"]
