"""What ``jaxnas search`` would refuse, checked without training (``--check``, and the search of
``jaxnas optimize --config.optimize.arch=search`` before that run starts)."""

from __future__ import annotations

import ml_collections

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas.search import get_strategy


def check_search(cfg: ml_collections.ConfigDict, dataset: data_lib.Dataset | None = None) -> data_lib.SearchData:
    """Everything ``run_search`` would refuse, without training: the strategy, the data (``dataset``, else
    ``cfg.data``) and its split, then the run's own set-up checks: a differentiable search's
    (``DartsSearch.check``: the method, batch sizes against the splits and the devices, the supernet
    built abstractly with its stages) or a discrete one's (``discrete.check``: its budget, space and
    evaluator). Raises JaxnasError;
    returns the loaded, split data, which ``run_search(data=...)`` takes (the CLI checks before it makes
    the run directory)."""
    from jaxnas.search import differentiable, discrete

    config_lib.check_config(cfg, "search")
    get_strategy(cfg.search.strategy)
    data = data_lib.search_data(cfg.data, dataset)
    if cfg.search.strategy == "darts":
        differentiable.DartsSearch.check(cfg, data)
    else:
        discrete.check(cfg, data)
    return data
