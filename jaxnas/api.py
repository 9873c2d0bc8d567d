"""The workflows of the command line as Python calls (``jaxnas.run_search``, ``jaxnas.run_train``, ...).

Each takes a config (``load_config`` builds one, as ``jaxnas <command> --config ...`` does)
and runs with the kernel implementation it names (``run.kernels``). Without ``run_dir``
nothing is written to disk; with it, the folder is held by this process while the run lasts.
Every function checks its arguments first (the config's kind and fields, the data) and raises
``jaxnas.JaxnasError`` with the one-line message the CLI prints, before anything is trained
or written.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections

from jaxnas import config as config_lib
from jaxnas import rundir
from jaxnas import data as data_lib
from jaxnas import train as train_lib
from jaxnas.errors import JaxnasError
from jaxnas.search import get_strategy
from jaxnas.search.check import check_search

__all__ = ["check_optimize", "check_search", "check_train", "evaluate_run", "load_config", "run_optimize",
           "run_search", "run_train"]


def load_config(spec: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                kind: str = "search") -> ml_collections.ConfigDict:
    """A validated config: ``None`` (the tiny default on digits), ``configs/x.py[:arg]`` or a
    ``.json`` file, then ``"a.b=value"`` overrides, exactly as the CLI reads them."""
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise JaxnasError(f"overrides must be a list of 'field=value' strings, got {overrides!r}")
    return config_lib.apply_overrides(config_lib.load(spec, kind), list(overrides))


def check_train(cfg: ml_collections.ConfigDict) -> data_lib.Dataset:
    """Everything ``run_train`` would refuse, without training: the config, then the run's own set-up
    checks (``train.Retrain.check``: the genotype, the data, the network, the batch sizes against the
    devices). Returns the loaded dataset, which ``run_train(data=...)`` takes."""
    config_lib.check_config(cfg, "train")
    return train_lib.Retrain.check(cfg)


def run_search(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False,
               data: data_lib.SearchData | None = None) -> dict:
    """Run the strategy ``cfg.search.strategy`` names; returns at least ``genotype`` (the architecture
    found) and ``history``. ``data``: what ``check_search(cfg)`` returned (the data loaded and split
    once), else it is loaded here. ``run_dir`` is held (``rundir.lock``) while it runs."""
    config_lib.check_config(cfg, "search")
    strategy = get_strategy(cfg.search.strategy)
    if data is not None and not isinstance(data, data_lib.SearchData):
        raise JaxnasError(f"run_search: data must be what check_search(cfg) returned, got {type(data).__name__}")
    with rundir.locked(run_dir), rundir.disk_errors(run_dir):
        return strategy(cfg, run_dir, log=log, resume=resume, data=data)


def run_train(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False,
              data: data_lib.Dataset | None = None) -> dict:
    """Retrain ``cfg.genotype`` from scratch and test it once (a ``kind="train"`` config); ``data``: what
    ``check_train(cfg)`` returned, else it is loaded here. ``run_dir`` is held while it runs."""
    config_lib.check_config(cfg, "train")
    if data is not None and not isinstance(data, data_lib.Dataset):
        raise JaxnasError(f"run_train: data must be what check_train(cfg) returned, got {type(data).__name__}")
    with rundir.locked(run_dir), rundir.disk_errors(run_dir):
        return train_lib.run(cfg, run_dir, log=log, resume=resume, data=data)


def check_optimize(cfg: ml_collections.ConfigDict, data: dict | None = None):
    """Everything ``run_optimize`` would refuse, before anything is trained or written: the config, the data
    (``data``, else ``cfg.data``) and its split, the baseline's hyperparameters and model, the searched
    hyperparameters and models, the space, or the search of ``optimize.arch=search``. Returns the run's
    plan (``jaxnas.optimize.workflow.Plan``), which ``run_optimize(plan=...)`` takes."""
    from jaxnas.optimize import workflow

    config_lib.check_config(cfg, "optimize")
    return workflow.setup(cfg, _pool(data, cfg))


DATA_KEYS = ("x", "y", "x_test", "y_test")


def _pool(data, cfg):
    """``run_optimize``'s in-memory ``data`` as a pool, through the validator a ``.npz`` goes through."""
    from jaxnas.optimize import split

    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise JaxnasError(f"data must be a dict of arrays {{'x': images, 'y': labels}} (optionally 'x_test', "
                          f"'y_test'), got {type(data).__name__}")
    bad = sorted(map(str, set(data) - set(DATA_KEYS)))
    missing = [k for k in ("x", "y") if k not in data]
    if bad or missing:
        raise JaxnasError(f"data: {'missing ' + ', '.join(missing) if missing else 'unknown key(s) ' + ', '.join(bad)}; "
                          f"allowed: {', '.join(DATA_KEYS)} (x and y required)")
    return split.pool_from_arrays("arrays", data["x"], data["y"], data.get("x_test"), data.get("y_test"),
                                  cfg.data.num_classes)


def run_optimize(cfg: ml_collections.ConfigDict | None = None, run_dir: str | None = None, log=print,
                 resume: bool = False, data: dict | None = None, plan=None) -> dict:
    """Dataset optimization (a ``kind="optimize"`` config; ``None``: the default on digits): split, baseline,
    Optuna study on val, both models retrained and tested once; returns the report as a dict.

    ``data``: in-memory arrays instead of ``cfg.data.name``: ``{"x": ..., "y": ...}`` and optionally
    ``"x_test"``, ``"y_test"`` (images (N, H, W[, C]) uint8 or floats in 0..1, integer labels), checked as
    a ``.npz`` is. ``plan``: what ``check_optimize`` returned for this config and data. Everything the
    run would refuse is refused (``JaxnasError``) before anything is trained or written."""
    from jaxnas.optimize import workflow

    cfg = cfg if cfg is not None else load_config(None, kind="optimize")
    if plan is None:
        plan = check_optimize(cfg, data)
    elif data is not None:
        raise JaxnasError("run_optimize: give data or plan (check_optimize(cfg, data) made it), not both")
    return workflow.run(cfg, run_dir, log=log, resume=resume, plan=plan)


def evaluate_run(run_dir: str, log=print, imports: str = "") -> dict:
    """Reload a finished train run's weights and recompute its test metrics (``imports``: the modules the
    run was made with, which the caller has imported; a run directory never makes jaxnas import anything)."""
    return train_lib.evaluate_run(run_dir, log=log, imports=imports)
