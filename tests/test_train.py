import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxnas import config as C
from jaxnas import data, rundir
from jaxnas import genotype as G
from jaxnas import train as T
from jaxnas.cli import main
from jaxnas.spaces.darts import DartsNetwork


def test_cutout_zeroes_one_clipped_square():
    x = np.ones((50, 32, 32, 1), np.float32)
    out = data.cutout(x, 16, np.random.default_rng(0))
    zeros = (out == 0).sum(axis=(1, 2, 3))
    assert zeros.max() == 256 and zeros.min() >= 64  # 16x16 inside, at least 8x8 at a corner
    for img in out:
        ys, xs = np.nonzero(img[..., 0] == 0)
        assert ys.max() - ys.min() + 1 <= 16 and xs.max() - xs.min() + 1 <= 16
        assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == len(ys)  # one rectangle


def test_auxiliary_loss_weighting():
    net = DartsNetwork(G.DARTS_V2, 1, 10, C=4, layers=3, auxiliary=True, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    tx = optax.sgd(0.0)
    step = jax.jit(T.make_train_step(graphdef, tx, 0.4, jnp.float32))
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(4, 32, 32, 1)).astype(np.float32), "y": np.arange(4, dtype=np.int32)}
    _, _, _, m = step(params, stats, tx.init(params), batch, jax.random.key(0), jnp.float32(0.0))
    logits, aux = nnx.merge(graphdef, params, stats)(jnp.asarray(batch["x"]))
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, batch["y"]).mean()  # noqa: E731
    assert float(m["loss"]) == pytest.approx(float(ce(logits)), rel=1e-5)
    assert float(m["total_loss"]) == pytest.approx(float(ce(logits) + 0.4 * ce(aux)), rel=1e-5)


def test_tiny_retrain_beats_chance_and_eval_reproduces(tmp_path, capsys):
    cfg = C.load(None, "train")
    cfg.model.C, cfg.model.layers, cfg.train.epochs = 4, 3, 3
    cfg.run.workdir, cfg.run.name = str(tmp_path), "t"
    path = rundir.create(cfg, "train")
    result = T.run(cfg, path, log=lambda *_: None)["test"]
    assert result["accuracy"] > 0.5 and result["num_examples"] == 359  # chance is 0.1
    saved = json.load(open(os.path.join(path, "test_metrics.json")))
    assert main(["eval", path]) == 0
    again = T.evaluate_run(path, log=lambda *_: None)
    assert again["confusion_matrix"] == saved["confusion_matrix"]
    assert again["macro_f1"] == pytest.approx(saved["macro_f1"])


def test_train_bad_input(tmp_path, capsys):
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({**G.DARTS_V2.to_dict(), "normal": [["sep_conv_3x3", 7]] * 8}))
    assert main(["train", "--genotype", str(bad), f"--config.run.workdir={tmp_path}"]) == 2
    assert "takes input 7, which does not exist" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a finished train run" in capsys.readouterr().err
    assert main(["train", "--config.model.auxiliary=true", f"--config.run.workdir={tmp_path}"]) == 2
    assert "auxiliary head needs at least 5x5" in capsys.readouterr().err


def test_retraining_is_the_same_on_one_and_two_devices(tmp_path):
    results = []
    for n in (1, 2):
        cfg = C.load(None, "train")
        cfg.model.C, cfg.model.layers, cfg.train.epochs, cfg.train.max_steps_per_epoch = 4, 2, 1, 4
        cfg.run.devices = n
        out = T.run(cfg, None, log=lambda *_: None)
        results.append((out["history"][-1]["train_loss"], out["test"]["confusion_matrix"]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    assert results[0][1] == results[1][1]


def test_bf16_compute_keeps_f32_weights():
    net = DartsNetwork(G.DARTS_V2, 1, 10, C=4, layers=2, auxiliary=False, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    tx = optax.sgd(0.1)
    step = jax.jit(T.make_train_step(graphdef, tx, 0.4, jnp.bfloat16))
    batch = {"x": np.ones((4, 8, 8, 1), np.float32), "y": np.arange(4, dtype=np.int32)}
    p2, s2, _, m = step(params, stats, tx.init(params), batch, jax.random.key(0), jnp.float32(0.0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p2))
    assert np.isfinite(float(m["loss"]))
    # the network computes in bfloat16 throughout, with drop path on (a float32 drop probability once
    # promoted every cell after the first to float32)
    p16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params)
    net16 = nnx.merge(graphdef, p16, stats, copy=True)
    logits, _ = net16(jnp.asarray(batch["x"], jnp.bfloat16), jnp.float32(0.2), jax.random.key(1))
    assert logits.dtype == jnp.bfloat16


def test_a_damaged_newest_checkpoint_is_set_aside_and_retraining_resumes_to_the_same_weights(tmp_path):
    def cfg_named(name):
        cfg = C.load(None, "train")
        cfg.model.C, cfg.model.layers, cfg.train.epochs, cfg.train.max_steps_per_epoch = 4, 2, 2, 3
        cfg.run.checkpoint_every, cfg.run.workdir, cfg.run.name = 0, str(tmp_path), name
        return cfg

    ref_dir = rundir.create(cfg_named("ref"), "train")
    T.run(cfg_named("ref"), ref_dir, log=lambda *_: None)
    path = rundir.create(cfg_named("cut"), "train")
    T.run(cfg_named("cut"), path, log=lambda *_: None)
    for root, _, files in os.walk(os.path.join(path, "checkpoints", "6")):  # garbage over the newest checkpoint
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")
    logs = []
    T.run(C.for_resume(path, None, [], "train"), path, log=logs.append, resume=True)
    assert any("moved to" in m for m in logs) and any("resumed from the checkpoint at step 3" in m for m in logs)
    a, b = np.load(os.path.join(path, "weights.npz")), np.load(os.path.join(ref_dir, "weights.npz"))
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])


def test_sigterm_then_resume_gives_the_uninterrupted_weights(tmp_path):
    import signal

    from jaxnas import checkpoint
    from jaxnas.driver import Preempted

    def cfg_named(name):
        cfg = C.load(None, "train")
        cfg.model.C, cfg.model.layers, cfg.train.epochs, cfg.train.max_steps_per_epoch = 4, 2, 2, 4
        cfg.run.log_every, cfg.run.checkpoint_every = 1, 0  # epoch ends only, plus the one SIGTERM writes
        cfg.run.workdir, cfg.run.name = str(tmp_path), name
        return cfg

    ref_cfg = cfg_named("ref")
    ref_dir = rundir.create(ref_cfg, "train")
    ref = T.run(ref_cfg, ref_dir, log=lambda *_: None)

    def stop_at_step_6(msg):  # drop-path draws from the PRNG key, so the key must be restored too
        if msg.startswith("epoch 2/2 step 2/4"):
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = cfg_named("cut")
    path = rundir.create(cfg, "train")
    with pytest.raises(Preempted, match="SIGTERM: checkpoint written at step 6"):
        T.run(cfg, path, log=stop_at_step_6)
    assert not os.path.exists(os.path.join(path, "weights.npz"))
    out = T.run(C.for_resume(path, None, [], "train"), path, log=lambda *_: None, resume=True)
    assert out["test"]["confusion_matrix"] == ref["test"]["confusion_matrix"]
    assert rundir.read_jsonl(os.path.join(path, "metrics.jsonl"))[-1]["train_loss"] == ref["history"][-1]["train_loss"]
    a = np.load(os.path.join(path, "weights.npz"))
    b = np.load(os.path.join(ref_dir, "weights.npz"))
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    assert checkpoint.Checkpointer(os.path.join(path, "checkpoints")).steps() == [4, 6, 8]
