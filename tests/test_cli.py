import json

import pytest

from jaxnas.cli import main


@pytest.mark.parametrize("argv, message", [
    (["search", "--config.space.ops=none,conv_7x7"], "unknown op 'conv_7x7'; allowed: none, max_pool_3x3"),
    (["search", "--config.data.name=imagenet9"], "unknown dataset 'imagenet9'"),
    (["search", "--config.space.name=nb999"], "unknown space 'nb999'; allowed: darts"),
    (["search", "--config.search.order=third"],
     "config field 'search.order': unknown value 'third'; allowed: first, second, second_fd, single"),
    (["search", "--config.search.dtype=float16"],
     "config field 'search.dtype': unknown value 'float16'; allowed: float32, bfloat16"),
    (["search", "--config.search.dtype=bfloat16", "--config.search.order=second_fd"],
     "search.order=second_fd needs search.dtype=float32"),
    (["search", "--config.search.dtype=bfloat16", "--config.search.strategy=random"],
     "search.dtype=bfloat16 is for the differentiable search"),
    (["search", "--config.run.kernels=im2col"],
     "config field 'run.kernels': unknown value 'im2col'; allowed: auto, native, dense, shift, grouped"),
    (["search", "--config.search.epochz=1"], "unknown config field 'search.epochz'"),
    (["search", "--config.search.epochs=x"], "must be an integer, got 'x'"),
    (["search", "--config", "nope.py"], "config file 'nope.py' does not exist"),
    (["search", "--bogus"], "unrecognized arguments: --bogus"),
    (["genotype", "not_a_genotype.json"], "neither a file nor a published name"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    argv = argv + ([f"--config.run.workdir={tmp_path}"] if argv[0] == "search" and "--bogus" not in argv else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a refused run left files behind"


def test_genotype_command_prints_json(capsys):
    assert main(["genotype", "DARTS_V2"]) == 0
    assert json.loads(capsys.readouterr().out)["normal"][0] == ["sep_conv_3x3", 0]


@pytest.mark.parametrize("command, extra", [
    ("search", ["--config.space.C=4", "--config.space.layers=1", "--config.space.nodes=2",
                "--config.space.allow_no_normal_cell=true", "--config.space.ops=none,skip_connect",
                "--config.search.epochs=1", "--config.search.max_steps_per_epoch=1", "--config.search.batch_size=8"]),
    ("train", ["--config.model.C=4", "--config.model.layers=1", "--config.model.auxiliary=false",
               "--config.train.epochs=1", "--config.train.max_steps_per_epoch=1"]),
])
def test_search_and_train_set_up_before_the_run_directory_and_load_their_data_once(command, extra, monkeypatch,
                                                                                      tmp_path, capsys):
    """The CLI runs the command's own setup (the --check path) before it makes the folder, and hands the
    loaded data to the run; a refusal found by that setup leaves no folder at all."""
    from jaxnas import data as data_lib

    calls = []
    real = data_lib.load_dataset
    monkeypatch.setattr(data_lib, "load_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    argv = [command, f"--config.run.workdir={tmp_path / 'ok'}", "--config.data.name=digits"] + extra
    assert main(argv) == 0, capsys.readouterr().err
    assert len(calls) == 1, calls
    bad = [command, f"--config.run.workdir={tmp_path / 'bad'}", "--config.data.name=digits"] + extra + \
        (["--config.search.batch_size=5000"] if command == "search" else ["--config.model.auxiliary=true"])
    assert main(bad) == 2
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
