"""The workflows of the command line as Python calls (``jaxnas.run_search``, ``jaxnas.run_train``, ...).

Each takes a config (``load_config`` builds one, as ``jaxnas <command> --config ...`` does)
and runs with the kernel implementation it names (``run.kernels``). Without ``run_dir``
nothing is written to disk.
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import genotype as genotype_lib
from jaxnas import kernels, methods
from jaxnas import train as train_lib
from jaxnas.errors import unknown
from jaxnas.evaluators import EVALUATORS, make_evaluator
from jaxnas.search import get_strategy
from jaxnas.search.bilevel import ORDERS
from jaxnas.spaces import build_supernet, discrete_space


def load_config(spec: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                kind: str = "search") -> ml_collections.ConfigDict:
    """A validated config: ``None`` (the tiny default on digits), ``configs/x.py[:arg]`` or a
    ``.json`` file, then ``"a.b=value"`` overrides, exactly as the CLI reads them."""
    return config_lib.apply_overrides(config_lib.load(spec, kind), list(overrides))


def check_search(cfg: ml_collections.ConfigDict) -> None:
    """Everything ``run_search`` would refuse, without training: the strategy, the data, the space and
    its supernet (built abstractly) or discrete form, and a table evaluator's file. Raises JaxnasError."""
    get_strategy(cfg.search.strategy)
    ds = data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
    data_lib.resolve_augment(cfg.data.augment, ds.name)
    if cfg.search.strategy == "darts":
        if cfg.search.order not in ORDERS:
            raise unknown("search order", cfg.search.order, ORDERS)
        methods.parts(cfg.method, cfg.search.epochs, 1)
        with kernels.use(cfg.run.kernels):
            jax.eval_shape(lambda: nnx.state(build_supernet(cfg.space, ds.image_shape, ds.num_classes,
                                                            nnx.Rngs(cfg.seed))))
    else:
        space = discrete_space(cfg.space, ds.image_shape)
        if cfg.evaluator.kind == "table":
            make_evaluator(cfg, space)
        else:
            EVALUATORS.lookup(cfg.evaluator.kind)


def check_train(cfg: ml_collections.ConfigDict) -> None:
    """Everything ``run_train`` would refuse, without training: the genotype, the data and the network."""
    genotype = genotype_lib.load(cfg.genotype)
    ds = data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
    if cfg.train.dtype not in train_lib.DTYPES:
        raise unknown("train.dtype", cfg.train.dtype, train_lib.DTYPES)
    with kernels.use(cfg.run.kernels):
        jax.eval_shape(lambda: nnx.state(train_lib.build_network(cfg, genotype, ds.image_shape, ds.num_classes)))


def run_search(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False) -> dict:
    """Run the strategy ``cfg.search.strategy`` names; returns at least ``genotype`` (the architecture
    found) and ``history``."""
    with kernels.use(cfg.run.kernels):
        return get_strategy(cfg.search.strategy)(cfg, run_dir, log=log, resume=resume)


def run_train(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False) -> dict:
    """Retrain ``cfg.genotype`` from scratch and test it once (a ``kind="train"`` config)."""
    with kernels.use(cfg.run.kernels):
        return train_lib.run(cfg, run_dir, log=log, resume=resume)


def check_optimize(cfg: ml_collections.ConfigDict) -> None:
    """Everything ``run_optimize`` would refuse before training: the data and its split, the baseline's
    hyperparameters and model, the searched hyperparameters and the space."""
    from jaxnas.optimize import models, split, study, workflow

    d = cfg.data
    pool = split.load_pool(d.name, d.data_dir, d.num_classes)
    split.stratified_split(pool, d.val_fraction, d.test_fraction, cfg.seed)
    base = workflow.baseline_hparams(cfg)
    jax.eval_shape(lambda: nnx.state(models.build(base["model"], pool.image_shape, pool.num_classes,
                                                  nnx.Rngs(0), cfg)))
    study.check(cfg.optimize)
    if cfg.optimize.arch == "space":
        space = discrete_space(cfg.space, pool.image_shape)
        if cfg.optimize.first_arch:
            study.arch_params(space, cfg.optimize.first_arch)


def run_optimize(cfg: ml_collections.ConfigDict | None = None, run_dir: str | None = None, log=print,
                 resume: bool = False, data: dict | None = None) -> dict:
    """Dataset optimization (a ``kind="optimize"`` config; ``None``: the default on digits): split, baseline,
    Optuna study on val, both models retrained and tested once; returns the report as a dict.

    ``data``: in-memory arrays instead of ``cfg.data.name``: ``{"x": ..., "y": ...}`` and optionally
    ``"x_test"``, ``"y_test"`` (images (N, H, W[, C]) uint8 or floats in 0..1, integer labels)."""
    from jaxnas.optimize import split, workflow

    cfg = cfg if cfg is not None else load_config(None, kind="optimize")
    pool = None
    if data is not None:
        pool = split.pool_from_arrays("arrays", data["x"], data["y"], data.get("x_test"), data.get("y_test"),
                                      cfg.data.num_classes)
    with kernels.use(cfg.run.kernels):
        return workflow.run(cfg, run_dir, log=log, resume=resume, pool=pool)


def evaluate_run(run_dir: str, log=print, imports: str = "") -> dict:
    """Reload a finished train run's weights and recompute its test metrics (``imports``: the modules the
    run was made with, which the caller has imported; a run directory never makes jaxnas import anything)."""
    return train_lib.evaluate_run(run_dir, log=log, imports=imports)
