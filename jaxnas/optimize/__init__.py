"""Dataset optimization: split one dataset, train a baseline, optimize architecture and training
hyperparameters on its validation split (Optuna), and compare both models once on its test split.

``jaxnas optimize`` and ``jaxnas.run_optimize`` run the workflow (``workflow.py``); its parts are the
split (``split.py``), the models (``models.py``, ``register_model``), the one trainer (``trainer.py``),
the search space of hyperparameters (``hpspace.py``), the study (``study.py``), the paired statistics
(``stats.py``) and the report (``report.py``).
"""

from jaxnas.optimize.models import MODELS, register_model
from jaxnas.optimize import resnets  # noqa: F401  registers resnet:<depth> and wrn:<depth>-<k>
from jaxnas.optimize.split import Split, load_pool, pool_from_arrays, stratified_split
from jaxnas.optimize.stats import mcnemar, paired_bootstrap

__all__ = ["MODELS", "Split", "load_pool", "mcnemar", "paired_bootstrap", "pool_from_arrays",
           "register_model", "stratified_split"]
