"""``jaxnas optimize``: split, baseline, automatic optimization, and one test comparison, top to bottom.

1. Split the dataset (``split.py``), recorded in ``split.json``.
2. Train the baseline on train with its fixed hyperparameters; its validation score is recorded.
3. Optimize hyperparameters and architecture on train, scored on val (``study.py``).
4. Retrain both the baseline and the best trial's configuration with the same trainer, on train+val
   (``compare.refit = "train+val"``, epochs fixed) or on train with the weights of the best val epoch
   (``"train"``), for each of ``compare.seeds`` seeds; predict the test split once per model and seed;
   compare (``stats.py``: the mean paired difference over seeds, its interval from a bootstrap over
   seeds and test examples, McNemar's test per seed) and report (``report.py``).

The test split is read through ``TestSplit``, which refuses a second prediction for the same model
and seed and counts every access; the counts go into the report.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import genotype as genotype_lib
from jaxnas import driver, parallel, rundir
from jaxnas import metrics as metrics_lib
from jaxnas.errors import JaxnasError
from jaxnas.optimize import report as report_lib
from jaxnas.optimize import split as split_lib
from jaxnas.hyper import reweight
from jaxnas.hyper.methods import METHODS
from jaxnas.hyper.methods.registry import needs_label_noise
from jaxnas.optimize import corrupt, model_spec, models, stats, study, trainer
from jaxnas.search import get_strategy
from jaxnas.search.check import check_search
from jaxnas.spaces import discrete_space

REFITS = config_lib.CHOICES["compare.refit"]
TUNES = ("study", "gradient", "both")  # optimize.tune


class TestSplit:
    """The held-out test split. ``predict(name, fitted)`` is the only way to its images, once per name."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self._x, self.labels = x, y
        self.accesses: collections.Counter = collections.Counter()

    def __len__(self) -> int:
        return len(self.labels)

    def predict(self, name: str, fitted: trainer.Fitted) -> tuple[np.ndarray, float]:
        """Test logits of ``fitted`` and the inference seconds per example (compiled beforehand on zeros)."""
        if self.accesses[name]:
            raise RuntimeError(f"the test split was already used for {name!r}")
        self.accesses[name] += 1
        fitted.warm_up(self._x.shape[1:])
        t0 = time.perf_counter()
        logits = fitted.logits(self._x)
        return logits, (time.perf_counter() - t0) / max(len(self._x), 1)


def baseline_hparams(cfg) -> dict:
    b = cfg.optimize.baseline.to_dict()
    hp = {k: b[k] for k in trainer.HPARAMS}
    hp["model"] = str(model_spec.of(b["model"]))  # the short form: hyperparameters are recorded as JSON
    trainer.check_hparams(hp, "optimize.baseline")
    return hp


def test_metrics(y: np.ndarray, logits: np.ndarray, num_classes: int) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix, and top-5 when K > 5."""
    preds = logits.argmax(-1)
    m = metrics_lib.from_confusion(metrics_lib.confusion_matrix(y, preds, num_classes))
    if num_classes > 5:
        m["top5"] = float((np.argsort(-logits, -1)[:, :5] == y[:, None]).any(-1).mean())
    return m


def _final(cfg, name: str, hp: dict, pool, split, test: TestSplit, seed: int, run_dir: str | None, log,
           hyper=None, clean=None) -> dict:
    """Retrain ``hp`` (with ``hyper``: learning example weights or hyperparameters, ``optimize.hyper``)
    as ``compare.refit`` says, predict the test split once; cached in ``final/`` so a resumed run never
    predicts the test split again."""
    what = dict(hp, hyper=hyper.to_dict()) if hyper is not None else hp
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]  # a resumed run's new best
    cache = os.path.join(run_dir, "final", f"{name}-seed{seed}-{key}.json") if run_dir else None
    if cache and os.path.exists(cache):
        return rundir.read_json(cache, "final result")
    refit = cfg.compare.refit
    if refit == "train+val":
        idx, val, keep_best = np.sort(np.concatenate([split.train, split.val])), None, False
    else:
        idx, val, keep_best = split.train, split.val, True
    ckpt = cache[:-len(".json")] + ".ckpt" if cache else None  # a killed fit goes on from its last epoch
    fitted = trainer.fit(model_spec.of(hp["model"]), hp, pool.x_train, pool.y_train, idx, pool.num_classes, seed, cfg,
                         val_idx=val,
                         keep_best=keep_best, metric=cfg.optimize.metric, hyper=hyper, clean=clean, checkpoint=ckpt)
    logits, per_example = test.predict(f"{name}-seed{seed}-{key}", fitted)
    m = test_metrics(test.labels, logits, pool.num_classes)
    out = {"model": name, "seed": seed, "hparams": hp, "refit": refit, "epochs_used": fitted.best_epoch,
           "num_params": fitted.num_params, "train_seconds": round(fitted.seconds, 3),
           "inference_ms_per_example": per_example * 1e3, "test": m,
           "predictions": logits.argmax(-1).tolist(), "history": fitted.history}
    if hyper is not None:
        out["hyper"] = {"method": hyper.method, **({"learn": hyper.learn} if hyper.method == "hypergrad" else {})}
        if run_dir:  # the trajectories (jaxnas plot draws them from report.json)
            _log_trajectories(run_dir, f"hyper-{name}-seed{seed}", hyper.method, fitted.history)
    log(f"{name} (seed {seed}): test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
        f"({fitted.num_params} params, trained {fitted.seconds:.1f}s on {refit})")
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        rundir.write_json(cache, out)
        shutil.rmtree(ckpt, ignore_errors=True)
    return out


def _log_trajectories(run_dir: str, stem: str, method: str, history: list[dict]) -> None:
    """``<stem>.jsonl`` (one line per epoch) and TensorBoard scalars under ``tb/<stem>``: the example
    weights' summary, their AUROC against correct labels, the learned hyperparameters."""
    from tensorboardX import SummaryWriter

    rundir.write_text(os.path.join(run_dir, f"{stem}.jsonl"), "".join(
        rundir.json_line({"method": method, **r}) for r in history))
    tb = SummaryWriter(os.path.join(run_dir, "tb", stem), purge_step=1)
    for r in history:
        scalars = {f"weights/{k}": v for k, v in r.get("weights", {}).items() if isinstance(v, float)}
        for k, v in r.get("hyper", {}).items():
            if isinstance(v, list):
                scalars.update({f"hyper/{k}/{i}": x for i, x in enumerate(v)})
            else:
                scalars[f"hyper/{k}"] = v
        scalars["train_loss"] = r["train_loss"]
        if "val" in r:
            scalars["val"] = r["val"]
        for k, v in scalars.items():
            tb.add_scalar(k, v, r["epoch"])
    tb.close()


def search_config(cfg, n_train: int, n_total: int, data_path: str = "train+val arrays"):
    """The search config of ``optimize.search`` (+ ``search_overrides``) on the train/val data: its
    search-train split is exactly our train split, its search-val our val split, and no test."""
    o = cfg.optimize
    try:
        scfg = config_lib.set_fields(config_lib.load(o.search or None, "search"), o.search_overrides)
    except JaxnasError as e:
        raise JaxnasError(f"optimize.search={o.search or '(jaxnas search default)'!r} with optimize.search_overrides"
                          f": {e}") from None
    scfg.data.name, scfg.data.data_dir = data_path, ""
    scfg.data.train_portion = (n_train + 0.5) / n_total  # floor(portion * n) = n_train
    scfg.discrete.final_test = False
    scfg.seed = cfg.seed
    return scfg


def search_dataset(pool, split) -> data_lib.Dataset:
    """The data of ``optimize.arch=search``: train then val as the search's training split (cut back
    into the two by ``search_config``'s ``train_portion``), val again as its "test", never ours."""
    x = np.concatenate([pool.x_train[split.train], pool.x_train[split.val]])
    y = np.concatenate([pool.y_train[split.train], pool.y_train[split.val]])
    return data_lib.Dataset("train+val arrays", x, y, pool.x_train[split.val], pool.y_train[split.val],
                            pool.num_classes)


def search_data(plan: "Plan") -> data_lib.SearchData:
    """``search_dataset`` handed to the search in memory, its search-train rows exactly our train split
    and its search-val rows our val split."""
    ds = search_dataset(plan.pool, plan.split)
    data = data_lib.search_data(plan.search.data, ds)
    n_train = len(plan.split.train)
    if len(data.train_idx) != n_train:
        raise JaxnasError(f"internal: the search split has {len(data.train_idx)} training rows, not {n_train}")
    return data


def search_architecture(plan: "Plan", run_dir: str | None, log) -> str:
    """Run the search of ``optimize.search`` on train (weights) and val (architecture, selection), never
    on test; return the model spec of what it found. Its run directory is ``<run>/arch_search``; a
    search that did not finish is run again from its start."""
    done = os.path.join(run_dir, "arch_search.json") if run_dir else None
    if done and os.path.exists(done):
        return rundir.read_json(done, "architecture search result")["model"]
    where = run_dir or tempfile.mkdtemp(prefix="jaxnas-arch-search-")
    scfg = plan.search
    sub = os.path.join(where, "arch_search")
    shutil.rmtree(sub, ignore_errors=True)
    scfg.run.workdir, scfg.run.name = where, "arch_search"
    log(f"architecture search: {scfg.search.strategy} on space {scfg.space.name} ({scfg.search.epochs} epochs) on "
        f"train/val; logs in {sub}")
    found = get_strategy(scfg.search.strategy)(scfg, rundir.create(scfg, "search") if run_dir else None,
                                               log=log, resume=False, data=search_data(plan))
    arch = found["genotype"]
    if hasattr(arch, "normal") and scfg.space.name == "darts":
        path = os.path.join(where, "arch_search", "genotype.json")
        if not run_dir:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            genotype_lib.save(arch, path)
        model = f"genotype:{path}"
    else:
        model = f"{scfg.space.name}:{discrete_space(scfg.space, plan.pool.image_shape).encode(arch)}"
    log(f"architecture search found {model}")
    if done:
        rundir.write_json(done, {"model": model, "strategy": scfg.search.strategy, "space": scfg.space.name})
    return model


@dataclasses.dataclass
class Plan:
    """An optimize run, set up and checked (``setup``) before anything is trained or written: the data
    and its split, the baseline's hyperparameters, the searched ones, the architecture space or the
    search config, and the first trial's parameters."""

    cfg: object
    pool: data_lib.Dataset
    split: split_lib.Split
    baseline: dict
    params: list
    space: object = None   # the DiscreteSpace of optimize.arch=space
    search: object = None  # the search config of optimize.arch=search
    first: dict = dataclasses.field(default_factory=dict)
    clean: np.ndarray | None = None  # data.corrupt: which labels of the pool are still correct
    corruption: dict | None = None   # data.corrupt: what was done, for split.json
    hyper: object = None   # optimize.hyper, when optimize.tune learns by hypergradients


def _check_model(spec: str, pool, cfg, where: str) -> None:
    """``spec`` builds for these images and classes (abstractly: no weights are made)."""
    from flax import nnx

    try:
        nnx.eval_shape(lambda: models.build(spec, pool.image_shape, pool.num_classes, nnx.Rngs(0), cfg))
    except JaxnasError as e:
        raise JaxnasError(f"{where}={spec!r}: {e}") from None


def _check_devices(cfg, base_hp: dict, params: list, n_train: int) -> None:
    """``run.devices`` exist, and every batch size a fit can use splits evenly over them (a batch
    larger than the training split is cut to it, rounded down to a multiple of the device count)."""
    n = parallel.make_mesh(cfg.run.devices).devices.size
    if n == 1:
        return
    sizes = [("optimize.baseline.batch_size", base_hp["batch_size"])]
    for p in params:
        if p.name == "batch_size" and (cfg.optimize.tune != "gradient"):
            if p.kind != "choice":
                raise JaxnasError(f"optimize.hparams.batch_size={p.kind}:... on {n} devices: a drawn batch size must "
                                  f"split evenly over them; use choice:<multiples of {n}>")
            sizes += [("optimize.hparams.batch_size", v) for v in p.choices]
    for where, size in sizes:
        if int(size) <= n_train and int(size) % n:
            raise JaxnasError(f"{where}={size} is not divisible by the {n} devices (run.devices="
                              f"{cfg.run.devices}); use a multiple of {n}, or set run.devices")


def setup(cfg, pool: data_lib.Dataset | None = None) -> Plan:
    """Every check an optimize run makes, before it trains anything or writes its run directory (what
    ``--check`` runs): the config's fields, the data (``pool``, else ``cfg.data``) and its split, the
    baseline's hyperparameters and model, each searched hyperparameter and model, the space and
    ``optimize.first_arch``, or the search of ``optimize.arch=search`` with its overrides."""
    config_lib.check_config(cfg, "optimize")
    d, o = cfg.data, cfg.optimize
    corrupt.check(d.corrupt)
    if o.tune != "study":
        reweight.check(o.hyper)
        if METHODS[o.hyper.method].needs_clean and d.corrupt.kind not in ("symmetric", "uniform_mix"):
            raise needs_label_noise(o.hyper.method, repr(d.corrupt.kind))
        if cfg.compare.refit != "train":
            raise JaxnasError(f"optimize.tune={o.tune} learns on meta batches of the validation split, so it "
                              f"cannot be refit on train+val: set compare.refit=train (both models then stop "
                              f"early on val)")
    pool = pool or split_lib.load_pool(d.name, d.data_dir, d.num_classes)
    split = split_lib.stratified_split(pool, d.val_fraction, d.test_fraction, cfg.seed)
    clean = record = None
    if d.corrupt.kind != "none":
        c = corrupt.apply(d.corrupt, pool.y_train, split.train, split.val, pool.num_classes, cfg.seed)
        pool = dataclasses.replace(pool, y_train=c.y)
        split = dataclasses.replace(split, train=c.train)
        clean, record = c.clean, c.record
    base_hp = baseline_hparams(cfg)
    _check_model(base_hp["model"], pool, cfg, "optimize.baseline.model")
    params = study.check(cfg.optimize)
    for p in params:
        if p.name == "model":
            for spec in p.choices:
                _check_model(str(spec), pool, cfg, "optimize.hparams.model")
    _check_devices(cfg, base_hp, params, len(split.train))
    plan = Plan(cfg, pool, split, base_hp, params, clean=clean, corruption=record,
                hyper=o.hyper if o.tune != "study" else None)
    if o.arch == "space":
        plan.space = discrete_space(cfg.space, pool.image_shape)  # optimize.first_arch: used with it only
    if o.arch != "search" and (o.search or o.search_overrides):
        raise JaxnasError(f"optimize.search and optimize.search_overrides are for optimize.arch=search, and "
                          f"optimize.arch={o.arch}: set optimize.arch=search or leave them empty")
    if o.arch == "search":
        ds = search_dataset(pool, split)
        plan.search = search_config(cfg, len(split.train), len(ds.y_train), ds.name)
        try:
            check_search(plan.search, dataset=ds)
        except JaxnasError as e:
            raise JaxnasError(f"optimize.arch=search: {e}") from None
        if not (plan.search.search.strategy == "darts" and plan.search.space.name == "darts"):
            discrete_space(plan.search.space, pool.image_shape)  # what it finds is trained as <space>:<arch>
    plan.first = study.first_params(params, base_hp, plan.space, o.first_arch)
    return plan


def run(cfg, run_dir: str | None = None, log=print, resume: bool = False, pool: data_lib.Dataset | None = None,
        plan: Plan | None = None) -> dict:
    """The whole workflow (see the module docstring) of ``plan`` (else ``setup(cfg, pool)``); returns the
    report (also ``report.json``)."""
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    plan = plan or setup(cfg, pool)
    with rundir.locked(run_dir), rundir.disk_errors(run_dir), \
            driver.raise_on_signal(run_dir, "every finished trial is kept"):
        return _run(plan, run_dir, log, resume)


def _run(plan: Plan, run_dir: str | None, log, resume: bool) -> dict:
    cfg, pool, split = plan.cfg, plan.pool, plan.split
    d = cfg.data
    t_start = time.time()

    # 1. the split
    if run_dir:
        path = os.path.join(run_dir, "split.json")
        split_lib.check_saved(split, pool, path)
        split_lib.save(split, pool, path, (d.val_fraction, d.test_fraction), plan.corruption)
    xt, yt = (pool.x_test, pool.y_test) if split.test_source == "dataset" else (pool.x_train, pool.y_train)
    test = TestSplit(xt[split.test], yt[split.test])
    log(f"optimize: {pool.name}, {pool.num_classes} classes, images {pool.image_shape} | split train/val/test "
        f"{len(split.train)}/{len(split.val)}/{len(split.test)} (stratified, seed {cfg.seed}; test "
        f"{'the dataset' + chr(39) + 's own' if split.test_source == 'dataset' else 'drawn'})")

    # 2. the baseline, scored on val
    base_hp = plan.baseline
    cache = os.path.join(run_dir, "baseline_val.json") if run_dir else None
    if cache and os.path.exists(cache):
        base_val = rundir.read_json(cache, "baseline result")
        if base_val.get("hparams") != base_hp:
            changed = sorted(k for k in set(base_hp) | set(base_val.get("hparams") or {})
                             if (base_val.get("hparams") or {}).get(k) != base_hp.get(k))
            raise JaxnasError(f"{cache!r} holds a baseline trained with other hyperparameters than the run's config "
                              f"(optimize.baseline.{', '.join(changed)}); the config was edited since the run "
                              f"started: restore it, or start a new run")
    else:
        ckpt = os.path.join(run_dir, "baseline.ckpt") if run_dir else None  # a killed fit goes on from there
        fitted = trainer.fit(model_spec.of(base_hp["model"]), base_hp, pool.x_train, pool.y_train, split.train,
                             pool.num_classes, cfg.seed, cfg, val_idx=split.val, keep_best=True,
                             metric=cfg.optimize.metric, checkpoint=ckpt)
        base_val = {"hparams": base_hp, "val": fitted.history[-1]["val"],
                    "best_val": max(h["val"] for h in fitted.history), "best_epoch": fitted.best_epoch,
                    "val_curve": [h["val"] for h in fitted.history], "seconds": round(fitted.seconds, 3),
                    "num_params": fitted.num_params}
        if cache:
            rundir.write_json(cache, base_val)
            shutil.rmtree(ckpt, ignore_errors=True)
    log(f"baseline {base_hp['model']}: val {cfg.optimize.metric} {base_val['val']:.4f} after {base_hp['epochs']} "
        f"epochs (best {base_val['best_val']:.4f} at epoch {base_val['best_epoch']})")

    # 3. the optimization, on val only: a study (optimize.tune = study, both) or none (gradient)
    tune, hyper = cfg.optimize.tune, plan.hyper
    if tune == "gradient":
        result = {"best": {"trial": None, "value": None, "params": base_hp}, "records": [], "seconds": 0.0}
        log(f"optimize.tune=gradient: the baseline's setup trained with {hyper.method} on meta batches of val")
    else:
        found = search_architecture(plan, run_dir, log) if cfg.optimize.arch == "search" else ""
        result = study.run_study(cfg, pool.x_train, pool.y_train, split.train, split.val, pool.num_classes, base_hp, run_dir,
                                 log, resume, model=found, params=plan.params, space=plan.space, first=plan.first,
                                 hyper=hyper, clean=plan.clean)
        best = result["best"]
        log(f"best trial {best['trial']}: val {cfg.optimize.metric} {best['value']:.4f} | {best['params']}")

    # 4. retrain both, test each once per seed, compare
    finals = {"baseline": [], "optimized": []}
    for s in range(cfg.compare.seeds):
        for name, hp in (("baseline", base_hp), ("optimized", result["best"]["params"])):
            finals[name].append(_final(cfg, name, hp, pool, split, test, cfg.seed + 1000 * (s + 1), run_dir, log,
                                       hyper=hyper if name == "optimized" else None, clean=plan.clean))
    if tune == "gradient":  # the optimized model's validation score: its final fit's, as the baseline's
        result["best"]["value"] = max(h["val"] for h in finals["optimized"][0]["history"])
    y = test.labels
    pa, pb = (np.asarray([f["predictions"] for f in finals[n]]) for n in ("baseline", "optimized"))  # (seeds, n)
    c = cfg.compare
    diff = {m: stats.paired_bootstrap(y, pa, pb, pool.num_classes, m, c.resamples, c.confidence, cfg.seed)
            for m in ("accuracy", "macro_f1")}
    diff["mcnemar_per_seed"] = [stats.mcnemar(y, a, b) for a, b in zip(pa, pb)]
    diff["mcnemar"] = diff["mcnemar_per_seed"][0]
    final_dir = os.path.join(run_dir, "final") if run_dir else ""
    reads = sorted(f[:-5] for f in os.listdir(final_dir)) if final_dir else sorted(test.accesses)
    report = report_lib.build(cfg, pool, split, base_val, result, finals, diff, dict(test.accesses), reads,
                              time.time() - t_start, plan.corruption)
    if run_dir:
        report_lib.write(report, run_dir)
    log(report_lib.table(report))
    return report
