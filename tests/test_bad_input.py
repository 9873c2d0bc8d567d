"""Property tests of bad input (Hypothesis): malformed overrides, config files, genotypes, .npz
datasets and CSV tables end the CLI with exit code 2 and one line on stderr, never a traceback.
Validation only (``--check``): nothing is trained."""

import json
import os
import string

import numpy as np
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
