"""What ``jaxnas search`` would refuse, checked without training (``--check``, and the search of
``jaxnas optimize --config.optimize.arch=search`` before that run starts)."""

from __future__ import annotations

import ml_collections

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas.evaluators import EVALUATORS, make_evaluator
from jaxnas.search import get_strategy
from jaxnas.spaces import discrete_space


def check_search(cfg: ml_collections.ConfigDict, dataset: data_lib.Dataset | None = None) -> data_lib.SearchData:
    """Everything ``run_search`` would refuse, without training: the strategy, the data (``dataset``, else
    ``cfg.data``) and its split, then the run's own set-up checks: a differentiable search's
    (``DartsSearch.check``: the method, batch sizes against the splits and the devices, the supernet
    built abstractly with its stages) or a discrete one's (its space and evaluator). Raises JaxnasError;
    returns the loaded, split data, which ``run_search(data=...)`` takes (the CLI checks before it makes
    the run directory)."""
    from jaxnas.search import differentiable

    config_lib.check_config(cfg, "search")
    get_strategy(cfg.search.strategy)
    data = data_lib.search_data(cfg.data, dataset)
    if cfg.search.strategy == "darts":
        differentiable.DartsSearch.check(cfg, data)
    else:
        check_discrete(cfg, data)
    return data


def check_discrete(cfg: ml_collections.ConfigDict, data: data_lib.SearchData) -> None:
    """A discrete search's space for these images, and its evaluator (a table evaluator's file)."""
    space = discrete_space(cfg.space, data.dataset.image_shape)
    if cfg.evaluator.kind == "table":
        make_evaluator(cfg, space)
    else:
        EVALUATORS.lookup(cfg.evaluator.kind)
