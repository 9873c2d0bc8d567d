"""``jaxnas optimize``: split, baseline, automatic optimization, and one test comparison, top to bottom.

1. Split the dataset (``split.py``), recorded in ``split.json``.
2. Train the baseline on train with its fixed hyperparameters; its validation score is recorded.
3. Optimize hyperparameters and architecture on train, scored on val (``study.py``).
4. Retrain both the baseline and the best trial's configuration with the same trainer, on train+val
   (``compare.refit = "train+val"``, epochs fixed) or on train with the weights of the best val epoch
   (``"train"``), for each of ``compare.seeds`` seeds; predict the test split once per model and seed;
   compare (``stats.py``) and report (``report.py``).

The test split is read through ``TestSplit``, which refuses a second prediction for the same model
and seed and counts every access; the counts go into the report.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from jaxnas import config as config_lib
from jaxnas import genotype as genotype_lib
from jaxnas import kernels, rundir
from jaxnas import metrics as metrics_lib
from jaxnas.errors import JaxnasError
from jaxnas.optimize import report as report_lib
from jaxnas.optimize import split as split_lib
from jaxnas.optimize import stats, study, trainer
from jaxnas.search import get_strategy
from jaxnas.spaces import discrete_space

REFITS = ("train+val", "train")


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
    hp["model"] = b["model"]
    trainer.check_hparams(hp, "optimize.baseline")
    return hp


def test_metrics(y: np.ndarray, logits: np.ndarray, num_classes: int) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix, and top-5 when K > 5."""
    preds = logits.argmax(-1)
    m = metrics_lib.from_confusion(metrics_lib.confusion_matrix(y, preds, num_classes))
    if num_classes > 5:
        m["top5"] = float((np.argsort(-logits, -1)[:, :5] == y[:, None]).any(-1).mean())
    return m


def _final(cfg, name: str, hp: dict, pool, split, test: TestSplit, seed: int, run_dir: str | None, log) -> dict:
    """Retrain ``hp`` as ``compare.refit`` says, predict the test split once; cached in ``final/`` so a
    resumed run never predicts the test split again."""
    key = hashlib.sha256(json.dumps(hp, sort_keys=True).encode()).hexdigest()[:8]  # a resumed run's new best
    cache = os.path.join(run_dir, "final", f"{name}-seed{seed}-{key}.json") if run_dir else None
    if cache and os.path.exists(cache):
        return rundir.read_json(cache, "final result")
    refit = cfg.compare.refit
    if refit == "train+val":
        idx, val, keep_best = np.sort(np.concatenate([split.train, split.val])), None, False
    else:
        idx, val, keep_best = split.train, split.val, True
    fitted = trainer.fit(hp["model"], hp, pool.x, pool.y, idx, pool.num_classes, seed, cfg, val_idx=val,
                         keep_best=keep_best, metric=cfg.optimize.metric)
    logits, per_example = test.predict(f"{name}-seed{seed}-{key}", fitted)
    m = test_metrics(test.labels, logits, pool.num_classes)
    out = {"model": name, "seed": seed, "hparams": hp, "refit": refit, "epochs_used": fitted.best_epoch,
           "num_params": fitted.num_params, "train_seconds": round(fitted.seconds, 3),
           "inference_ms_per_example": per_example * 1e3, "test": m,
           "predictions": logits.argmax(-1).tolist()}
    log(f"{name} (seed {seed}): test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
        f"({fitted.num_params} params, trained {fitted.seconds:.1f}s on {refit})")
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        rundir.write_json(cache, out)
    return out


def search_config(cfg, data_path: str, n_train: int, n_total: int):
    """The search config of ``optimize.search`` (+ ``search_overrides``) on the train/val data file: its
    search-train split is exactly our train split, its search-val our val split, and no test."""
    o = cfg.optimize
    overrides = [f"--config.{item.strip()}" for item in o.search_overrides.split(";") if item.strip()]
    scfg = config_lib.apply_overrides(config_lib.load(o.search or None, "search"), overrides)
    scfg.data.name, scfg.data.data_dir = data_path, ""
    scfg.data.train_portion = (n_train + 0.5) / n_total  # floor(portion * n) = n_train
    scfg.discrete.final_test = False
    scfg.seed = cfg.seed
    return scfg


def search_architecture(cfg, pool, split, run_dir: str | None, log) -> str:
    """Run the search of ``optimize.search`` on train (weights) and val (architecture, selection), never
    on test; return the model spec of what it found. Its run directory is ``<run>/arch_search``; a
    search that did not finish is run again from its start."""
    done = os.path.join(run_dir, "arch_search.json") if run_dir else None
    if done and os.path.exists(done):
        return rundir.read_json(done, "architecture search result")["model"]
    where = run_dir or tempfile.mkdtemp(prefix="jaxnas-arch-search-")
    data_path = os.path.join(where, "search_data.npz")
    x = np.concatenate([pool.x[split.train], pool.x[split.val]])
    y = np.concatenate([pool.y[split.train], pool.y[split.val]])
    np.savez(data_path, x=x, y=y, x_test=pool.x[split.val], y_test=pool.y[split.val])  # "test" = val: never ours
    scfg = search_config(cfg, data_path, len(split.train), len(y))
    sub = os.path.join(where, "arch_search")
    shutil.rmtree(sub, ignore_errors=True)
    scfg.run.workdir, scfg.run.name = where, "arch_search"
    log(f"architecture search: {scfg.search.strategy} on space {scfg.space.name} ({scfg.search.epochs} epochs) on "
        f"train/val; logs in {sub}")
    with kernels.use(scfg.run.kernels):
        found = get_strategy(scfg.search.strategy)(scfg, rundir.create(scfg, "search") if run_dir else None,
                                                   log=log, resume=False)
    arch = found["genotype"]
    if hasattr(arch, "normal") and scfg.space.name == "darts":
        path = os.path.join(where, "arch_search", "genotype.json")
        if not run_dir:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            genotype_lib.save(arch, path)
        model = f"genotype:{path}"
    else:
        model = f"{scfg.space.name}:{discrete_space(scfg.space, pool.image_shape).encode(arch)}"
    log(f"architecture search found {model}")
    if done:
        rundir.write_json(done, {"model": model, "strategy": scfg.search.strategy, "space": scfg.space.name})
    return model


def run(cfg, run_dir: str | None = None, log=print, resume: bool = False, pool: split_lib.Pool | None = None) -> dict:
    """The whole workflow (see the module docstring); returns the report (also ``report.json``)."""
    if cfg.compare.refit not in REFITS:
        raise JaxnasError(f"unknown compare.refit {cfg.compare.refit!r}; allowed: {', '.join(REFITS)}")
    if cfg.optimize.metric not in trainer.METRICS:
        raise JaxnasError(f"unknown optimize.metric {cfg.optimize.metric!r}; allowed: {', '.join(trainer.METRICS)}")
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    t_start = time.time()

    # 1. the split
    d = cfg.data
    pool = pool or split_lib.load_pool(d.name, d.data_dir, d.num_classes)
    split = split_lib.stratified_split(pool, d.val_fraction, d.test_fraction, cfg.seed)
    if run_dir:
        path = os.path.join(run_dir, "split.json")
        split_lib.check_saved(split, pool, path)
        split_lib.save(split, pool, path, (d.val_fraction, d.test_fraction))
    xt, yt = (pool.x_test, pool.y_test) if split.test_source == "dataset" else (pool.x, pool.y)
    test = TestSplit(xt[split.test], yt[split.test])
    log(f"optimize: {pool.name}, {pool.num_classes} classes, images {pool.image_shape} | split train/val/test "
        f"{len(split.train)}/{len(split.val)}/{len(split.test)} (stratified, seed {cfg.seed}; test "
        f"{'the dataset' + chr(39) + 's own' if split.test_source == 'dataset' else 'drawn'})")

    # 2. the baseline, scored on val
    base_hp = baseline_hparams(cfg)
    cache = os.path.join(run_dir, "baseline_val.json") if run_dir else None
    if cache and os.path.exists(cache):
        base_val = rundir.read_json(cache, "baseline result")
    else:
        fitted = trainer.fit(base_hp["model"], base_hp, pool.x, pool.y, split.train, pool.num_classes, cfg.seed, cfg,
                             val_idx=split.val, keep_best=True, metric=cfg.optimize.metric)
        base_val = {"hparams": base_hp, "val": fitted.history[-1]["val"],
                    "best_val": max(h["val"] for h in fitted.history), "best_epoch": fitted.best_epoch,
                    "val_curve": [h["val"] for h in fitted.history], "seconds": round(fitted.seconds, 3),
                    "num_params": fitted.num_params}
        if cache:
            rundir.write_json(cache, base_val)
    log(f"baseline {base_hp['model']}: val {cfg.optimize.metric} {base_val['val']:.4f} after {base_hp['epochs']} "
        f"epochs (best {base_val['best_val']:.4f} at epoch {base_val['best_epoch']})")

    # 3. the optimization, on val only
    found = search_architecture(cfg, pool, split, run_dir, log) if cfg.optimize.arch == "search" else ""
    result = study.run_study(cfg, pool.x, pool.y, split.train, split.val, pool.num_classes, base_hp, run_dir, log,
                             resume, model=found)
    best = result["best"]
    log(f"best trial {best['trial']}: val {cfg.optimize.metric} {best['value']:.4f} | {best['params']}")

    # 4. retrain both, test each once per seed, compare
    finals = {"baseline": [], "optimized": []}
    for s in range(cfg.compare.seeds):
        for name, hp in (("baseline", base_hp), ("optimized", best["params"])):
            finals[name].append(_final(cfg, name, hp, pool, split, test, cfg.seed + 1000 * (s + 1), run_dir, log))
    y = test.labels
    pa, pb = (np.asarray(finals[n][0]["predictions"]) for n in ("baseline", "optimized"))
    c = cfg.compare
    diff = {m: stats.paired_bootstrap(y, pa, pb, pool.num_classes, m, c.resamples, c.confidence, cfg.seed)
            for m in ("accuracy", "macro_f1")}
    diff["mcnemar"] = stats.mcnemar(y, pa, pb)
    final_dir = os.path.join(run_dir, "final") if run_dir else ""
    reads = sorted(f[:-5] for f in os.listdir(final_dir)) if final_dir else sorted(test.accesses)
    report = report_lib.build(cfg, pool, split, base_val, result, finals, diff, dict(test.accesses), reads,
                              time.time() - t_start)
    if run_dir:
        report_lib.write(report, run_dir)
    log(report_lib.table(report))
    return report
