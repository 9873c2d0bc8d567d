"""Discrete (ask/tell) search as a run: budget, evaluation, history, resume, report.

``DiscreteSearch`` is a ``driver.Loop``: each step asks the strategy, scores the proposal and
tells the strategy, then appends one line to ``history.jsonl`` (architecture, score, cost, wall
time, best so far) and rewrites ``search_state.json`` atomically (the strategy's state with its
random generator, and the budget spent), so ``--resume`` continues with exactly the proposals an
uninterrupted run would make. At the end the best architecture (by
score, the earliest among equals) is evaluated on the test split once, and
``result.json`` is written (``jaxnas search`` then draws the best-so-far plots).
"""

from __future__ import annotations

import os
import time

import jax

from jaxnas import data as data_lib
from jaxnas import driver, rundir, writers
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


def check(cfg, data: data_lib.SearchData | None = None, evaluator=None, log=print):
    """Everything ``run`` refuses before it evaluates anything (``--check`` runs it; so does ``run``,
    first): the budget, the space for these images, the evaluator (a table's file is read), and a
    time budget only with an evaluator that has costs. Returns the space and the evaluator when it had
    to be made to be checked (a table's), else None."""
    d = cfg.discrete
    check_budget(d)
    space = space_of(cfg, data)
    made = None
    if evaluator is not None:
        has_cost = getattr(evaluator, "has_cost", True)
    elif cfg.evaluator.kind == "table":
        made = make_evaluator(cfg, space, log, data)
        has_cost = made.has_cost
    else:
        has_cost = getattr(EVALUATORS.lookup(cfg.evaluator.kind), "has_cost", True)
    if d.budget_seconds and not has_cost:
        raise JaxnasError(f"discrete.budget_seconds={d.budget_seconds} counts the evaluations' cost, but evaluator "
                          f"{cfg.evaluator.kind!r} has none (set evaluator.cost_column to the table's time column, "
                          f"or budget with discrete.budget_evals)")
    return space, made


def new_state() -> dict:
    """The loop state of a search that has evaluated nothing."""
    return {"evals": 0, "spent": 0.0, "wall": 0.0, "best": None, "best_score": None}


def within_budget(state: dict, budget_evals: int, budget_seconds: float) -> bool:
    """Whether another evaluation fits the budget (0: no limit of that kind)."""
    return (not budget_evals or state["evals"] < budget_evals) and \
        (not budget_seconds or state["spent"] < budget_seconds)


def evaluate_next(strategy, evaluator, space, state: dict) -> dict | None:
    """One evaluation: ask the strategy, score the proposal, tell the strategy, update ``state``
    (evaluations, cost spent, wall time, best so far: the earliest among equal scores); returns its
    record, or None when the strategy has nothing left to propose."""
    arch = strategy.ask()
    if arch is None:
        return None
    t0 = time.time()
    score, cost = evaluator.score(arch)
    strategy.tell(arch, score)
    key = space.encode(arch)
    state["evals"] += 1
    state["spent"] += cost
    state["wall"] += time.time() - t0
    if state["best_score"] is None or score > state["best_score"]:
        state["best"], state["best_score"] = key, float(score)
    return {"eval": state["evals"], "arch": key, "score": float(score), "cost": float(cost),
            "spent": state["spent"], "wall_s": round(state["wall"], 3), "best": state["best"],
            "best_score": state["best_score"]}


def search(strategy, evaluator, space, budget_evals: int, budget_seconds: float, state: dict | None = None,
           on_eval=None) -> dict:
    """Ask/score/tell until the budget or the strategy runs out, with no run directory (a library loop,
    for experiments and tests); returns the loop state. ``state`` (from an earlier call, after
    ``strategy.load_state_dict``) continues a search; ``on_eval(record, state)`` follows each evaluation."""
    state = state or new_state()
    while within_budget(state, budget_evals, budget_seconds):
        record = evaluate_next(strategy, evaluator, space, state)
        if record is None:
            break
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


class DiscreteSearch(driver.Loop):
    """A discrete (ask/tell) search as one object that ``driver.run`` drives. Set-up is ``__init__``
    (``check``, the evaluator, the strategy) and ``restore``; each step is one evaluation
    (``evaluate_next``); each logged step one line of ``history.jsonl`` and of the log; each save
    rewrites ``search_state.json`` (the strategy's state with its random generator, and the budget
    spent); the run ends when the budget or the strategy runs out (``finished``). ``finish`` tests
    the best architecture once and writes ``result.json``."""

    catch_signals, log_every, checkpoint_every, epochs = True, 1, 1, 1

    def __init__(self, cfg, run_dir: str | None, log, strategy_cls, evaluator=None,
                 data: data_lib.SearchData | None = None):
        self.cfg, self.run_dir, self.log, self.data, d = cfg, run_dir, log, data, cfg.discrete
        self.space, made = check(cfg, data, evaluator, log)
        self.evaluator = evaluator or made or make_evaluator(cfg, self.space, log, data)  # a table is read once
        self.strategy = strategy_cls(self.space, d, cfg.seed)
        self.steps = d.budget_evals or 2 ** 62  # a time budget alone: until it is spent (``finished``)
        self.state, self.history, self.record = new_state(), [], None
        self.state_path = os.path.join(run_dir, "search_state.json") if run_dir else None
        self.hist_path = os.path.join(run_dir, "history.jsonl") if run_dir else None
        self.progress = driver.Progress(0, 0, "", enabled=False)  # the log lines carry the ETA

    def restore(self) -> None:
        """Continue after the last saved evaluation: the strategy's state, the budget spent, the history."""
        if self.state_path and os.path.exists(self.state_path):
            saved = rundir.read_json(self.state_path, "search state")
            self.strategy.load_state_dict(saved["strategy"])
            self.state = saved["loop"]
            writers.truncate_jsonl(self.hist_path, lambda r: r["eval"] <= self.state["evals"])
            self.history = rundir.read_jsonl(self.hist_path) if os.path.exists(self.hist_path) else []
            self.log(f"resumed after evaluation {self.state['evals']} (budget spent {self.state['spent']:.1f})")
        else:
            self.log("no search state saved yet; starting from the first evaluation")
            if self.hist_path:
                writers.truncate_jsonl(self.hist_path, lambda r: False)  # lines of a run killed before its first save
        self.start = self.state["evals"]

    def open(self, resume: bool) -> None:
        if resume:
            self.restore()
        cfg, d = self.cfg, self.cfg.discrete
        self.log(f"search: strategy={cfg.search.strategy} space={self.space.name} evaluator={cfg.evaluator.kind} | "
                 f"budget {d.budget_evals or 'unlimited'} evaluations, {d.budget_seconds or 'unlimited'} s | "
                 f"{jax.device_count()} x {jax.devices()[0].device_kind}")
        self.writer = writers.MetricWriter(self.run_dir, self.start, cfg.run.tensorboard, resume)
        self.t_start, self.done_before = time.time(), self.start

    def step(self, epoch: int, i: int) -> dict:
        self.record = evaluate_next(self.strategy, self.evaluator, self.space, self.state)  # None: nothing left
        return {}  # scores are the evaluator's: a table's missing value is not a diverged run

    def finished(self) -> bool:
        d = self.cfg.discrete
        return self.record is None or not within_budget(self.state, d.budget_evals, d.budget_seconds)

    def log_step(self, epoch: int, i: int, gstep: int, metrics: dict) -> None:
        r = self.record
        if r is None:
            return
        self.history.append(r)
        eta = _eta(self.cfg.discrete, self.state, self.done_before, time.time() - self.t_start)
        self.log(f"eval {r['eval']}: {r['score']:.4f} (cost {r['cost']:.1f}) {r['arch']} | best "
                 f"{r['best_score']:.4f} | ETA {eta}")
        self.writer.tb_scalars("search", r["eval"], {"score": r["score"], "best_score": r["best_score"],
                                                    "cost": r["cost"], "spent": r["spent"]})
        if self.run_dir and jax.process_index() == 0:
            rundir.append_jsonl(self.hist_path, r)

    def save(self, gstep: int) -> None:
        if self.run_dir and jax.process_index() == 0:
            rundir.write_json(self.state_path, {"strategy": self.strategy.state_dict(), "loop": self.state})

    def finish(self) -> dict:
        """The best architecture (by score, the earliest among equals), tested once; ``result.json``."""
        cfg, state, space = self.cfg, self.state, self.space
        if state["best"] is None:
            raise JaxnasError("the search evaluated no architecture")
        best = space.decode(state["best"])
        self.log(f"best of {state['evals']} evaluations: {state['best']} (score {state['best_score']:.4f})")
        result = {"strategy": cfg.search.strategy, "space": space.name, "arch": state["best"],
                  "score": state["best_score"], "evaluations": state["evals"], "spent": state["spent"]}
        if cfg.discrete.final_test:
            tester = final_tester(cfg, space, self.evaluator, self.log, self.data)
            result["test"] = tester.test(best)
            f1 = result["test"].get("macro_f1")
            self.log(f"test (held out, used for nothing else): accuracy {result['test']['accuracy']:.4f}"
                     + (f", macro-F1 {f1:.4f}" if f1 is not None else ", macro-F1 not in the table"))
        if self.run_dir and jax.process_index() == 0:
            rundir.write_json(os.path.join(self.run_dir, "result.json"), result)
            rundir.write_json(os.path.join(self.run_dir, "genotype.json"), best.to_dict()
                              if hasattr(best, "to_dict") else {"space": space.name, "arch": state["best"]})
        return {"genotype": best, "history": self.history, "result": result}


def run(cfg, run_dir: str | None, log, resume: bool, strategy_cls, evaluator=None,
        data: data_lib.SearchData | None = None) -> dict:
    """Run ``strategy_cls`` on ``cfg.space`` with ``cfg.evaluator`` within ``cfg.discrete``'s budget (``data``:
    the search's loaded data, else each part loads what it needs): ``DiscreteSearch`` through ``driver.run``."""
    if resume and not run_dir:
        raise JaxnasError("resume needs a run directory")
    search_run = DiscreteSearch(cfg, run_dir, log, strategy_cls, evaluator, data)
    search_run.open(resume)
    d = cfg.discrete
    if within_budget(search_run.state, d.budget_evals, d.budget_seconds):
        driver.run(search_run)
    else:
        search_run.writer.close()
    return search_run.finish()


def runner(strategy_cls):
    """``run(cfg, run_dir, log, resume, data)`` for the strategy registry."""

    def run_strategy(cfg, run_dir=None, log=print, resume=False, data=None):
        return run(cfg, run_dir, log, resume, strategy_cls, data=data)

    run_strategy.__doc__ = f"Discrete search with {strategy_cls.__name__}."
    return run_strategy
