"""The driver of discrete (ask/tell) strategies: budget, evaluation, history, resume, report.

A plain loop: ask the strategy, score the proposal, tell the strategy, append one
line to ``history.jsonl`` (architecture, score, cost, wall time, best so far) and
rewrite ``search_state.json`` atomically (the strategy's state with its random
generator, and the budget spent), so ``--resume`` continues with exactly the
proposals an uninterrupted run would make. At the end the best architecture (by
score, the earliest among equals) is evaluated on the test split once, and
``result.json`` is written (``jaxnas search`` then draws the best-so-far plots).
"""

from __future__ import annotations

import json
import os
import time

import jax

from jaxnas import data as data_lib
from jaxnas import rundir, writers
from jaxnas.driver import Preempted, StopOnSignal
from jaxnas.errors import JaxnasError
from jaxnas.evaluators import EVALUATORS, final_tester, make_evaluator
from jaxnas.spaces import discrete_space, get_space


def space_of(cfg, data: data_lib.SearchData | None = None):
    """The run's discrete space; spaces whose validity depends on the input shape get it (from ``data``,
    else the dataset ``cfg.data`` names)."""
    in_shape = None
    if get_space(cfg.space.name).needs_input_shape:
        ds = data.dataset if data is not None else data_lib.load_dataset(cfg.data.name, cfg.data.data_dir)
        in_shape = ds.image_shape
    return discrete_space(cfg.space, in_shape)


def check_budget(d) -> None:
    if d.budget_evals < 0 or d.budget_seconds < 0 or (d.budget_evals == 0 and d.budget_seconds == 0):
        raise JaxnasError(f"the search budget is zero: set discrete.budget_evals (got {d.budget_evals}) "
                          f"or discrete.budget_seconds (got {d.budget_seconds}) to a positive value")


def check(cfg, data: data_lib.SearchData | None = None, evaluator=None):
    """Everything ``run`` refuses before it evaluates anything (``--check`` runs it; so does ``run``,
    first): the budget, the space for these images, the evaluator (a table's file is read), and a
    time budget only with an evaluator that has costs. Returns the space."""
    d = cfg.discrete
    check_budget(d)
    space = space_of(cfg, data)
    if evaluator is not None:
        has_cost = getattr(evaluator, "has_cost", True)
    elif cfg.evaluator.kind == "table":
        has_cost = make_evaluator(cfg, space).has_cost
    else:
        has_cost = getattr(EVALUATORS.lookup(cfg.evaluator.kind), "has_cost", True)
    if d.budget_seconds and not has_cost:
        raise JaxnasError(f"discrete.budget_seconds={d.budget_seconds} counts the evaluations' cost, but evaluator "
                          f"{cfg.evaluator.kind!r} has none (set evaluator.cost_column to the table's time column, "
                          f"or budget with discrete.budget_evals)")
    return space


def search(strategy, evaluator, space, budget_evals: int, budget_seconds: float, state: dict | None = None,
           on_eval=None, stop=None) -> dict:
    """Ask/score/tell until the budget or the strategy runs out; returns the loop state.

    ``state`` (from an earlier call, after ``strategy.load_state_dict``) continues a search.
    ``on_eval(record, state)`` is called after each evaluation; ``stop()`` true ends the loop early.
    """
    state = state or {"evals": 0, "spent": 0.0, "wall": 0.0, "best": None, "best_score": None}
    while (not budget_evals or state["evals"] < budget_evals) and \
            (not budget_seconds or state["spent"] < budget_seconds):
        if stop is not None and stop():
            break
        arch = strategy.ask()
        if arch is None:
            break
        t0 = time.time()
        score, cost = evaluator.score(arch)
        strategy.tell(arch, score)
        key = space.encode(arch)
        state["evals"] += 1
        state["spent"] += cost
        state["wall"] += time.time() - t0
        if state["best_score"] is None or score > state["best_score"]:
            state["best"], state["best_score"] = key, float(score)
        record = {"eval": state["evals"], "arch": key, "score": float(score), "cost": float(cost),
                  "spent": state["spent"], "wall_s": round(state["wall"], 3), "best": state["best"],
                  "best_score": state["best_score"]}
        if on_eval is not None:
            on_eval(record, state)
    return state


def _eta(d, state: dict, done_before: int, elapsed: float) -> str:
    """Time left at the current rate, from whichever budget ends first ('?' when unknown)."""
    left = []
    n = state["evals"] - done_before
    if d.budget_evals and n > 0:
        left.append(elapsed / n * max(d.budget_evals - state["evals"], 0))
    if d.budget_seconds and state["spent"] > 0 and state["wall"] > 0:
        left.append(max(d.budget_seconds - state["spent"], 0) * state["wall"] / state["spent"])
    if not left:
        return "?"
    s = int(min(left))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run(cfg, run_dir: str | None, log, resume: bool, strategy_cls, evaluator=None,
        data: data_lib.SearchData | None = None) -> dict:
    """Run ``strategy_cls`` on ``cfg.space`` with ``cfg.evaluator`` within ``cfg.discrete``'s budget (``data``:
    the search's loaded data, else each part loads what it needs)."""
    d = cfg.discrete
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    space = check(cfg, data, evaluator)
    evaluator = evaluator or make_evaluator(cfg, space, log, data)
    strategy = strategy_cls(space, d, cfg.seed)
    state, history = None, []
    state_path = os.path.join(run_dir, "search_state.json") if run_dir else None
    hist_path = os.path.join(run_dir, "history.jsonl") if run_dir else None
    if resume and state_path and os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        strategy.load_state_dict(saved["strategy"])
        state = saved["loop"]
        writers.truncate_jsonl(hist_path, lambda r: r["eval"] <= state["evals"])
        history = rundir.read_jsonl(hist_path) if os.path.exists(hist_path) else []
        log(f"resumed after evaluation {state['evals']} (budget spent {state['spent']:.1f})")
    elif resume:
        log("no search state saved yet; starting from the first evaluation")
        if hist_path:
            writers.truncate_jsonl(hist_path, lambda r: False)  # lines of a run killed before its first save
    log(f"search: strategy={cfg.search.strategy} space={space.name} evaluator={cfg.evaluator.kind} | budget "
        f"{d.budget_evals or 'unlimited'} evaluations, {d.budget_seconds or 'unlimited'} s | "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}")

    writer = writers.MetricWriter(run_dir, state["evals"] if state else 0, cfg.run.tensorboard, resume)
    t_start, done_before = time.time(), state["evals"] if state else 0

    def on_eval(record, loop_state):
        history.append(record)
        log(f"eval {record['eval']}: {record['score']:.4f} (cost {record['cost']:.1f}) {record['arch']} | best "
            f"{record['best_score']:.4f} | ETA {_eta(d, loop_state, done_before, time.time() - t_start)}")
        writer.tb_scalars("search", record["eval"], {"score": record["score"], "best_score": record["best_score"],
                                                     "cost": record["cost"], "spent": record["spent"]})
        if run_dir and jax.process_index() == 0:
            rundir.append_jsonl(hist_path, record)
            rundir.write_json(state_path, {"strategy": strategy.state_dict(), "loop": loop_state})

    try:
        with StopOnSignal() as sig:
            state = search(strategy, evaluator, space, d.budget_evals, d.budget_seconds, state, on_eval,
                           stop=lambda: sig.signum is not None)
            if sig.signum is not None:
                raise Preempted(sig.signum, state["evals"], run_dir)
    finally:
        writer.close()
    if state["best"] is None:
        raise JaxnasError("the search evaluated no architecture")
    best = space.decode(state["best"])
    log(f"best of {state['evals']} evaluations: {state['best']} (score {state['best_score']:.4f})")
    result = {"strategy": cfg.search.strategy, "space": space.name, "arch": state["best"],
              "score": state["best_score"], "evaluations": state["evals"], "spent": state["spent"]}
    if d.final_test:
        tester = final_tester(cfg, space, evaluator, log, data)
        result["test"] = tester.test(best)
        f1 = result["test"].get("macro_f1")
        log(f"test (held out, used for nothing else): accuracy {result['test']['accuracy']:.4f}"
            + (f", macro-F1 {f1:.4f}" if f1 is not None else ", macro-F1 not in the table"))
    if run_dir and jax.process_index() == 0:
        rundir.write_json(os.path.join(run_dir, "result.json"), result)
        rundir.write_json(os.path.join(run_dir, "genotype.json"),
                          best.to_dict() if hasattr(best, "to_dict") else {"space": space.name, "arch": state["best"]})
    return {"genotype": best, "history": history, "result": result}


def runner(strategy_cls):
    """``run(cfg, run_dir, log, resume, data)`` for the strategy registry."""

    def run_strategy(cfg, run_dir=None, log=print, resume=False, data=None):
        return run(cfg, run_dir, log, resume, strategy_cls, data=data)

    run_strategy.__doc__ = f"Discrete search with {strategy_cls.__name__}."
    return run_strategy
