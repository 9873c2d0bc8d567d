"""Discrete strategies on a made-up table: they find its optimum, evolution ages and runs
tournaments, greedy decides in order, and state round-trips through JSON."""

import json
import os
import signal

import pytest

from jaxnas import config as config_lib
from jaxnas import rundir
from jaxnas.cli import main
from jaxnas.errors import JaxnasError
from jaxnas.evaluators import TableEvaluator
from jaxnas.search import DISCRETE_STRATEGIES, discrete, get_strategy
from jaxnas.spaces import discrete_space, nb201

from conftest import made_up_table

OPS = ("none", "skip_connect", "nor_conv_3x3")  # 3^6 = 729 cells


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return made_up_table(str(tmp_path_factory.mktemp("t") / "table.csv"), OPS, seed=3, noise=0.05)


def _cfg(table, strategy="random", budget=100, **discrete_over):
    cfg = config_lib.search_defaults()
    cfg.search.strategy = strategy
    cfg.space.name, cfg.space.ops = "nb201", ",".join(OPS)
    cfg.evaluator.kind, cfg.evaluator.table, cfg.evaluator.f1_column = "table", table, "f1"
    cfg.evaluator.cost_column = "train_time"
    cfg.discrete.budget_evals = budget
    for k, v in discrete_over.items():
        cfg.discrete[k] = v
    return cfg


def _search(cfg, seed=0):
    space = discrete_space(cfg.space)
    ev = TableEvaluator(cfg.evaluator.table, space, score_column="val_acc", cost_column="train_time")
    strat = DISCRETE_STRATEGIES[cfg.search.strategy](space, cfg.discrete, seed)
    state = discrete.search(strat, ev, space, cfg.discrete.budget_evals, cfg.discrete.budget_seconds)
    return state, ev


@pytest.mark.parametrize("strategy, budget, min_hits", [("random", 250, 3), ("evolution", 250, 10),
                                                        ("greedy", 100, 20)])
def test_strategies_find_the_optimum_more_often_than_chance(table, strategy, budget, min_hits):
    cfg = _cfg(table, strategy, budget, population=20, tournament=5)
    hits = 0
    for seed in range(20):
        state, ev = _search(cfg, seed)
        hits += state["best"] == ev.optimum()[0]
        assert state["evals"] <= budget
    # chance (one random cell) finds the optimum in 20/729 = 0.03 of 20 runs
    assert hits >= min_hits, f"{strategy}: {hits}/20"


def test_evolution_ages_out_the_oldest_and_mutates_the_tournament_winner(table):
    space = discrete_space(_cfg(table).space)
    cfg = _cfg(table, population=3, tournament=3).discrete
    evo = DISCRETE_STRATEGIES["evolution"](space, cfg, 0)
    archs = [evo.ask() for _ in range(3)]
    for a, s in zip(archs, (1.0, 3.0, 2.0)):
        evo.tell(a, s)
    child = evo.ask()  # the tournament is the whole population: the parent is the best (score 3)
    diff = [i for i in range(6) if child.ops[i] != archs[1].ops[i]]
    assert len(diff) == 1
    evo.tell(child, 0.5)  # a weak child still joins; the OLDEST (score 1) dies, not the worst
    assert [s for _, s in evo.population] == [3.0, 2.0, 0.5]
    with pytest.raises(JaxnasError, match="tournament"):
        DISCRETE_STRATEGIES["evolution"](space, _cfg(table, population=3, tournament=4).discrete, 0)


def test_greedy_decides_edge_by_edge_in_order(table):
    space = discrete_space(_cfg(table).space)
    greedy = DISCRETE_STRATEGIES["greedy"](space, _cfg(table).discrete, 0)
    ev = TableEvaluator(table, space)
    asked = []
    while (arch := greedy.ask()) is not None:
        asked.append(arch)
        greedy.tell(arch, ev.score(arch)[0])
    # edge 0: all 3 ops with the others at skip_connect; then edge 1 (the kept value reused), ...
    assert [a.ops[1:] for a in asked[:3]] == [("skip_connect",) * 5] * 3
    assert {a.ops[0] for a in asked[:3]} == set(OPS)
    assert all(a.ops[2:] == ("skip_connect",) * 4 for a in asked[3:5])
    assert len(asked) == 1 + 6 * 2 and greedy.done  # each later decision reuses its current value
    scores = {space.encode(a): ev.score(a)[0] for a in asked}
    assert space.encode(greedy.best) == max(scores, key=scores.get)


@pytest.mark.parametrize("strategy", ["random", "evolution", "greedy"])
def test_state_round_trips_and_the_resumed_search_continues_identically(table, strategy):
    cfg = _cfg(table, strategy, population=5, tournament=2)
    space = discrete_space(cfg.space)
    ev = TableEvaluator(table, space)

    def proposals(strat, n):
        out = []
        for _ in range(n):
            a = strat.ask()
            if a is None:
                break
            strat.tell(a, ev.score(a)[0])
            out.append(space.encode(a))
        return out

    whole = proposals(DISCRETE_STRATEGIES[strategy](space, cfg.discrete, 4), 14)
    first = DISCRETE_STRATEGIES[strategy](space, cfg.discrete, 4)
    head = proposals(first, 6)
    saved = json.loads(json.dumps(first.state_dict()))
    second = DISCRETE_STRATEGIES[strategy](space, cfg.discrete, 999)
    second.load_state_dict(saved)
    assert head + proposals(second, 8) == whole


def test_cli_search_with_a_table_writes_history_result_and_plot(table, tmp_path, capsys):
    args = ["search", "--strategy", "evolution", "--space", "nb201", f"--config.space.ops={','.join(OPS)}",
            "--config.evaluator.kind=table",
            f"--config.evaluator.table={table}", "--config.evaluator.f1_column=f1",
            "--config.evaluator.cost_column=train_time", "--config.discrete.budget_seconds=3000",
            "--config.discrete.budget_evals=0", "--config.discrete.population=10",
            "--config.discrete.tournament=3", f"--config.run.workdir={tmp_path}", "--config.run.name=evo"]
    assert main(args) == 0
    path = tmp_path / "evo"
    hist = rundir.read_jsonl(str(path / "history.jsonl"))
    assert hist[-1]["spent"] >= 3000 > hist[-2]["spent"]  # the time budget counts the table's costs
    assert all(b["best_score"] >= a["best_score"] for a, b in zip(hist, hist[1:]))
    result = json.load(open(path / "result.json"))
    assert result["arch"] == max(hist, key=lambda r: r["score"])["arch"]
    assert 0 < result["test"]["accuracy"] and result["test"]["macro_f1"] is not None
    assert json.load(open(path / "genotype.json"))["arch"] == result["arch"]
    assert os.path.getsize(path / "plots" / "best_so_far.png") > 1000
    capsys.readouterr()
    assert main(["plot", str(path)]) == 0
    assert sorted(os.path.basename(p) for p in capsys.readouterr().out.split()) == [
        "best_so_far.png", "best_so_far.svg", "cell.png", "cell.svg"]
    svg = open(path / "plots" / "cell.svg").read()
    for op in nb201.parse(result["arch"]).ops:
        assert op == "none" or f">{op}<" in svg


def test_sigterm_then_resume_continues_the_same_search(table, tmp_path):
    from jaxnas.driver import Preempted

    ref_cfg = _cfg(table, "evolution", 40, population=8, tournament=3)
    ref_cfg.run.workdir, ref_cfg.run.name = str(tmp_path), "ref"
    ref = get_strategy("evolution")(ref_cfg, rundir.create(ref_cfg, "search"), log=lambda *_: None)

    cfg = _cfg(table, "evolution", 40, population=8, tournament=3)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "cut"
    path = rundir.create(cfg, "search")

    def stop_at_13(msg):
        if msg.startswith("eval 13:"):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted):
        get_strategy("evolution")(cfg, path, log=stop_at_13)
    assert len(rundir.read_jsonl(os.path.join(path, "history.jsonl"))) == 13
    out = get_strategy("evolution")(cfg, path, log=lambda *_: None, resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_s"} for r in h]  # noqa: E731
    assert strip(rundir.read_jsonl(os.path.join(path, "history.jsonl"))) == strip(ref["history"])
    assert out["result"]["arch"] == ref["result"]["arch"]


@pytest.mark.parametrize("override, message", [
    ("--config.evaluator.score_column=acc12", "column(s) acc12 missing; the file has: arch, index"),
    ("--config.discrete.budget_evals=0", "the search budget is zero"),
    ("--config.evaluator.kind=oracle", "unknown evaluator.kind 'oracle'"),
])
def test_bad_search_input_is_one_line_exit_2(table, tmp_path, capsys, override, message):
    args = ["search", "--config.search.strategy=random", "--config.space.name=nb201", "--config.evaluator.kind=table",
            f"--config.evaluator.table={table}", f"--config.run.workdir={tmp_path}", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_table_rows_that_do_not_parse_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,val_acc,test_acc\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,2\n|oops|,1,2\n")
    space = discrete_space(_cfg(str(bad)).space)
    with pytest.raises(JaxnasError, match=r"bad.csv line 3: NAS-Bench-201 arch '\|oops\|'"):
        TableEvaluator(str(bad), space)
    bad.write_text("arch,val_acc,test_acc\n0,high,2\n")
    with pytest.raises(JaxnasError, match="column 'val_acc' is 'high', not a number"):
        TableEvaluator(str(bad), space)
