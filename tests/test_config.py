import json

import pytest

from jaxnas import config as C
from jaxnas.errors import JaxnasError


def test_overrides_are_typed_by_the_field():
    cfg = C.apply_overrides(C.load(None), ["--config.search.epochs=3", "--config.optim.lr=0.1",
                                           "--config.space.ops=none,skip_connect", "--config.search.order=second"])
    assert cfg.search.epochs == 3 and cfg.optim.lr == 0.1 and cfg.space.ops == "none,skip_connect"
    with pytest.raises(JaxnasError, match="unknown config field 'search.epoch'; allowed: .*epochs"):
        C.apply_overrides(cfg, ["--config.search.epoch=3"])
    with pytest.raises(JaxnasError, match="'search.epochs' must be an integer, got 'three'"):
        C.apply_overrides(cfg, ["--config.search.epochs=three"])


def test_shipped_configs_load_with_darts_settings():
    first = C.load("configs/darts_cifar10.py")
    second = C.load("configs/darts_cifar10.py:second")
    assert first.search.order == "first" and second.search.order == "second"
    for cfg in (first, second):
        assert (cfg.space.C, cfg.space.layers, cfg.search.epochs, cfg.search.batch_size) == (16, 8, 50, 64)
        assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.weight_decay, cfg.optim.arch_lr) == (0.025, 0.001, 3e-4, 3e-4)
    assert C.load("configs/darts_digits_tiny.py").data.name == "digits"


def test_json_configs_are_data_and_checked(tmp_path):
    good = tmp_path / "c.json"
    good.write_text(json.dumps({"search": {"epochs": 2}, "optim": {"lr": 1}}))
    cfg = C.load(str(good))
    assert cfg.search.epochs == 2 and isinstance(cfg.optim.lr, float) and cfg.space.C == 16
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"search": {"epochs": "many"}}))
    with pytest.raises(JaxnasError, match="'search.epochs' must be int, got 'many'"):
        C.load(str(bad))
    bad.write_text(json.dumps({"serach": {}}))
    with pytest.raises(JaxnasError, match="unknown config field 'serach'"):
        C.load(str(bad))


def test_run_imports_registers_user_ops(tmp_path, monkeypatch):
    from jaxnas import ops

    (tmp_path / "my_test_ops.py").write_text(
        "from jaxnas import ops\n\n"
        "@ops.register_op('my_conv_1x1')\n"
        "def my_conv_1x1(C, stride, affine, rngs):\n"
        "    return ops.ReLUConvBN(C, C, 1, stride, 0, affine, rngs=rngs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        C.import_extensions("my_test_ops")
        assert ops.resolve_op_set("none,my_conv_1x1") == ("none", "my_conv_1x1")
    finally:
        ops.OPS.pop("my_conv_1x1", None)
    with pytest.raises(JaxnasError, match="cannot import 'no_such_module_xyz'"):
        C.import_extensions("no_such_module_xyz")


def test_a_json_config_naming_run_imports_imports_nothing(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from jaxnas.cli import main

    (tmp_path / "evil_ext.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the run folder (and a module in it) on sys.path, as the issue found
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"run": {"imports": "evil_ext"}}))
    assert main(["optimize", "--check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "never imports what a .json config names" in err and err.count("\n") == 1
    assert "evil_ext" not in sys.modules and not (tmp_path / "evil_ext.py.ran").exists()


def test_the_declared_choices_agree_with_the_modules_that_use_them():
    from jaxnas import kernels, train
    from jaxnas.optimize import study, trainer, workflow
    from jaxnas.search.bilevel import ORDERS

    assert C.CHOICES["search.order"] == ORDERS and C.CHOICES["run.kernels"] == kernels.IMPLS
    assert set(C.CHOICES["train.dtype"]) == set(train.DTYPES)
    assert C.CHOICES["optimize.metric"] == trainer.METRICS and C.CHOICES["compare.refit"] == workflow.REFITS
    assert C.CHOICES["optimize.arch"] == study.ARCH_SOURCES and C.CHOICES["optimize.pruner"] == study.PRUNERS
    assert C.CHOICES["optimize.baseline.optimizer"] == trainer.OPTIMIZERS
    assert C.CHOICES["optimize.baseline.augment"] == trainer.AUGMENTS
    from jaxnas.hyper import estimators
    from jaxnas.optimize import corrupt

    assert C.CHOICES["data.corrupt.kind"] == corrupt.KINDS and C.CHOICES["optimize.tune"] == workflow.TUNES
    assert "optimize.hyper.method" not in C.CHOICES  # a registry (jaxnas/hyper/methods), checked by reweight.check
    assert C.CHOICES["optimize.hyper.estimator"] == estimators.ESTIMATORS
    assert C.CHOICES["optimize.hyper.solver"] == estimators.SOLVERS
