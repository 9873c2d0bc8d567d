"""What ``jaxnas search`` would refuse, checked without training (``--check``, and the search of
``jaxnas optimize --config.optimize.arch=search`` before that run starts)."""

from __future__ import annotations

import ml_collections
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import methods
from jaxnas.errors import JaxnasError
from jaxnas.evaluators import EVALUATORS, make_evaluator
from jaxnas.search import get_strategy
from jaxnas.spaces import build_supernet, discrete_space


def check_search(cfg: ml_collections.ConfigDict, dataset: data_lib.Dataset | None = None) -> data_lib.SearchData:
    """Everything ``run_search`` would refuse, without training: the strategy, the data (``dataset``, else
    ``cfg.data``) and its split, the space and its supernet (built abstractly, with its stages) or
    discrete form, and a table evaluator's file. Raises JaxnasError; returns the loaded, split data,
    which ``run_search(data=...)`` takes (the CLI checks before it makes the run directory)."""
    from jaxnas.methods import progressive
    from jaxnas.search import differentiable

    config_lib.check_config(cfg, "search")
    get_strategy(cfg.search.strategy)
    data = data_lib.search_data(cfg.data, dataset)
    ds = data.dataset
    if cfg.search.strategy == "darts":
        s = cfg.search
        methods.parts(cfg.method, s.epochs, 1)
        for part, idx in (("search-train", data.train_idx), ("search-val", data.val_idx)):
            if s.batch_size > len(idx):
                raise JaxnasError(f"search.batch_size {s.batch_size} is larger than the {len(idx)} examples of the "
                                  f"{part} split (data.train_portion={cfg.data.train_portion})")
        stages = progressive.stages(cfg.method.stages, s.epochs)
        net = nnx.eval_shape(lambda: build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(cfg.seed),
                                                    kernels=cfg.run.kernels))
        differentiable.check_stages(net, stages, cfg.space.name)
    else:
        space = discrete_space(cfg.space, ds.image_shape)
        if cfg.evaluator.kind == "table":
            make_evaluator(cfg, space)
        else:
            EVALUATORS.lookup(cfg.evaluator.kind)
    return data
