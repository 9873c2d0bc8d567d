"""jaxnas: neural architecture search and dataset optimization in JAX.

The public API (everything below is documented where it is defined):

* configs and workflows: ``load_config``, ``run_search``, ``run_train``, ``evaluate_run``,
  ``run_optimize`` (dataset optimization; its parts in ``jaxnas.optimize``, models by ``register_model``)
  and ``check_search``, ``check_train``, ``check_optimize`` (what ``--check`` runs); bad input of any
  kind raises ``JaxnasError`` with the CLI's one-line message;
* supernets and the bilevel step: ``build_supernet``, ``SearchState``, ``init_state``,
  ``make_search_step``, ``make_eval_step``, ``weight_optimizer``, ``alpha_optimizer``,
  ``epoch_cosine_lr``, ``split_model``;
* architectures: ``derive_from_alphas`` / ``derive_from_weights`` (DARTS's rule),
  ``Genotype``, ``load_genotype``, ``DartsNetwork`` (the retraining network), ``count_params``;
* extension points, one registration each: ``register_op``, ``register_space`` (a ``Space``
  subclass), ``register_relaxation``, ``register_strategy`` / ``register_discrete_strategy``,
  ``register_evaluator``; and ``kernels`` (the one setting for native CPU vs XLA kernels);
* the DARTS family (``jaxnas.methods``): ``method_config`` (a method's official defaults),
  ``methods.parts``, and the method parts' registrations ``register_regularizer``,
  ``register_perturbation``, ``register_method``;
* hypergradients (``jaxnas.hyper``): unrolled and implicit estimators of the derivative of a
  validation loss through training, and the reweighting methods of ``optimize.tune=gradient``;
  ``register_augment`` adds a differentiable augmentation whose magnitude it can learn,
  ``register_hyper_method`` a method of ``optimize.hyper.method`` (``jaxnas/hyper/methods``);
* accelerators without the device (``jaxnas.targets``): compile any step for an H100/H200, A100 or
  TPU v5e on a CPU and read XLA's memory plan, FLOPs and program (``targets.steps`` builds jaxnas's).
"""

__version__ = "0.1.0"

from jaxnas import kernels, methods, relaxations
from jaxnas import hyper, optimize, targets
from jaxnas.api import (check_optimize, check_search, check_train, evaluate_run, load_config, run_optimize,
                        run_search, run_train)
from jaxnas.errors import JaxnasError
from jaxnas.config import method_config
from jaxnas.data import load_dataset
from jaxnas.evaluators import register_evaluator
from jaxnas.genotype import Genotype, derive_from_alphas, derive_from_weights
from jaxnas.genotype import load as load_genotype
from jaxnas.hyper.augments import register_augment
from jaxnas.hyper.methods import register_hyper_method
from jaxnas.methods import register_method, register_perturbation, register_regularizer
from jaxnas.nn import ArchParam, count_params, split_model
from jaxnas.ops import register_op
from jaxnas.optimize import register_model
from jaxnas.optim import alpha_optimizer, epoch_cosine_lr, weight_optimizer
from jaxnas.relaxations import register_relaxation
from jaxnas.search import register_discrete_strategy, register_strategy
from jaxnas.search.base import Strategy
from jaxnas.search.bilevel import SearchState, init_state, make_eval_step, make_search_step
from jaxnas.spaces import DiscreteSpace, Space, build_supernet, register_space
from jaxnas.spaces.darts import DartsNetwork

__all__ = ["ArchParam", "DartsNetwork", "DiscreteSpace", "Genotype", "JaxnasError", "SearchState", "Space",
           "Strategy", "alpha_optimizer", "check_optimize", "check_search", "check_train", "build_supernet", "count_params", "derive_from_alphas", "derive_from_weights",
           "epoch_cosine_lr", "evaluate_run", "hyper", "init_state", "kernels", "load_config", "load_dataset", "load_genotype",
           "make_eval_step", "make_search_step", "method_config", "methods", "optimize", "register_discrete_strategy",
           "register_augment", "register_evaluator", "register_hyper_method", "register_method", "register_model", "register_op", "register_perturbation", "register_regularizer",
           "register_relaxation", "register_space", "register_strategy", "relaxations", "run_optimize", "run_search",
           "run_train", "targets",
           "split_model", "weight_optimizer"]
