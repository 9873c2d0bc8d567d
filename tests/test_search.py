import json
import os

import numpy as np

from jaxnas import genotype as G
from jaxnas import rundir
from jaxnas.search import get_strategy

from conftest import made_up_table, tiny_cfg


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
    # TensorBoard holds the same per-epoch numbers, at the same steps
    tb = read_tensorboard(os.path.join(path, "tb"))
    metrics = rundir.read_jsonl(os.path.join(path, "metrics.jsonl"))
    assert [(s, round(v, 5)) for s, v in tb["metrics/search_val_acc"]] == \
        [(r["step"], round(r["search_val_acc"], 5)) for r in metrics]
    assert len(tb["alpha_softmax/alphas_normal/e4/sep_conv_3x3"]) == 4


def test_a_bfloat16_search_learns_and_records_its_dtype(tmp_path):
    cfg = tiny_cfg(epochs=4, batch_size=32, dtype="bfloat16")
    cfg.run.workdir, cfg.run.name = str(tmp_path), "run"
    path = rundir.create(cfg, "search")
    result = get_strategy("darts")(cfg, path, log=lambda *_: None)
    hist = result["history"]
    assert hist[-1]["mean_train_loss"] < 0.85 * hist[0]["mean_train_loss"] and hist[-1]["search_val_acc"] > 0.3
    assert json.load(open(os.path.join(path, "config.json")))["search"]["dtype"] == "bfloat16"
    alphas = rundir.read_jsonl(os.path.join(path, "alphas.jsonl"))
    np.testing.assert_allclose(np.asarray(alphas[-1]["alphas_normal_softmax"]).sum(-1), 1.0, rtol=1e-5)


def read_tensorboard(folder: str) -> dict:
    """{tag: [(step, value), ...]} from the event files in ``folder`` (TFRecord framing, Event protos)."""
    import glob
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            i += 16 + length
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_finite_guard_checks_one_step_late_and_names_step_and_quantity():
    import pytest

    from jaxnas.errors import JaxnasError
    from jaxnas.driver import FiniteGuard

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
    cfg.evaluator.table = made_up_table(str(tmp_path / "t.csv"), ("none", "nor_conv_3x3"))
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
    # the found cell looked up in the (here made-up) table, as the benchmark reports DARTS
    rows = {r.split(",")[0]: r.split(",")[3] for r in open(tmp_path / "t.csv").read().split()[1:]}
    assert json.load(open(os.path.join(path, "result.json")))["test"]["accuracy"] == float(rows[arch.to_str()])
    names = sorted(os.path.basename(p) for p in plot.plot_run(path))
    assert names == ["alphas.png", "alphas.svg", "cell.png", "cell.svg", "curves.png", "curves.svg"]
