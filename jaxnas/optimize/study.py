"""The automatic optimization: an Optuna study over hyperparameters and architecture, scored on val.

Optuna (Akiba et al. 2019) does the searching: TPE (Bergstra et al. 2011; multivariate, Falkner et
al. 2018's grouping for the conditional and architecture parameters) proposes, Hyperband
(Li et al. 2018) prunes on the per-epoch validation scores, and the study lives in a SQLite file in the
run directory (``study.db``), so ``optuna-dashboard sqlite:///<run>/study.db`` shows it and a killed run
resumes with no finished trial lost: a trial that was running when the process died is marked failed
and enqueued again with the same parameters, and goes on from its last finished epoch (its fit
writes its state after each epoch to ``trials/<n>.ckpt``, removed once the trial is recorded; the
retry keeps the first try's seed). The budget is ``optimize.trials`` finished trials and/or
``optimize.seconds`` of optimization time, whichever ends first (counted across resumes); a trial
still training after ``optimize.trial_seconds`` is stopped after its current step and counts as pruned.

The architecture (``optimize.arch = "space"``): every decision of the configured space's discrete
form (``DiscreteSpace.choices``) is one categorical parameter of the trial, drawn in order, so TPE
searches it jointly with the hyperparameters; ``optimize.first_arch`` (an architecture string of the
space) is the first trial's architecture, beside the baseline's hyperparameters. ``"fixed"``: the model is the hyperparameter ``model``
(the baseline's, or a ``choice:`` of model specs). ``"search"``: a jaxnas search (any strategy, e.g. a
DARTS-family method) runs once on train/val beforehand (``workflow.search_architecture``) and every
trial trains the architecture it found.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
import zlib

import numpy as np

from jaxnas import rundir
from jaxnas.driver import eta
from jaxnas.errors import JaxnasError
from jaxnas.optimize import hpspace, model_spec, trainer
from jaxnas.spaces import discrete_space

ARCH_SOURCES = ("fixed", "space", "search")
PRUNERS = ("hyperband", "median", "none")


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _decision(arch, space, i) -> tuple[str, list, list[str]]:
    """Decision ``i``'s parameter name, options and their names (the name carries a digest of the choice
    list, since later choices depend on earlier ones)."""
    options = list(space.choices(arch, i))
    names = [str(o) for o in options]
    digest = f"{zlib.crc32('|'.join(names).encode()):08x}"[:6]
    return f"arch.{i}.{digest}", options, names


def suggest_arch(trial, space) -> object:
    """An architecture of ``space`` drawn decision by decision from the trial (one categorical each)."""
    arch = space.initial()
    i = 0
    while i < space.num_decisions(arch):
        name, options, names = _decision(arch, space, i)
        pick = trial.suggest_categorical(name, names)
        arch = space.with_choice(arch, i, options[names.index(pick)])
        i += 1
    return arch


def arch_params(space, text: str) -> dict:
    """The trial parameters that make ``suggest_arch`` draw the architecture ``text`` (a warm start)."""
    target = space.decode(text)
    arch, out, i = space.initial(), {}, 0
    while i < space.num_decisions(arch):
        name, options, names = _decision(arch, space, i)
        value = space.choice(target, i)
        if value not in options:
            raise JaxnasError(f"optimize.first_arch {text!r}: decision {i} is {value!r}, which space {space.name} does "
                              f"not offer there; allowed: {', '.join(names)}")
        out[name] = names[options.index(value)]
        arch = space.with_choice(arch, i, value)
        i += 1
    if space.encode(arch) != space.encode(target):
        raise JaxnasError(f"optimize.first_arch {text!r} cannot be reached decision by decision in space {space.name}")
    return out


def make_pruner(o, max_epochs: int):
    optuna = _optuna()
    if o.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=o.min_epochs, max_resource=max(max_epochs, o.min_epochs),
                                              reduction_factor=o.reduction_factor)
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.startup_trials, n_warmup_steps=o.min_epochs)
    if o.pruner == "none":
        return optuna.pruners.NopPruner()
    raise JaxnasError(f"unknown optimize.pruner {o.pruner!r}; allowed: {', '.join(PRUNERS)}")


def baseline_params(params: list[hpspace.Param], fixed: dict) -> dict:
    """The baseline's values of the searched hyperparameters that the declared space contains."""
    out = {}
    for p in params:
        v = fixed.get(p.name)
        if not p.active(fixed):
            continue
        if (p.kind == "choice" and v in p.choices) or (p.kind != "choice" and isinstance(v, (int, float))
                                                       and p.low <= v <= p.high):
            out[p.name] = v
    return out


def open_study(cfg, run_dir: str | None, resume: bool, max_epochs: int, first: dict | None = None,
               params: list | None = None, space=None, log=print):
    """The study (SQLite in ``run_dir``, else in memory). A new study's first trial is ``first`` (the
    baseline's hyperparameters, so the study starts from what the user had). On resume the database is
    cross-checked with ``trials.jsonl`` (``reconcile``): a missing, empty or damaged ``study.db`` is
    rebuilt from the JSON lines, never started again; then trials left running are failed and
    enqueued again with the same parameters."""
    optuna = _optuna()
    o = cfg.optimize
    db = os.path.join(run_dir, "study.db") if run_dir else None
    jsonl = os.path.join(run_dir, "trials.jsonl") if run_dir else None
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=o.startup_trials, multivariate=True,
                                         group=True)

    def create():
        storage = f"sqlite:///{os.path.abspath(db)}" if db else None
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=make_pruner(o, max_epochs),
                                    study_name="jaxnas-optimize", direction="maximize", load_if_exists=resume)
        study.get_trials(deepcopy=False)  # reads every row: a damaged database fails here, not mid-study
        return study

    try:
        with rundir.disk_errors(run_dir):
            study = create()
    except JaxnasError:
        raise
    except Exception as e:  # SQLAlchemy's errors of a file that is not (or no longer) a database
        if not (resume and db and type(e).__module__.startswith(("sqlalchemy", "optuna", "sqlite3"))):
            raise
        kept = rundir.read_jsonl_records(jsonl)
        reason = str(e).splitlines()[0][:120]
        if not kept:
            raise JaxnasError(f"{db!r} is damaged ({reason}) and {jsonl!r} holds no finished trial to rebuild it from; "
                              f"nothing was changed: restore study.db from a copy, or start a new run") from None
        aside = f"{db}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(db, aside)
        log(f"optimize: {db} is damaged ({reason}); set aside as {aside}, rebuilt from {len(kept)} trial(s) of "
            f"trials.jsonl")
        study = create()
    if resume and params is not None:
        reconcile(study, jsonl, params, space, log)
    states = optuna.trial.TrialState
    if first and not study.get_trials(deepcopy=False):
        study.enqueue_trial(first, user_attrs={"from": "baseline hyperparameters"})
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING)):
        if t.state != states.RUNNING:
            continue
        record = t.user_attrs.get("record")
        if record is not None:  # it finished, and the process died (or the disk filled) while telling Optuna
            if record["state"] == "complete":
                study.tell(t.number, record["value"])
            else:
                study.tell(t.number, state=states.PRUNED if record["state"] == "pruned" else states.FAIL)
        else:
            study.tell(t.number, state=states.FAIL)  # killed mid-fit: tried again from its last epoch
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.user_attrs.get("retry_of", t.number)})
    return study


def trial_of(record: dict, params: list[hpspace.Param], space):
    """The Optuna trial that a ``trials.jsonl`` record stands for: the parameters ``suggest`` drew for
    it (each hyperparameter active in it, and the decisions of its architecture), their distributions,
    its state, value and per-epoch scores, and the record itself."""
    optuna = _optuna()
    values, dists = {}, {}
    hp = record["params"]
    for p in params:
        if p.active(hp):
            values[p.name], dists[p.name] = hp[p.name], p.distribution()
    if space is not None:
        arch = str(hp["model"]).partition(":")[2]
        target, current, i = space.decode(arch), space.initial(), 0
        while i < space.num_decisions(current):
            name, options, names = _decision(current, space, i)
            value = space.choice(target, i)
            values[name], dists[name] = names[options.index(value)], optuna.distributions.CategoricalDistribution(names)
            current = space.with_choice(current, i, value)
            i += 1
    states = optuna.trial.TrialState
    state = {"complete": states.COMPLETE, "pruned": states.PRUNED}.get(record["state"], states.FAIL)
    return optuna.trial.create_trial(
        params=values, distributions=dists, state=state,
        value=record["value"] if state == states.COMPLETE else None,
        intermediate_values={e + 1: v for e, v in enumerate(record.get("val_curve") or [])},
        user_attrs={"record": record, **({"retry_of": record["retry_of"]} if "retry_of" in record else {})})


def reconcile(study, jsonl: str, params: list[hpspace.Param], space, log=print) -> None:
    """Cross-check a resumed study with ``trials.jsonl``, its second record of every finished trial.

    Trials the JSON lines hold and the database lacks (a missing, empty or older ``study.db``) are added
    to the database with their trial numbers (a number whose trial was killed before its record was
    written is added as a FAIL trial, which keeps every later trial at its own number and seed), so
    no finished trial is lost or redone; the JSON lines are then rewritten from the database. A trial
    recorded differently in the two, or one that cannot be put back at its number, is one error; so is
    a finished trial drawn from other distributions than the config now declares (an edited config)."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    db = {t.user_attrs["record"]["trial"]: t.user_attrs["record"] for t in trials if "record" in t.user_attrs}
    lines = {r["trial"]: r for r in rundir.read_jsonl_records(jsonl)
             if isinstance(r.get("trial"), int) and isinstance(r.get("params"), dict) and "state" in r}
    differ = sorted(n for n in db.keys() & lines.keys() if db[n] != lines[n])
    if differ:
        raise JaxnasError(f"{jsonl!r} and study.db record trial {differ[0]} differently; one of them was edited: "
                          f"restore it, or start a new run")
    missing = sorted(lines.keys() - db.keys())
    if missing and missing[0] < len(trials):
        raise JaxnasError(f"{jsonl!r} holds trial {missing[0]}, which study.db has as an unfinished trial; the two "
                          f"cannot be merged: restore study.db from a copy, or start a new run")
    for n in missing:
        while len(study.get_trials(deepcopy=False)) < n:  # a trial killed before it finished: no record
            study.add_trial(optuna.trial.create_trial(state=states.FAIL, user_attrs={"killed_unrecorded": True}))
        try:
            study.add_trial(trial_of(lines[n], params, space))
        except (KeyError, ValueError, TypeError, JaxnasError) as e:
            raise JaxnasError(f"{jsonl!r}: trial {n} does not fit the run's search space ({e}); the config was "
                              f"edited since the run started") from None
    if missing:
        seconds = max(float(r.get("elapsed", 0.0)) for r in lines.values())
        study.set_user_attr("seconds", max(seconds, float(study.user_attrs.get("seconds", 0.0))))
        log(f"optimize: study.db lacked {len(missing)} finished trial(s) of trials.jsonl; added back from it "
            f"(trials {', '.join(map(str, missing[:8]))}{' ...' if len(missing) > 8 else ''})")
    declared = {p.name: p for p in params}
    for t in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)):
        for name, dist in t.distributions.items():
            if name in declared and dist != declared[name].distribution():
                raise JaxnasError(f"trial {t.number} of this run drew optimize.hparams.{name} from {dist}, but the "
                                  f"config now declares {declared[name].distribution()}; a run's search space "
                                  f"cannot change on resume: restore the config, or start a new run")


def first_params(params: list[hpspace.Param], fixed: dict, space, first_arch: str) -> dict:
    """The first trial's parameters: the baseline's values of the searched hyperparameters, and the
    decisions of ``optimize.first_arch`` (a warm start) when a space is searched."""
    first = baseline_params(params, fixed)
    if space is not None and first_arch:
        first.update(arch_params(space, first_arch))
    return first


def _records(study) -> list[dict]:
    return [t.user_attrs["record"] for t in study.get_trials(deepcopy=False) if "record" in t.user_attrs]


def check(o) -> list[hpspace.Param]:
    """The ``optimize`` group's architecture source, pruner and searched hyperparameters, checked."""
    if o.arch not in ARCH_SOURCES:
        raise JaxnasError(f"unknown optimize.arch {o.arch!r}; allowed: {', '.join(ARCH_SOURCES)}")
    params = hpspace.params(o.hparams)
    if o.arch != "fixed" and any(p.name == "model" for p in params):
        raise JaxnasError(f"optimize.hparams.model={hpspace.describe(o.hparams.model)} is searched only with "
                          f"optimize.arch=fixed; with optimize.arch={o.arch} the architecture comes from the "
                          f"{o.arch}: set optimize.hparams.model.kind=none")
    unknown = sorted(set(o.hparams.keys()) - {*trainer.HPARAMS, "model"})
    if unknown:
        raise JaxnasError(f"optimize.hparams: unknown field(s) {', '.join(unknown)}")
    fixed = o.baseline.to_dict()
    for p in params:  # every value a trial can draw is one the trainer takes
        if p.name == "model":
            continue
        for value in p.choices if p.kind == "choice" else (p.low, p.high):
            value = int(value) if p.kind in ("int", "logint") else value
            trainer.check_hparams({**fixed, p.name: value}, "optimize.hparams")
    make_pruner(o, 1)
    return params


def run_study(cfg, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int,
              fixed: dict, run_dir: str | None = None, log=print, resume: bool = False, model: str = "",
              params: list | None = None, space=None, first: dict | None = None, hyper=None,
              clean: np.ndarray | None = None) -> dict:
    """Run the trials (``model``: the architecture every trial trains, when one was searched for
    beforehand; ``params``, ``space``, ``first``: as ``workflow.setup`` made them, else made here);
    returns ``{"best": record of the best complete trial, "records": all, "seconds": ..}``."""
    optuna = _optuna()
    o = cfg.optimize
    if params is None:
        params = check(o)
        space = discrete_space(cfg.space, x.shape[1:]) if o.arch == "space" else None
        first = first_params(params, fixed, space, o.first_arch)
    max_epochs = int(hpspace.max_value(params, "epochs", fixed))
    study = open_study(cfg, run_dir, resume, max_epochs, first, params, space, log)
    path = os.path.join(run_dir, "trials.jsonl") if run_dir else None
    records = _records(study)
    if path:  # cross-checked with the database on resume (reconcile), then rewritten from it atomically
        rundir.write_text(path, "".join(rundir.json_line(r) for r in records))
    finished = len(records)
    spent = float(study.user_attrs.get("seconds", 0.0))
    t_start = time.time()
    best = max((r for r in records if r["state"] == "complete"), key=lambda r: r["value"], default=None)
    if finished and resume:
        log(f"optimize: resuming after {finished} finished trial(s), {spent:.0f} s spent")

    while finished < o.trials and not (o.seconds and spent + time.time() - t_start >= o.seconds):
        trial = study.ask()
        hp = hpspace.suggest(trial, params, fixed)
        if space is not None:  # the drawn architecture goes to the trainer as it is; its text is the record's
            arch = suggest_arch(trial, space)
            spec = model_spec.Spec(space.name, space.encode(arch), arch)
        else:
            spec = model_spec.of(model or hp["model"])
        hp["model"] = str(spec)
        origin = int(trial.user_attrs.get("retry_of", trial.number))  # a retry is its first try, continued
        seed = int(cfg.seed) + 1 + origin
        ckpt = os.path.join(run_dir, "trials", f"{origin}.ckpt") if run_dir else None
        curve: list[float] = []
        t0 = time.time()

        def on_epoch(epoch: int, value: float) -> None:
            curve.append(value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        state, value, note = "complete", None, ""
        try:
            trainer.check_hparams(hp, "optimize.hparams")
            fitted = trainer.fit(spec, hp, x, y, train_idx, num_classes, seed, cfg, val_idx=val_idx,
                                 on_epoch=on_epoch, metric=o.metric,
                                 deadline=t0 + o.trial_seconds if o.trial_seconds else 0.0, hyper=hyper,
                                 clean=clean, checkpoint=ckpt)
            value, num_params = fitted.history[-1]["val"], fitted.num_params
        except optuna.TrialPruned:
            state, num_params = "pruned", None
        except trainer.TimeUp as e:
            state, note, num_params = "pruned", f"{e} (optimize.trial_seconds)", None
        except trainer.Diverged as e:
            state, note, num_params = "failed", str(e), None
        record = {"trial": trial.number, "state": state, "value": value, "params": {k: hp[k] for k in sorted(hp)},
                  "epochs_run": len(curve), "val_curve": curve, "seconds": round(time.time() - t0, 3),
                  "seed": seed, "num_params": num_params,
                  "elapsed": round(spent + time.time() - t_start, 3)}
        if note:
            record["note"] = note
        if "retry_of" in trial.user_attrs:
            record["retry_of"] = trial.user_attrs["retry_of"]
        trial.set_user_attr("record", record)
        if state == "complete":
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED if state == "pruned"
                       else optuna.trial.TrialState.FAIL)
        study.set_user_attr("seconds", record["elapsed"])
        if path:
            rundir.append_jsonl(path, record)
        if ckpt:  # the trial is recorded: its epochs' states are no longer needed
            shutil.rmtree(ckpt, ignore_errors=True)
        finished += 1
        if state == "complete" and (best is None or value > best["value"]):
            best = record
        left = o.trials - finished
        if o.seconds:
            left = min(left, math.ceil((o.seconds - record["elapsed"]) / max(record["elapsed"] / finished, 1e-9)))
        shown = f"{value:.4f}" if value is not None else f"{state} after {len(curve)} epoch(s)"
        best_text = f"{best['value']:.4f} (trial {best['trial']})" if best else "none yet"
        log(f"trial {trial.number} [{finished}/{o.trials}] {o.metric} {shown} | best {best_text} | "
            f"{hp['model']} lr {hp['lr']:.3g} {hp['optimizer']} bs {hp['batch_size']} ep {hp['epochs']} "
            f"aug {hp['augment']} | {record['seconds']:.1f}s | ETA {eta(finished, finished + max(left, 0), record['elapsed'])}")
    if best is None:
        raise JaxnasError(f"optimize: none of the {finished} trial(s) completed (all pruned or diverged); "
                          f"raise optimize.trials or narrow optimize.hparams (e.g. lower learning rates)")
    return {"best": best, "records": _records(study), "seconds": float(study.user_attrs.get("seconds", 0.0))}
