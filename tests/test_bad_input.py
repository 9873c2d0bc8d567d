"""Property tests of bad input (Hypothesis): malformed overrides, config files, genotypes, .npz
datasets and CSV tables end the CLI with exit code 2 and one line on stderr, never a traceback.
Validation only (``--check``): nothing is trained."""

import json
import os
import re
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxnas import config as config_lib
from jaxnas.cli import main

TINY = ["--config.space.C=4", "--config.space.layers=1", "--config.space.allow_no_normal_cell=true",
        "--config.space.nodes=2",
        "--config.space.ops=none,skip_connect,sep_conv_3x3"]
FIELDS = sorted(k for k in config_lib.flatten(config_lib.load(None)) if k != "run.imports")
# derandomized, so CI sees the same examples every run; JAXNAS_HYPOTHESIS_EXAMPLES=1000 explores further
SETTINGS = settings(max_examples=int(os.environ.get("JAXNAS_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
                    derandomize=True, database=None, suppress_health_check=list(HealthCheck))

values = st.one_of(st.integers(-10 ** 12, 10 ** 12).map(str), st.floats(allow_nan=True).map(str),
                   st.text(string.printable, max_size=12), st.sampled_from(["", "-1", "0", "nan", "inf", "1e400",
                                                                            "true", "none,none", "../x", "a/b"]))


def _one_line_or_ok(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err, (argv, out.err)
    assert code in (0, 2), (argv, code, out.err)
    if code == 2:
        assert out.err.count("\n") == 1 and out.err.startswith("jaxnas: error: "), (argv, out.err)
    return code


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_override_is_valid_or_one_line(field, value, capsys):
    _one_line_or_ok(["search", "--check", *TINY, f"--config.{field}={value}"], capsys)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=False),
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


@SETTINGS
@given(doc=st.one_of(json_values, st.fixed_dictionaries(
    {"normal": st.lists(st.lists(st.one_of(st.text(max_size=14), st.integers(-2, 6)), max_size=3), max_size=8),
     "normal_concat": st.lists(st.integers(-1, 7), max_size=4),
     "reduce": st.lists(st.lists(st.one_of(st.sampled_from(["sep_conv_3x3", "none"]), st.integers(-1, 6)),
                                 max_size=3), max_size=8),
     "reduce_concat": st.lists(st.integers(-1, 7), max_size=4)})))
def test_any_genotype_file_is_valid_or_one_line(doc, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("g") / "g.json"
    path.write_text(json.dumps(doc))
    _one_line_or_ok(["genotype", str(path)], capsys)
    _one_line_or_ok(["train", "--check", f"--genotype={path}", "--config.data.name=digits"], capsys)


GROUPS = {g: sorted(k.split(".", 1)[1] for k in FIELDS if k.startswith(g + ".")) for g in
          sorted({k.split(".")[0] for k in FIELDS if "." in k})}
configs = st.dictionaries(st.sampled_from(sorted(GROUPS) + ["seed"]), st.one_of(
    json_values, st.sampled_from(sorted(GROUPS)).flatmap(
        lambda g: st.dictionaries(st.sampled_from(GROUPS[g] + ["name"]), json_values, max_size=3))), max_size=3)


@SETTINGS
@given(doc=st.one_of(json_values, configs))
def test_any_json_config_is_valid_or_one_line(doc, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("c") / "c.json"
    path.write_text(json.dumps(doc))
    _one_line_or_ok(["search", "--check", "--config", str(path), *TINY], capsys)


def _array(shape, dtype, fill):
    with np.errstate(all="ignore"):  # NaN/Inf cast to integers: the point of the test, not a warning
        return np.full(shape, fill).astype(dtype)


arrays = st.builds(
    _array,
    st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple),
    st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "complex64", "U3"]),
    st.sampled_from([0, 1, 3, -1, 0.5, float("nan"), float("inf")]))


@SETTINGS
@given(x=arrays, y=arrays, truncate=st.booleans(), extra=st.booleans())
def test_any_npz_dataset_is_valid_or_one_line(x, y, truncate, extra, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("d") / "data.npz"
    parts = {"x": x, "y": y, **({"x_test": x, "y_test": y} if extra else {})}
    np.savez(path, **parts)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    _one_line_or_ok(["search", "--check", *TINY, f"--config.data.name={path}"], capsys)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=200), st.lists(st.lists(st.text(max_size=10), max_size=4), max_size=5).map(
    lambda rows: "\n".join(",".join(r) for r in [["arch", "val_acc", "test_acc"]] + rows).encode())))
def test_any_csv_table_is_valid_or_one_line(raw, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("t") / "table.csv"
    path.write_bytes(raw)
    _one_line_or_ok(["search", "--check", "--config.search.strategy=random", "--config.space.name=nb201",
                     "--config.evaluator.kind=table", f"--config.evaluator.table={path}",
                     "--config.data.name=digits"], capsys)


# --- optimize: --check and the run refuse the same things, and a refused run leaves no folder ------

OPT_FIELDS = sorted(k for k in config_lib.flatten(config_lib.load(None, "optimize")) if k != "run.imports")
OPT_TINY = ["--config.optimize.arch=fixed", "--config.optimize.baseline.model=cnn:4",
            "--config.optimize.baseline.epochs=1", "--config.optimize.hparams.model=", "--config.optimize.trials=1"]


def _check_then_run(argv, tmp_path, capsys):
    """``--check``: ok or one line; when it refuses, the run itself refuses with the same line before
    anything exists in its workdir (no training, no run directory)."""
    workdir = tmp_path / "runs"
    argv = argv + [f"--config.run.workdir={workdir}"]
    code = _one_line_or_ok(["optimize", "--check", *argv], capsys)
    if code == 0:
        return
    main(["optimize", *argv])
    err_check = capsys.readouterr().err
    assert err_check.startswith("jaxnas: error: ") and err_check.count("\n") == 1, err_check
    assert not workdir.exists() or not any(workdir.iterdir()), (argv, list(workdir.rglob("*")))


@SETTINGS
@given(field=st.sampled_from(OPT_FIELDS), value=values)
def test_any_optimize_override_is_valid_or_refused_alike_by_check_and_run(field, value, tmp_path_factory, capsys):
    _check_then_run([*OPT_TINY, f"--config.{field}={value}"], tmp_path_factory.mktemp("o"), capsys)


@pytest.mark.parametrize("fields, message", [
    (["optimize.baseline.batch_size=30"], "optimize.baseline.batch_size=30 is not divisible by the 4 devices"),
    (["optimize.arch=space", "optimize.hparams.batch_size=choice:32,50"],
     "optimize.hparams.batch_size=50 is not divisible by the 4 devices"),
    (["optimize.hparams.batch_size=int:16:64"], "optimize.hparams.batch_size=int:... on 4 devices"),
    (["run.devices=5"], "asked for 5 devices but only 4 are available"),
    (["run.num_processes=2", "run.coordinator=localhost:1234", "run.process_id=0"],
     "jaxnas optimize runs in one process")])
def test_batch_sizes_must_split_over_the_devices(fields, message, tmp_path, capsys):
    argv = [*OPT_TINY, "--config.run.devices=4", *(f"--config.{f}" for f in fields),
            f"--config.run.workdir={tmp_path / 'runs'}"]
    for command in (["optimize", "--check"], ["optimize"]):
        assert main(command + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxnas: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("command, fields, message", [
    ("search", ["search.batch_size=30"], "batch size 30 is not divisible by the device count 4"),
    ("search", ["search.eval_batch_size=30"], "batch size 30 is not divisible by the device count 4"),
    ("train", ["train.batch_size=30"], "batch size 30 is not divisible by the device count 4"),
    ("train", ["train.eval_batch_size=30"], "batch size 30 is not divisible by the device count 4"),
    ("search", ["search.strategy=random", "discrete.budget_evals=0", "discrete.budget_seconds=0"],
     "the search budget is zero")])
def test_check_is_the_runs_own_set_up_so_both_refuse_alike(command, fields, message, tmp_path, capsys):
    # --check runs the run object's own check (DartsSearch.check, Retrain.check), which its set-up
    # runs first: a batch size the devices cannot split is refused by both, before any folder exists
    argv = ["--config.run.devices=4", *(f"--config.{f}" for f in fields), f"--config.run.workdir={tmp_path / 'runs'}"]
    if command == "train":
        argv.append("--config.train.epochs=1")
    for check in (["--check"], []):
        assert main([command, *check, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxnas: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


HYPER_FIELDS = sorted(k for k in OPT_FIELDS if k.startswith(("optimize.hyper.", "data.corrupt.")))
hyper_values = st.one_of(st.sampled_from(["0", "1", "-1", "2", "0.4", "1.0", "nan", "inf", "", "x", "true",
                                          "l2rw", "hypergrad", "implicit", "cg", "symmetric", "longtail",
                                          "weight_decay,weight_decay", "class_weights,lr"]), values)


@SETTINGS
@given(field=st.sampled_from(HYPER_FIELDS), value=hyper_values)
def test_any_hypergradient_or_corruption_field_is_valid_or_refused_alike(field, value, tmp_path_factory, capsys):
    _check_then_run([*OPT_TINY, "--config.optimize.tune=gradient", "--config.compare.refit=train",
                     "--config.optimize.hyper.method=hypergrad", f"--config.{field}={value}"],
                    tmp_path_factory.mktemp("g"), capsys)


numbers = st.one_of(st.sampled_from(["0", "1", "-1", "1e-4", "0.3", "nan", "inf", "30", "2", "x"]),
                    st.floats(allow_nan=True).map(str))
conditions = st.one_of(st.just(""), st.builds(lambda f, v: f" if {f}={v}", st.sampled_from(
    ["optimizer", "batch_size", "lr", "augment", "nope", ""]), st.sampled_from(["sgd", "sgdd", "64", "0.1", ""])))
specs = st.one_of(
    st.builds(lambda k, a, b, c: f"{k}:{a}:{b}{c}", st.sampled_from(["log", "float", "int", "logint", "cube"]),
              numbers, numbers, conditions),
    st.builds(lambda vals, c: f"choice:{','.join(vals)}{c}", st.lists(st.sampled_from(
        ["sgd", "adamw", "adam", "32", "64", "0", "-5", "none", "crop", "x y", ""]), max_size=3), conditions),
    st.text(string.printable, max_size=16))


@SETTINGS
@given(field=st.sampled_from(["lr", "weight_decay", "batch_size", "epochs", "label_smoothing", "augment",
                              "optimizer", "momentum", "model"]), spec=specs)
def test_any_hyperparameter_spec_is_valid_or_refused_alike_by_check_and_run(field, spec, tmp_path_factory, capsys):
    _check_then_run([*OPT_TINY, f"--config.optimize.hparams.{field}={spec}"], tmp_path_factory.mktemp("h"), capsys)


@SETTINGS
@given(name=st.sampled_from(["tau", "reg", "skip", "eps"]), end=st.sampled_from(["start", "end"]),
       value=st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e-3", "5"]),
       method=st.sampled_from(["darts", "gdas", "snas", "pcdarts", "betadarts", "sdarts_rs"]))
def test_any_method_schedule_is_valid_or_one_line(name, end, value, method, capsys):
    _one_line_or_ok(["search", "--check", "--config", f"configs/{method}_darts.py", *TINY,
                     "--config.search.epochs=20", f"--config.method.{name}.{end}={value}"], capsys)


@pytest.mark.parametrize("override, message", [
    ("method.tau.end=0", "method.tau.end must be > 0.0, got 0.0"),
    ("method.tau.start=-1", "method.tau.start must be > 0.0"),
    ("method.reg.start=nan", "config field 'method.reg.start' must be a finite number"),
    ("method.eps.end=-0.1", "method.eps.end must be >= 0.0"),
    ("method.arch_start_epoch=20", "method.arch_start_epoch=20 is not below search.epochs=20"),
])
def test_method_schedules_are_range_checked_when_the_config_is_read(override, message):
    from jaxnas import JaxnasError

    with pytest.raises(JaxnasError, match=re.escape(message)):
        config_lib.apply_overrides(config_lib.load("configs/gdas_darts.py"), ["search.epochs=20", override])


def test_pcdarts_warm_up_longer_than_the_search_is_refused_with_the_reason():
    from jaxnas import JaxnasError

    with pytest.raises(JaxnasError, match="the architecture would never be updated"):
        config_lib.apply_overrides(config_lib.load("configs/pcdarts_darts.py"), ["search.epochs=2"])


members = st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test", "extra"]), arrays, max_size=5)


@SETTINGS
@given(parts=members, labels=st.sampled_from([None, "big", "neg", "one_class"]))
def test_npz_files_and_in_memory_arrays_go_through_one_validator(parts, labels, tmp_path_factory, capsys):
    """The same arrays, as a ``.npz`` on the command line and as ``data=`` in Python, are refused with the
    same message (``JaxnasError`` in Python) or accepted by both."""
    import jaxnas

    n = 12
    if labels is not None:
        y = {"big": np.r_[np.zeros(n - 1), 2 ** 31 + 1], "neg": np.r_[np.zeros(n - 1), -1],
             "one_class": np.zeros(n)}[labels].astype(np.int64)
        parts = {"x": np.zeros((n, 8, 8), np.float32), "y": y}
    path = tmp_path_factory.mktemp("d") / "data.npz"
    np.savez(path, **parts)
    code = main(["optimize", "--check", f"--config.data.name={path}", *OPT_TINY])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and (code == 0 or err.count("\n") == 1), err
    cfg = jaxnas.load_config(None, [o.removeprefix("--config.") for o in OPT_TINY], kind="optimize")
    data = {k: v for k, v in parts.items() if k != "extra"}
    try:
        jaxnas.check_optimize(cfg, data=data)
        python = None
    except jaxnas.JaxnasError as e:
        python = str(e)
    if "extra" in parts or "x" not in parts or "y" not in parts:
        return  # the file's own members (or a missing one) are named differently: a file vs a dict
    if code == 0:
        assert python is None, python
    else:
        assert python is not None
        assert python.split(": ", 1)[1] in err.replace(str(path), "arrays"), (python, err)
