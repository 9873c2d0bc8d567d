import json
import os

import numpy as np

from jaxnas import genotype as G
from jaxnas import rundir
from jaxnas.search import get_strategy

from conftest import tiny_cfg


def test_tiny_search_end_to_end(tmp_path):
    cfg = tiny_cfg(epochs=4, batch_size=32)
    cfg.run.log_every = 2
    cfg.run.workdir, cfg.run.name = str(tmp_path), "run"
    path = rundir.create(cfg, "search")
    result = get_strategy("darts")(cfg, path, log=lambda *_: None)
    g = G.validate(result["genotype"])
    assert g.nodes == 2 and all(op in ("skip_connect", "sep_conv_3x3") for op, _ in g.normal + g.reduce)
    hist = result["history"]
    assert hist[-1]["mean_train_loss"] < 0.8 * hist[0]["mean_train_loss"]
    assert hist[-1]["search_val_acc"] > 0.3  # 10 classes: chance is 0.1
    # the run directory holds everything needed to reproduce and inspect the run
    assert G.load(os.path.join(path, "genotype.json")) == g
    meta = json.load(open(os.path.join(path, "meta.json")))
    assert meta["seed"] == 2 and meta["device_count"] >= 1 and "jax" in meta["versions"]
    assert json.load(open(os.path.join(path, "config.json")))["search"]["epochs"] == 4
    alphas = rundir.read_jsonl(os.path.join(path, "alphas.jsonl"))
    assert len(alphas) == 4 and np.asarray(alphas[-1]["alphas_normal_softmax"]).shape == (5, 3)
    np.testing.assert_allclose(np.asarray(alphas[-1]["alphas_normal_softmax"]).sum(-1), 1.0, rtol=1e-5)
    assert len(rundir.read_jsonl(os.path.join(path, "metrics.jsonl"))) == 4


def test_finite_guard_checks_one_step_late_and_names_step_and_quantity():
    import pytest

    from jaxnas.errors import JaxnasError
    from jaxnas.loop import FiniteGuard

    guard = FiniteGuard()
    guard.push(6, {"train_loss": 1.0, "alpha_grad_norm": 2.0})
    guard.push(7, {"train_loss": 1.0, "alpha_grad_norm": float("inf")})  # checks step 6 only
    with pytest.raises(JaxnasError, match=r"non-finite alpha_grad_norm=inf at step 7"):
        guard.flush()
    assert guard.flush() is None


def test_darts_on_the_nb201_supernet_and_its_plots(tmp_path):
    from jaxnas import plot
    from jaxnas.spaces import nb201

    cfg = tiny_cfg(epochs=2, batch_size=32, max_steps_per_epoch=4)
    cfg.space.name, cfg.space.ops, cfg.space.C, cfg.space.cells_per_stage = "nb201", "none,nor_conv_3x3", 4, 1
    cfg.run.workdir, cfg.run.name = str(tmp_path), "nb"
    path = rundir.create(cfg, "search")
    result = get_strategy("darts")(cfg, path, log=lambda *_: None)
    arch = result["genotype"]
    assert isinstance(arch, nb201.NB201Arch)
    saved = json.load(open(os.path.join(path, "genotype.json")))
    assert saved["arch"] == arch.to_str() and saved["index"] == arch.index
    last = rundir.read_jsonl(os.path.join(path, "alphas.jsonl"))[-1]
    assert np.asarray(last["alphas"]).shape == (6, 2) and last["ops"] == ["none", "nor_conv_3x3"]
    # argmax per edge of the saved alphas is the architecture
    assert tuple(last["ops"][i] for i in np.asarray(last["alphas"]).argmax(-1)) == arch.ops
    names = sorted(os.path.basename(p) for p in plot.plot_run(path))
    assert names == ["alphas.png", "alphas.svg", "cell.png", "cell.svg", "curves.png", "curves.svg"]
