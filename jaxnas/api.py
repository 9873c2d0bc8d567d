"""The workflows of the command line as Python calls (``jaxnas.run_search``, ``jaxnas.run_train``, ...).

Each takes a config (``load_config`` builds one, as ``jaxnas <command> --config ...`` does)
and runs with the kernel implementation it names (``run.kernels``). Without ``run_dir``
nothing is written to disk.
"""

from __future__ import annotations

import ml_collections

from jaxnas import config as config_lib
from jaxnas import kernels
from jaxnas import train as train_lib
from jaxnas.search import get_strategy


def load_config(spec: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                kind: str = "search") -> ml_collections.ConfigDict:
    """A validated config: ``None`` (the tiny default on digits), ``configs/x.py[:arg]`` or a
    ``.json`` file, then ``"a.b=value"`` overrides, exactly as the CLI reads them."""
    return config_lib.apply_overrides(config_lib.load(spec, kind), list(overrides))


def run_search(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False) -> dict:
    """Run the strategy ``cfg.search.strategy`` names; returns at least ``genotype`` (the architecture
    found) and ``history``."""
    with kernels.use(cfg.run.kernels):
        return get_strategy(cfg.search.strategy)(cfg, run_dir, log=log, resume=resume)


def run_train(cfg: ml_collections.ConfigDict, run_dir: str | None = None, log=print, resume: bool = False) -> dict:
    """Retrain ``cfg.genotype`` from scratch and test it once (a ``kind="train"`` config)."""
    with kernels.use(cfg.run.kernels):
        return train_lib.run(cfg, run_dir, log=log, resume=resume)


def evaluate_run(run_dir: str, log=print) -> dict:
    """Reload a finished train run's weights and recompute its test metrics."""
    return train_lib.evaluate_run(run_dir, log=log)
