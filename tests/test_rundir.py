"""Run directories: names, refusing to overwrite, read-only places, corrupt run files, and nothing
executed when a run is read back."""

import json
import os

import pytest

from jaxnas import config as config_lib
from jaxnas import rundir
from jaxnas.cli import main
from jaxnas.errors import JaxnasError


def _cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("name", ["..", "a/b", "/tmp/elsewhere", "."])
def test_run_name_is_one_folder_name(tmp_path, name):
    cfg = config_lib.load(None)
    cfg.run.workdir, cfg.run.name = str(tmp_path / "runs"), name
    with pytest.raises(JaxnasError, match="must be one folder name"):
        rundir.create(cfg, "search")


def test_an_existing_run_is_never_overwritten_and_a_failed_start_leaves_nothing(tmp_path, capsys):
    cfg = config_lib.load(None)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "taken"
    path = rundir.create(cfg, "search")
    before = open(os.path.join(path, "config.json")).read()
    code, err = _cli(["search", f"--config.run.workdir={tmp_path}", "--config.run.name=taken"], capsys)
    assert code == 2 and "already holds a run" in err and open(os.path.join(path, "config.json")).read() == before
    # a start that fails on bad data removes the folder it made
    bad = tmp_path / "one_class.npz"
    import numpy as np

    np.savez(bad, x=np.zeros((20, 4, 4), np.float32), y=np.zeros(20, np.int64))
    code, err = _cli(["search", f"--config.run.workdir={tmp_path}", "--config.run.name=fresh",
                      f"--config.data.name={bad}"], capsys)
    assert code == 2 and "needs at least 2" in err and err.count("\n") == 1
    assert not (tmp_path / "fresh").exists()
    # a run named after a data file is named after its stem
    assert rundir._data_label("path/to/x.npz") == "x" and rundir._data_label("cifar10") == "cifar10"


def test_a_read_only_run_folder_is_one_error_before_any_work(tmp_path, capsys, read_only):
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = config_lib.load(None)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "existing"
    existing = rundir.create(cfg, "search")
    cfg.run.name = "logs"
    logs = rundir.create(cfg, "search")
    metrics = os.path.join(logs, "metrics.jsonl")
    open(metrics, "w").close()
    for path in (ro, existing, metrics):
        read_only(path)
    code, err = _cli(["search", f"--config.run.workdir={ro}"], capsys)
    assert code == 2 and "cannot" in err and str(ro) in err and err.count("\n") == 1
    code, err = _cli(["search", "--resume", existing], capsys)  # a resume checks before any work too
    assert code == 2 and "cannot write in" in err and err.count("\n") == 1
    code, err = _cli(["search", "--resume", logs], capsys)
    assert code == 2 and "metrics.jsonl" in err and "appends to it" in err and err.count("\n") == 1


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", b"\xff\xfe\x00garbage"])
def test_corrupt_run_files_are_one_line_naming_the_file(tmp_path, capsys, content):
    cfg = config_lib.load(None)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "r"
    path = rundir.create(cfg, "search")
    for name in ("config.json", "meta.json"):
        target = os.path.join(path, name)
        keep = open(target).read()
        with open(target, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        for argv in (["search", "--resume", path], ["plot", path]):
            code, err = _cli(argv, capsys)
            assert code == 2 and name in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        with open(target, "w") as f:
            f.write(keep)


def test_reading_a_run_never_imports_what_it_names(tmp_path, capsys, monkeypatch):
    (tmp_path / "evil_module_xyz.py").write_text("import pathlib\npathlib.Path('EXECUTED').write_text('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = config_lib.load(None)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "copied"
    path = rundir.create(cfg, "search")
    saved = json.load(open(os.path.join(path, "config.json")))
    saved["run"]["imports"] = "evil_module_xyz"
    json.dump(saved, open(os.path.join(path, "config.json"), "w"))
    for argv in (["search", "--resume", path], ["plot", path]):
        code, err = _cli(argv, capsys)
        assert code == 2 and "--config.run.imports=evil_module_xyz" in err
    assert not (tmp_path / "EXECUTED").exists()


@pytest.mark.parametrize("override, message", [
    ("run.log_every=0", "'run.log_every' must be >= 1, got 0"),
    ("search.eval_batch_size=0", "'search.eval_batch_size' must be >= 1"),
    ("seed=-3", "'seed' must be in [0, 4294967295], got -3"),
    ("search.max_steps_per_epoch=-1", "'search.max_steps_per_epoch' must be >= 0"),
    ("run.checkpoint_every=-5", "'run.checkpoint_every' must be >= 0"),
    ("data.train_portion=1.5", "'data.train_portion' must be in (0.0, 1.0)"),
])
def test_values_out_of_their_declared_range_are_refused_when_read(override, message):
    with pytest.raises(JaxnasError) as e:
        config_lib.apply_overrides(config_lib.load(None), [override])
    assert message in str(e.value)
    with pytest.raises(JaxnasError, match="'train.batch_size' must be >= 1"):
        config_lib.apply_overrides(config_lib.load(None, "train"), ["train.batch_size=0"])
