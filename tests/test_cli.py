import json

import pytest

from jaxnas.cli import main


@pytest.mark.parametrize("argv, message", [
    (["search", "--config.space.ops=none,conv_7x7"], "unknown op 'conv_7x7'; allowed: none, max_pool_3x3"),
    (["search", "--config.data.name=imagenet9"], "unknown dataset 'imagenet9'"),
    (["search", "--config.space.name=nb999"], "unknown space 'nb999'; allowed: darts"),
    (["search", "--config.search.order=third"],
     "config field 'search.order': unknown value 'third'; allowed: first, second, second_fd, single"),
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
