"""Run configurations: ml_collections ConfigDicts, command-line overrides and validation.

Configs in ``configs/`` are Python files with ``get_config(arg=None)`` (big_vision
style): they are code that ships with the project and runs like any script you
run. Configs written into run directories, and any ``.json`` passed to
``--config``, are data: parsed as JSON, never executed. Every config is checked
field by field against the defaults here (unknown field or wrong type: a
one-line error naming it). The ``space`` group holds ``name`` and the fields of that
space, declared by the registered space itself (``Space.defaults``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from typing import Any, Callable, NamedTuple

import ml_collections

from jaxnas import kernels, rundir
from jaxnas.errors import JaxnasError
from jaxnas.methods import METHODS, method_defaults, progressive
from jaxnas.methods.registry import SPANS
from jaxnas.optimize import hpspace, model_spec
from jaxnas.spaces import SPACES, get_space


def run_defaults(log_every: int, checkpoint_every: int) -> ml_collections.ConfigDict:
    """Where a run writes, how it logs and checkpoints, and how it joins other processes."""
    return ml_collections.ConfigDict(dict(
        workdir="runs", name="", devices=0, log_every=log_every, compile_cache="", imports="",
        kernels="auto",  # auto, native, dense, shift, grouped (jaxnas/kernels/__init__.py)
        fusion_autotune=False,  # GPU: XLA's fusion autotuner (off: half the compile time; parallel.compiler_options)
        checkpoint_every=checkpoint_every,  # steps between checkpoints (0: epoch ends only); always at epoch ends
        keep_checkpoints=3, tensorboard=True, progress=True,
        profile_step=0, profile_steps=3,  # a profiler trace of these global steps into <run>/profile (0: none; jaxnas/tracing.py)
        coordinator="", num_processes=0, process_id=-1, init_timeout=120))  # see jaxnas/distributed.py


def search_defaults() -> ml_collections.ConfigDict:
    """DARTS's train_search.py defaults (CIFAR-10, first order)."""
    c = ml_collections.ConfigDict()
    c.seed = 2
    c.space = space_group("darts")  # the fields of the space named space.name (its Space.defaults)
    c.data = ml_collections.ConfigDict(dict(name="cifar10", data_dir="", train_portion=0.5, augment="auto"))
    c.search = ml_collections.ConfigDict(dict(
        strategy="darts", order="first", epochs=50, batch_size=64, max_steps_per_epoch=0, eval_batch_size=256,
        eval_examples=0,  # search-val images evaluated at each epoch end (0: all of them)
        dtype="float32",  # strategy=darts: the supernet's compute dtype, float32 or bfloat16 (mixed precision)
        passes="unrolled"))  # first order: unrolled, or loop (both passes one compiled body: less compile, more bytes)
    c.optim = ml_collections.ConfigDict(dict(
        lr=0.025, lr_min=0.001, momentum=0.9, nesterov=False, weight_decay=3e-4, grad_clip=5.0,
        arch_lr=3e-4, arch_beta1=0.5, arch_beta2=0.999, arch_weight_decay=1e-3))
    c.method = method_defaults()  # the DARTS-family parts (jaxnas/methods): regularizer, perturbation, schedules
    # Discrete strategies (random, greedy, evolution, rsws): budget, strategy settings and evaluator.
    c.discrete = ml_collections.ConfigDict(dict(
        budget_evals=100, budget_seconds=0.0,  # stop at whichever comes first; 0 = no limit of that kind
        population=50, tournament=10,          # regularized evolution (Real et al. 2019)
        greedy_sweeps=1,                       # passes over all decisions
        ws_epochs=10, ws_eval_batches=4,       # random search with weight sharing (Li & Talwalkar 2019)
        final_test=True))                      # evaluate the best architecture on the test split
    c.evaluator = ml_collections.ConfigDict(dict(
        kind="train",  # train: from scratch on search-train, scored on search-val; table: a CSV; supernet
        table="", arch_column="arch", score_column="val_acc", test_column="test_acc", f1_column="",
        cost_column="", epochs=2, batch_size=64, lr=0.05, weight_decay=5e-4, final_epochs=0))
    c.run = run_defaults(log_every=10, checkpoint_every=100)
    return c


def space_group(name: str, given=None) -> ml_collections.ConfigDict:
    """The ``space`` group of space ``name``: its defaults, overlaid with the values in ``given`` that
    it has. Fields of other registered spaces in ``given`` are dropped (left over after a change of
    ``space.name``); a field no space has is an error naming it."""
    defaults = get_space(name).defaults()
    out = ml_collections.ConfigDict({"name": name, **defaults.to_dict()})
    known = {k for sp in SPACES.values() for k in sp.defaults().keys()}
    for key in (given.keys() if given is not None else ()):
        if key == "name":
            continue
        if key in defaults:
            ref = defaults[key]
            if not _type_ok(given[key], ref):
                raise JaxnasError(f"config field 'space.{key}' must be {type(ref).__name__}, got {given[key]!r} "
                                  f"({type(given[key]).__name__})")
            out[key] = float(given[key]) if isinstance(ref, float) else given[key]
        elif key not in known:
            raise JaxnasError(f"unknown config field 'space.{key}'; allowed for space {name!r}: "
                              f"{', '.join(sorted(['name', *defaults.keys()]))}")
    return out


def _with_space(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``cfg`` with its space group rebuilt for ``space.name`` (see ``space_group``)."""
    if "space" in cfg and not isinstance(cfg.space, (ml_collections.ConfigDict, dict)):
        raise JaxnasError(f"config field 'space' must be a group of fields, got {cfg.space!r}")
    if "space" in cfg:
        name = cfg.space.get("name", "darts")
        if not isinstance(name, str):
            raise JaxnasError(f"config field 'space.name' must be str, got {name!r} ({type(name).__name__})")
        cfg.space = space_group(name, cfg.space)
    return cfg


def method_config(name: str, space: str = "darts") -> ml_collections.ConfigDict:
    """A search config with method ``name``'s official defaults (``jaxnas.methods``) on space ``space``."""
    configure = METHODS.lookup(name)
    c = search_defaults()
    c.space = space_group(space)
    c.method.name = name
    configure(c)
    return c


def tiny_search() -> ml_collections.ConfigDict:
    """The no-argument ``jaxnas search``: a small supernet on the embedded digits, minutes on 2 CPU cores."""
    c = search_defaults()
    c.data.name = "digits"
    c.space.C = 8
    c.space.layers = 3
    c.search.epochs = 6
    c.search.batch_size = 64
    c.optim.arch_lr = 3e-3  # 10x DARTS's rate: 6 short epochs instead of 50 long ones
    c.run.log_every = 5
    return c


def train_defaults() -> ml_collections.ConfigDict:
    """DARTS's train.py defaults: retrain a genotype from scratch (CIFAR-10, 600 epochs)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.genotype = "DARTS_V2"
    c.model = ml_collections.ConfigDict(dict(C=36, layers=20, auxiliary=True, auxiliary_weight=0.4,
                                             drop_path_prob=0.2, stem_multiplier=3))
    c.data = ml_collections.ConfigDict(dict(name="cifar10", data_dir="", augment="auto", cutout=16))
    c.train = ml_collections.ConfigDict(dict(epochs=600, batch_size=96, eval_batch_size=256,
                                             max_steps_per_epoch=0, dtype="float32"))
    c.optim = ml_collections.ConfigDict(dict(lr=0.025, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0))
    c.run = run_defaults(log_every=50, checkpoint_every=500)
    return c


def tiny_train() -> ml_collections.ConfigDict:
    """The no-argument ``jaxnas train``: DARTS_V2 at C=8, 3 cells on the embedded digits."""
    c = train_defaults()
    c.data.name = "digits"
    c.data.cutout = 0
    c.model.C, c.model.layers, c.model.auxiliary = 8, 3, False
    c.train.epochs, c.train.batch_size = 10, 64
    c.run.log_every = 10
    return c


def optimize_defaults() -> ml_collections.ConfigDict:
    """Dataset optimization (``jaxnas optimize``): split, baseline, Optuna study, test comparison.
    jaxnas/optimize/ documents each part; docs/optimize.md the workflow."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", val_fraction=0.15,
        test_fraction=0.15,  # drawn only when the dataset has no test split of its own
        num_classes=0))      # 0: the largest label + 1
    # a known corruption of train (and val where asked), never test (jaxnas/optimize/corrupt.py): label
    # noise (symmetric or MW-Net's uniform_mix, at rate) or class imbalance (longtail, by factor)
    c.data.corrupt = ml_collections.ConfigDict(dict(kind="none", rate=0.0, factor=1.0, val=False))
    c.space = space_group("chain")  # the architectures of optimize.arch = "space"
    c.space.filters, c.space.kernels, c.space.units, c.space.max_depth = "32,64,128", "3,5", "128", 6
    c.space.branches = 0
    c.optimize = ml_collections.ConfigDict(dict(
        trials=30, seconds=0.0,  # budget: finished trials and/or seconds, whichever ends first (0: no limit)
        trial_seconds=0.0,       # a trial past this is stopped after its current step, as pruned (0: no limit)
        metric="accuracy",       # accuracy or macro_f1, on the validation split
        arch="space",  # space: its decisions joint with the hyperparameters; fixed: hparams.model; search: below
        first_arch="",  # arch=space: the first trial's architecture (a string of the space), a warm start
        search="",     # arch=search: a search config (.py[:arg] or .json; "": jaxnas search's default) run once
        # fields of that search config, on train/val first (a group: {"search": {"epochs": 3}}; on the command
        # line "search.epochs=3;space.C=4"); its architecture is then fixed
        search_overrides={},
        startup_trials=8,        # random trials before TPE
        pruner="hyperband", min_epochs=2, reduction_factor=3,
        tune="study"))  # study: Optuna; gradient: optimize.hyper on the baseline's setup; both: hyper in every trial
    # learned on meta batches of the validation split (jaxnas/hyper/reweight.py documents each method)
    c.optimize.hyper = ml_collections.ConfigDict(dict(
        method="mwnet",              # l2rw, mwnet, hypergrad; oracle (a known corruption's ceiling)
        learn="example_weights",     # hypergrad: example_weights, class_weights, weight_decay, label_smoothing,
                                     # learning_rate (a multiplier of the schedule; estimator=unrolled),
                                     # augment_noise, _translate, _rotate, _scale, _brightness, _contrast (jaxnas/hyper/augments)
        estimator="unrolled", steps=1,  # hypergrad: unrolled over `steps` batches, or implicit
        solver="neumann", iters=20, alpha=0.01,  # implicit: the inverse-Hessian-vector product
        lr=0.1, every=1,             # hypergrad: Adam's learning rate for the hyperparameters, update period
        lookahead="sgd",             # the virtual step: sgd (the official codes) or optimizer (the trainer's own)
        meta_batch=100,              # L2RW and MW-Net: 100 (cut to val's size, to a multiple of the devices)
        mwnet_hidden=100, mwnet_lr=1e-3, mwnet_weight_decay=1e-4))  # MW-Net's official values
    c.optimize.model = ml_collections.ConfigDict(dict(C=16, layers=5, stem_multiplier=3))  # genotype:... models
    # the baseline: fixed hyperparameters, the first network a user writes (trainer.py documents each)
    c.optimize.baseline = ml_collections.ConfigDict(dict(
        model=model_spec.group("cnn"), lr=1e-3, weight_decay=1e-4, batch_size=64, epochs=20, label_smoothing=0.0,
        augment="none", optimizer="adamw", momentum=0.9))
    # the searched ones: a group each (jaxnas/optimize/hpspace.py); kind "none" keeps the baseline's value
    c.optimize.hparams = ml_collections.ConfigDict(dict(
        model=hpspace.not_searched(), lr=hpspace.log_uniform(3e-4, 0.3),
        weight_decay=hpspace.log_uniform(1e-6, 1e-2), batch_size=hpspace.choice(32, 64, 128),
        epochs=hpspace.integer(5, 30), label_smoothing=hpspace.uniform(0, 0.2),
        augment=hpspace.choice("none", "crop_flip", "crop_flip_cutout"), optimizer=hpspace.choice("sgd", "adamw"),
        momentum=hpspace.uniform(0.8, 0.99, when={"optimizer": "sgd"})))
    c.compare = ml_collections.ConfigDict(dict(
        refit="train+val",  # or train: the weights of the best val epoch
        seeds=1, resamples=2000, confidence=0.95))
    c.run = run_defaults(log_every=1, checkpoint_every=0)
    return c


def tiny_optimize() -> ml_collections.ConfigDict:
    """The no-argument ``jaxnas optimize``: the embedded digits, a few minutes on 2 CPU cores."""
    c = optimize_defaults()
    c.space.filters, c.space.kernels, c.space.units, c.space.pools = "32,64", "3", "", "max"
    c.space.max_depth = 5
    c.optimize.first_arch = "conv3x3-32 > maxpool > conv3x3-64 > maxpool"  # the baseline's layout (with BN)
    c.optimize.trials = 16
    c.optimize.startup_trials = 6
    c.optimize.hparams.epochs = hpspace.integer(5, 20)
    c.optimize.hparams.augment = hpspace.choice("none", "crop", "crop_cutout")  # digits are not mirror-symmetric
    return c


# The allowed range of every numeric field, declared once beside the defaults above and checked
# whenever a config is read (``apply_overrides``, which every command and ``jaxnas.load_config``
# end with): (lowest, highest), inclusive, None for no bound; "open" ranges exclude the bounds.
RANGES = {
    "seed": (0, 2 ** 32 - 1),
    "run.devices": (0, None), "run.log_every": (1, None), "run.checkpoint_every": (0, None),
    "run.keep_checkpoints": (1, None), "run.num_processes": (0, None), "run.init_timeout": (1, None),
    "run.profile_step": (0, None), "run.profile_steps": (1, None),
    "data.cutout": (0, None),
    "search.epochs": (1, None), "search.batch_size": (1, None), "search.eval_batch_size": (1, None),
    "search.max_steps_per_epoch": (0, None), "search.eval_examples": (0, None),
    "method.pgd_steps": (1, None), "method.arch_start_epoch": (0, None),
    **{f"method.{name}.span": (0, None) for name in ("tau", "reg", "skip", "eps")},
    "train.epochs": (1, None), "train.batch_size": (1, None), "train.eval_batch_size": (1, None),
    "train.max_steps_per_epoch": (0, None),
    "model.C": (1, None), "model.layers": (1, None), "model.stem_multiplier": (1, None),
    "model.drop_path_prob": (0.0, 1.0), "model.auxiliary_weight": (0.0, None),
    "optim.lr": (0.0, None), "optim.lr_min": (0.0, None), "optim.momentum": (0.0, 1.0),
    "optim.weight_decay": (0.0, None), "optim.grad_clip": (0.0, None), "optim.arch_lr": (0.0, None),
    "optim.arch_beta1": (0.0, 1.0), "optim.arch_beta2": (0.0, 1.0), "optim.arch_weight_decay": (0.0, None),
    "discrete.budget_evals": (0, None), "discrete.budget_seconds": (0.0, None), "discrete.population": (1, None),
    "discrete.tournament": (1, None), "discrete.greedy_sweeps": (1, None), "discrete.ws_epochs": (1, None),
    "discrete.ws_eval_batches": (1, None),
    "evaluator.epochs": (1, None), "evaluator.batch_size": (1, None), "evaluator.lr": (0.0, None),
    "evaluator.weight_decay": (0.0, None), "evaluator.final_epochs": (0, None),
    "data.num_classes": (0, None), "optimize.trials": (1, None), "optimize.seconds": (0.0, None),
    "optimize.trial_seconds": (0.0, None),
    "optimize.startup_trials": (0, None), "optimize.min_epochs": (1, None), "optimize.reduction_factor": (2, None),
    "optimize.model.C": (1, None), "optimize.model.layers": (1, None), "optimize.model.stem_multiplier": (1, None),
    "optimize.baseline.lr": (0.0, None), "optimize.baseline.weight_decay": (0.0, None),
    "optimize.baseline.batch_size": (1, None), "optimize.baseline.epochs": (1, None),
    "optimize.baseline.label_smoothing": (0.0, 1.0), "optimize.baseline.momentum": (0.0, 1.0),
    "compare.seeds": (1, None), "compare.resamples": (100, None),
    "data.corrupt.factor": (1.0, None),
    "optimize.hyper.steps": (1, None), "optimize.hyper.iters": (1, None), "optimize.hyper.every": (1, None),
    "optimize.hyper.meta_batch": (1, None), "optimize.hyper.mwnet_hidden": (1, None),
    "optimize.hyper.mwnet_weight_decay": (0.0, None),
}
OPEN_RANGES = {"data.train_portion": (0.0, 1.0), "data.val_fraction": (0.0, 1.0), "data.test_fraction": (0.0, 1.0),
               "compare.confidence": (0.0, 1.0), "optimize.hyper.lr": (0.0, math.inf),
               "optimize.hyper.alpha": (0.0, math.inf), "optimize.hyper.mwnet_lr": (0.0, math.inf)}


# The allowed values of every enumerated field, declared once beside RANGES (the modules that use
# them hold the same tuples; tests/test_config.py checks that they agree). Fields whose values are
# registrations (strategies, spaces, relaxations, methods' parts, evaluators) are checked against
# their registry when the run is set up, after ``run.imports`` has registered the user's own.
CHOICES = {
    "search.order": ("first", "second", "second_fd", "single"),
    "search.dtype": ("float32", "bfloat16"),
    "search.passes": ("unrolled", "loop"),
    "run.kernels": kernels.IMPLS,
    "data.augment": ("auto", "none", "crop", "crop_flip"),
    "train.dtype": ("float32", "bfloat16"),
    "optimize.metric": ("accuracy", "macro_f1"),
    "optimize.arch": ("fixed", "space", "search"),
    "optimize.pruner": ("hyperband", "median", "none"),
    "optimize.baseline.optimizer": ("sgd", "adamw"),
    "optimize.baseline.augment": ("none", "crop", "crop_flip", "crop_cutout", "crop_flip_cutout"),
    "compare.refit": ("train+val", "train"),
    "data.corrupt.kind": ("none", "symmetric", "uniform_mix", "longtail"),
    "optimize.tune": ("study", "gradient", "both"),
    "optimize.hyper.estimator": ("unrolled", "implicit"),
    "optimize.hyper.solver": ("neumann", "cg"),
    "optimize.hyper.lookahead": ("sgd", "optimizer"),
    **{f"method.{name}.over": SPANS for name in ("tau", "reg", "skip", "eps")},
}


class Structured(NamedTuple):
    """A field whose value is a structure (a group or a list), not one number or name: ``check`` makes a
    given structure canonical or raises one error naming the field; ``parse`` reads the command line's
    short form into it. Both run when the config is read, never later."""
    parse: Callable[[str, str], Any]
    check: Callable[[Any, str], Any]


def _parse_search_overrides(text: str, where: str) -> ml_collections.ConfigDict:
    """``"search.epochs=3;space.C=4"`` -> ``{"search": {"epochs": "3"}, "space": {"C": "4"}}`` (each
    value typed by the search config's field when it is applied, as a ``--config`` override is)."""
    out: dict = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        path, eq, value = item.partition("=")
        parts = path.strip().split(".")
        if not eq or not all(parts):
            raise JaxnasError(f"{where}: {item!r} must look like field.path=value (items separated by ';')")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise JaxnasError(f"{where}: {path.strip()!r} goes inside a field that is not a group")
        node[parts[-1]] = value.strip()
    return _check_search_overrides(out, where)


def _check_search_overrides(value, where: str) -> ml_collections.ConfigDict:
    """Nested groups of a search config's fields (their names and types are checked against the search
    config when ``optimize.arch=search`` is set up, before the run directory is made)."""
    if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise JaxnasError(f"{where} must be a group of search config fields, e.g. {{'search': {{'epochs': 3}}}}, "
                          f"got {value!r}")
    for path, leaf in flatten(ml_collections.ConfigDict(dict(value))).items():
        if not isinstance(leaf, (str, int, float, bool)):
            raise JaxnasError(f"{where}.{path} must be a number, a name or true/false, got {leaf!r}")
    return ml_collections.ConfigDict(dict(value))


# Every structured field, by path ("group.*": each field of that group).
STRUCTURED = {
    "optimize.hparams.*": Structured(hpspace.parse, hpspace.check),
    "method.stages": Structured(progressive.parse, progressive.check),
    "optimize.search_overrides": Structured(_parse_search_overrides, _check_search_overrides),
    "optimize.baseline.model": Structured(model_spec.parse, model_spec.check),
}


def structured(path: str) -> Structured | None:
    """The structure of the field at ``path``, if it holds one."""
    return STRUCTURED.get(path) or STRUCTURED.get(path.rpartition(".")[0] + ".*")


def _check_structured(cfg, prefix: str = "") -> None:
    """Every structured field of ``cfg`` made canonical (a field changed inside one by an override is
    checked again here)."""
    for key in list(cfg.keys()):
        path = f"{prefix}{key}"
        if structured(path):
            cfg[key] = structured(path).check(cfg[key], path)
        elif isinstance(cfg[key], ml_collections.ConfigDict):
            _check_structured(cfg[key], path + ".")


# Float fields where an infinite value means something: none today; NaN never does.
INFINITE_OK: frozenset = frozenset()


def check_ranges(cfg) -> None:
    """Every field of the config inside what it allows, checked once when the config is read: each
    numeric field inside its declared range (``RANGES``, and the space's own ``Space.ranges``), every
    float finite (NaN and +-inf mean nothing here), each enumerated field one of its ``CHOICES``, and
    the ``method`` group of a differentiable search consistent with its length
    (``methods.check``); else one error naming the field and what it allows."""
    _check_structured(cfg)
    if "optimize" in cfg:
        hpspace.params(cfg.optimize.hparams)  # the conditions between searched hyperparameters
    ranges = dict(RANGES)
    if "space" in cfg and "name" in cfg.space:
        ranges.update({f"space.{k}": r for k, r in get_space(cfg.space.name).ranges().items()})
    for key, value in flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value) and key not in INFINITE_OK:
            raise JaxnasError(f"config field {key!r} must be a finite number, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise JaxnasError(f"config field {key!r}: unknown value {value!r}; allowed: {', '.join(CHOICES[key])}")
        if key in ranges:
            lo, hi = ranges[key]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise JaxnasError(f"config field {key!r} must be {allowed}, got {value!r}")
        elif key in OPEN_RANGES:
            lo, hi = OPEN_RANGES[key]
            if not lo < value < hi:
                raise JaxnasError(f"config field {key!r} must be in ({lo}, {hi}), got {value!r}")
    if "method" in cfg and "search" in cfg and cfg.search.get("strategy") == "darts":
        check_method(cfg.method, cfg.search.epochs)
    if "search" in cfg and cfg.search.get("dtype", "float32") != "float32":
        if cfg.search.get("strategy") != "darts":
            raise JaxnasError(f"search.dtype={cfg.search.dtype} is for the differentiable search (search.strategy="
                              f"darts); search.strategy={cfg.search.get('strategy')!r} trains in float32")
        from jaxnas.nn import DTYPES, check_dtype

        check_dtype(cfg.search.order, DTYPES[cfg.search.dtype])
    if "search" in cfg and cfg.search.get("passes", "unrolled") != "unrolled":
        if cfg.search.get("strategy") != "darts":
            raise JaxnasError(f"search.passes={cfg.search.passes} is for the differentiable search (search.strategy="
                              f"darts), not search.strategy={cfg.search.get('strategy')!r}")
        from jaxnas.nn import check_passes

        check_passes(cfg.search.passes, cfg.search.order, cfg.method.perturbation != "none")
    if cfg.get("run", {}).get("profile_step", 0) and ("optimize" in cfg or cfg.get("search", {}).get("strategy",
                                                                                                  "darts") != "darts"):
        what = "jaxnas optimize" if "optimize" in cfg else f"search.strategy={cfg.search.strategy!r}"
        raise JaxnasError(f"run.profile_step={cfg.run.profile_step}: a profiler trace is for the differentiable search "
                          f"(search.strategy=darts) and jaxnas train, not {what}")
    if "optimize" in cfg and (cfg.run.num_processes > 1 or cfg.run.coordinator):
        raise JaxnasError(f"jaxnas optimize runs in one process (each fit is split over that process's devices, "
                          f"run.devices); run.num_processes={cfg.run.num_processes} and run.coordinator="
                          f"{cfg.run.coordinator!r} are for jaxnas search and train")


def check_method(m, epochs: int) -> None:
    """The ``method`` group of a differentiable search of ``epochs`` epochs (``methods.check``)."""
    from jaxnas.methods import registry

    registry.check(m, epochs)


DEFAULTS = {"search": search_defaults, "train": train_defaults, "optimize": optimize_defaults}
TINY = {"search": tiny_search, "train": tiny_train, "optimize": tiny_optimize}


def _check_against(cfg, schema, prefix: str = "") -> None:
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in schema:
            raise JaxnasError(f"unknown config field {path!r}; allowed: {', '.join(sorted(schema.keys()))}")
        value, ref = cfg[key], schema[key]
        if structured(path):
            structured(path).check(value, path)
        elif isinstance(ref, ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise JaxnasError(f"config field {path!r} must be a group of fields, got {value!r}")
            _check_against(value, ref, path + ".")
        elif not _type_ok(value, ref):
            raise JaxnasError(f"config field {path!r} must be {type(ref).__name__}, got {value!r} "
                              f"({type(value).__name__})")


def _type_ok(value, ref) -> bool:
    if isinstance(ref, bool):
        return isinstance(value, bool)
    if isinstance(ref, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(ref, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(ref, str):
        return isinstance(value, str)
    return isinstance(value, type(ref))


def _fill(cfg: ml_collections.ConfigDict, kind: str) -> ml_collections.ConfigDict:
    """Fields missing from a config take the defaults; floats given as ints become floats."""
    full = DEFAULTS[kind]()
    if "space" in cfg:
        full.space = space_group(cfg.space.name)

    def merge(dst, src, prefix):
        for key in src.keys():
            if structured(prefix + key):
                dst[key] = structured(prefix + key).check(src[key], prefix + key)
            elif isinstance(dst[key], ml_collections.ConfigDict):
                merge(dst[key], src[key], f"{prefix}{key}.")
            else:
                dst[key] = float(src[key]) if isinstance(dst[key], float) else src[key]

    merge(full, cfg, "")
    return full


def _load_py(path: str, arg: str | None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("jaxnas_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise JaxnasError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


def from_dict(raw: dict, kind: str) -> ml_collections.ConfigDict:
    """A config read as data (a run directory's config.json): checked field by field, then completed."""
    if not isinstance(raw, dict):
        raise JaxnasError(f"a config must be a JSON object of field groups, got {type(raw).__name__}")
    cfg = _with_space(_from_data(raw, "run config"))
    _check_against(cfg, _schema(cfg, kind))
    return _fill(cfg, kind)


def _from_data(raw: dict, where: str) -> ml_collections.ConfigDict:
    """A ConfigDict of JSON data whose every key is a field name (a string without dots)."""
    def check(node, path):
        for key, value in node.items():
            if not isinstance(key, str) or not key or "." in key:
                raise JaxnasError(f"{where}: {'.'.join(path + [key])!r} is not a config field name")
            if isinstance(value, dict):
                check(value, path + [key])

    check(raw, [])
    return ml_collections.ConfigDict(raw)


def _schema(cfg, kind: str) -> ml_collections.ConfigDict:
    schema = DEFAULTS[kind]()
    if "space" in cfg:
        schema.space = space_group(cfg.space.name)
    return schema


def check_kind(kind) -> None:
    if kind not in DEFAULTS:
        raise JaxnasError(f"unknown config kind {kind!r}; allowed: {', '.join(DEFAULTS)}")


def check_config(cfg, kind: str) -> None:
    """A config handed to a workflow in Python: a ConfigDict of that kind (the group named like the kind,
    ``search``, ``train`` or ``optimize``), every field known, typed and inside what it allows
    (``check_ranges``): the checks the CLI makes when it reads one. Else one ``JaxnasError``."""
    check_kind(kind)
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise JaxnasError(f"a {kind} config must be an ml_collections.ConfigDict, e.g. jaxnas.load_config(kind="
                          f"{kind!r}), got {type(cfg).__name__}")
    actual = next((k for k in DEFAULTS if k in cfg), None)
    if actual != kind:
        raise JaxnasError(f"this is {'a ' + actual if actual else 'not a jaxnas'} config, not a {kind} config; "
                          f"build one with jaxnas.load_config(..., kind={kind!r})")
    _check_against(cfg, _schema(cfg, kind))
    check_ranges(cfg)


def load(spec: str | None, kind: str = "search") -> ml_collections.ConfigDict:
    """``None`` (the tiny default), ``path.py[:arg]`` or ``path.json``; validated and completed."""
    check_kind(kind)
    if spec is not None and not isinstance(spec, str):
        raise JaxnasError(f"a config is named by a path (configs/<name>.py[:arg] or a .json file) or None, "
                          f"got {type(spec).__name__}")
    if spec is None:
        cfg = TINY[kind]()
    else:
        path, _, arg = spec.partition(":")
        if not os.path.exists(path):
            raise JaxnasError(f"config file {path!r} does not exist")
        if path.endswith(".json"):
            cfg = _from_data(rundir.read_json(path, "config file"), f"config file {path!r}")
        elif path.endswith(".py"):
            cfg = _load_py(path, arg or None)
            run = cfg.get("run") if isinstance(cfg, (ml_collections.ConfigDict, dict)) else None
            if isinstance(run, (ml_collections.ConfigDict, dict)) and isinstance(run.get("imports"), str):
                import_extensions(run["imports"])  # a Python config is code the user runs; its imports too
        else:
            raise JaxnasError(f"config file {path!r} must end in .py or .json")
    cfg = _with_space(cfg)
    _check_against(cfg, _schema(cfg, kind))
    return _fill(cfg, kind)


def _parse_value(text: str, ref, path: str):
    if isinstance(ref, (tuple, list)):  # a list inside a structured field: comma-separated numbers or names
        return tuple(hpspace.scalar(v.strip()) for v in text.split(",") if v.strip())
    if isinstance(ref, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise JaxnasError(f"config field {path!r} must be true or false, got {text!r}")
    if isinstance(ref, int):
        try:
            return int(text)
        except ValueError:
            raise JaxnasError(f"config field {path!r} must be an integer, got {text!r}") from None
    if isinstance(ref, float):
        try:
            return float(text)
        except ValueError:
            raise JaxnasError(f"config field {path!r} must be a number, got {text!r}") from None
    return text


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply ``--config.a.b=value`` (or ``a.b=value``) overrides, typed by the field they replace.
    ``space.name`` goes first, so that the other ``space.*`` overrides meet that space's fields."""
    pairs = []
    for item in overrides:
        text = item[len("--config."):] if item.startswith("--config.") else item
        if "=" not in text:
            raise JaxnasError(f"override {item!r} must look like --config.field=value")
        pairs.append(tuple(text.split("=", 1)))
    return set_fields(cfg, pairs)


def set_fields(cfg: ml_collections.ConfigDict, values) -> ml_collections.ConfigDict:
    """Set fields by path: ``values`` is (path, value) pairs, or a group of groups (as
    ``optimize.search_overrides`` holds). A text value is read as the field's type (a structured
    field's short form is parsed into its structure); any other value must already have the field's
    type. ``space.name`` goes first; the whole config is checked after (``check_ranges``)."""
    if isinstance(values, (dict, ml_collections.ConfigDict)):
        values = list(flatten(values).items())
    values = sorted(values, key=lambda pv: pv[0] != "space.name")
    for path, value in values:
        node, parts = cfg, path.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise JaxnasError(f"unknown config field {'.'.join(parts[:i + 1])!r}; allowed: {', '.join(allowed)}")
            if i < len(parts) - 1:
                node = node[part]
        ref = node[parts[-1]]
        if structured(path):  # its short form, parsed once into the structure, or the structure itself
            node[parts[-1]] = (structured(path).parse if isinstance(value, str) else structured(path).check)(value,
                                                                                                           path)
        elif isinstance(ref, ml_collections.ConfigDict):
            raise JaxnasError(f"config field {path!r} is a group; override one of its fields: "
                              f"{', '.join(sorted(ref.keys()))}")
        elif isinstance(value, str):
            node[parts[-1]] = _parse_value(value, ref, path)
        elif _type_ok(value, ref):
            node[parts[-1]] = float(value) if isinstance(ref, float) else value
        else:
            raise JaxnasError(f"config field {path!r} must be {type(ref).__name__}, got {value!r} "
                              f"({type(value).__name__})")
        if path == "space.name":
            cfg = _with_space(cfg)
    check_ranges(cfg)
    return cfg


def check_run_imports(saved: str, given: str, where: str, what: str = "run") -> None:
    """Reading data never imports what it names: a run directory (``what="run"``) or a ``.json``
    config (``what="config file"``) that names ``run.imports`` needs the same modules named on the
    command line (``--config.run.imports=...``), which the user chose to run."""
    if saved and saved != given:
        made = "was made with" if what == "run" else "names"
        raise JaxnasError(f"{what} {where!r} {made} run.imports={saved!r}; jaxnas never imports what a "
                          f"{'run directory' if what == 'run' else '.json config'} names: pass "
                          f"--config.run.imports={saved} to import it")


def import_extensions(modules: str) -> None:
    """Import the comma-separated modules of ``run.imports`` (your own ops, spaces, strategies) so that
    their registrations are visible to the CLI. Like a .py config, this runs code you name."""
    for name in (m.strip() for m in modules.split(",") if m.strip()):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise JaxnasError(f"run.imports: cannot import {name!r} ({e}); is it on PYTHONPATH?") from None


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


# Fields that may change when a run resumes: they affect logging, checkpointing and
# process placement, never the numbers computed.
RESUME_FREE = ("run.workdir", "run.name", "run.log_every", "run.compile_cache", "run.checkpoint_every",
               "run.profile_step", "run.profile_steps",
               "run.keep_checkpoints", "run.tensorboard", "run.progress", "run.coordinator",
               "run.num_processes", "run.process_id", "run.init_timeout",
               "optimize.trials", "optimize.seconds")  # an optimize run's budget may grow on resume


def flatten(cfg, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint(cfg) -> dict:
    """The fields that decide a run's numbers (all but ``RESUME_FREE``), as saved in its checkpoints."""
    return {k: json.loads(json.dumps(v)) for k, v in flatten(cfg).items() if k not in RESUME_FREE}  # as JSON holds it


def for_resume(run_dir: str, spec: str | None, overrides: list[str], kind: str) -> ml_collections.ConfigDict:
    """The config of the run in ``run_dir``; ``spec``/``overrides`` may only restate it (or change RESUME_FREE)."""
    path = os.path.join(run_dir, "config.json")
    meta = os.path.join(run_dir, "meta.json")
    if not os.path.isdir(run_dir) or not os.path.exists(path) or not os.path.exists(meta):
        raise JaxnasError(f"--resume {run_dir!r}: not a jaxnas run directory (config.json and meta.json expected)")
    saved_kind = rundir.read_json(meta, "run file").get("kind")
    if saved_kind != kind:
        raise JaxnasError(f"--resume {run_dir!r} is a {saved_kind} run, not a {kind} run")
    saved = from_dict(rundir.read_json(path, "run config"), kind)
    cfg = apply_overrides(load(spec, kind) if spec else from_dict(saved.to_dict(), kind), overrides)
    a, b = flatten(saved), flatten(cfg)
    diff = [k for k in sorted(set(a) | set(b)) if k not in RESUME_FREE and a.get(k) != b.get(k)]
    if diff:
        shown = "; ".join(f"{k}: run has {a.get(k)!r}, command line gives {b.get(k)!r}" for k in diff[:4])
        raise JaxnasError(f"--resume {run_dir!r}: the config disagrees with the run's ({shown}"
                          f"{'; ...' if len(diff) > 4 else ''}); only {', '.join(RESUME_FREE)} may change")
    return cfg
