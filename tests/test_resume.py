"""Exact resume: a search killed with SIGKILL, then stopped with SIGTERM, then resumed, ends
bit for bit where an uninterrupted run ends; a non-finite loss keeps the last good checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxnas import checkpoint, rundir
from jaxnas import config as config_lib
from jaxnas.errors import JaxnasError
from jaxnas.search import get_strategy

CACHE = jax.config.jax_compilation_cache_dir
TINY = ["--config.space.C=4", "--config.space.layers=1", "--config.space.allow_no_normal_cell=true",
        "--config.space.nodes=2",
        "--config.space.ops=none,skip_connect,sep_conv_3x3", "--config.search.epochs=2",
        "--config.search.batch_size=16", "--config.search.eval_batch_size=64",
        "--config.search.max_steps_per_epoch=8", "--config.run.log_every=1", "--config.run.checkpoint_every=1",
        "--config.optim.arch_lr=3e-3", "--config.run.progress=false"]


def _launch(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    return subprocess.Popen([sys.executable, "-m", "jaxnas", "search", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(path, step, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and len(rundir.read_jsonl(path)) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def _logs(path):
    strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
    return {name: [strip(r) for r in rundir.read_jsonl(os.path.join(path, name))]
            for name in ("steps.jsonl", "metrics.jsonl", "alphas.jsonl")}


def test_sigkill_then_sigterm_then_resume_is_bit_identical(tmp_path):
    # the uninterrupted reference, in this process
    cfg = config_lib.apply_overrides(config_lib.load(None), TINY + [f"--config.run.workdir={tmp_path}",
                                                                    "--config.run.name=ref"])
    ref_dir = rundir.create(cfg, "search")
    ref = get_strategy("darts")(cfg, ref_dir, log=lambda *_: None)

    args = TINY + [f"--config.run.workdir={tmp_path}", "--config.run.name=cut", f"--config.run.compile_cache={CACHE}"]
    run_dir = str(tmp_path / "cut")
    steps = os.path.join(run_dir, "steps.jsonl")
    p = _launch(args, tmp_path)
    _wait_for_step(steps, 3, p)
    p.send_signal(signal.SIGKILL)  # no chance to clean up: a checkpoint may be half written
    p.wait()

    p = _launch(["--resume", run_dir, f"--config.run.compile_cache={CACHE}"], tmp_path)
    _wait_for_step(steps, 11, p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "resumed from the checkpoint at step" in out
    assert "stopped by SIGTERM: checkpoint written at step" in err and f"--resume {run_dir}" in err

    p = _launch(["--resume", run_dir, f"--config.run.compile_cache={CACHE}"], tmp_path)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert json.load(open(os.path.join(run_dir, "genotype.json"))) == ref["genotype"].to_dict()
    got, want = _logs(run_dir), _logs(ref_dir)
    assert got == want  # every logged loss, accuracy and alpha, bit for bit
    assert len(rundir.read_jsonl(os.path.join(run_dir, "resumes.jsonl"))) == 2
    # the final checkpoint holds exactly the reference's final state
    tree, meta, step = checkpoint.Checkpointer(os.path.join(run_dir, "checkpoints")).restore(
        jax.device_get(ref["state"]))
    assert step == 16
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(jax.device_get(ref["state"]))):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # the blow-up shows first in the loss or in the gradient norm, depending on the BN's numerics
    cfg = config_lib.apply_overrides(config_lib.load(None), TINY + [
        f"--config.run.workdir={tmp_path}", "--config.run.name=nan", "--config.optim.lr=1e12",
        "--config.optim.grad_clip=1e30"])
    path = rundir.create(cfg, "search")
    with pytest.raises(JaxnasError, match=r"non-finite .*(train_loss|grad_norm)=(nan|inf).* at step (\d+)") as info:
        get_strategy("darts")(cfg, path, log=lambda *_: None)
    bad_step = int(str(info.value).split(" at step ")[1].split(";")[0])
    ck = checkpoint.Checkpointer(os.path.join(path, "checkpoints"), log=lambda *_: None)
    assert ck.steps() and max(ck.steps()) < bad_step
    tree, _, _ = ck.restore(ck_template(cfg))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


def ck_template(cfg):
    from flax import nnx

    from jaxnas import data as data_lib
    from jaxnas.optim import alpha_optimizer, epoch_cosine_lr, weight_optimizer
    from jaxnas.search.bilevel import init_state
    from jaxnas.spaces import build_supernet

    ds = data_lib.load_dataset(cfg.data.name)
    model = build_supernet(cfg.space, ds.image_shape, ds.num_classes, nnx.Rngs(0))
    sched = epoch_cosine_lr(0.1, 0.0, 1, 1)
    return jax.device_get(init_state(model, weight_optimizer(cfg.optim, sched), alpha_optimizer(cfg.optim))[1])


def test_resume_refuses_a_changed_config_or_a_non_run(tmp_path):
    from jaxnas.cli import main

    cfg = config_lib.apply_overrides(config_lib.load(None), [f"--config.run.workdir={tmp_path}",
                                                             "--config.run.name=r"])
    rundir.create(cfg, "search")
    with pytest.raises(JaxnasError, match=r"search.epochs: run has 6, command line gives 9"):
        config_lib.for_resume(str(tmp_path / "r"), None, ["--config.search.epochs=9"], "search")
    assert config_lib.for_resume(str(tmp_path / "r"), None, ["--config.run.log_every=1"], "search").run.log_every == 1
    with pytest.raises(JaxnasError, match="is a search run, not a train run"):
        config_lib.for_resume(str(tmp_path / "r"), None, [], "train")
    assert main(["search", "--resume", str(tmp_path / "nothing")]) == 2


def test_resume_before_the_first_checkpoint_starts_over_with_clean_logs(tmp_path):
    def cfg_named(name):
        return config_lib.apply_overrides(config_lib.load(None), TINY + [
            "--config.search.epochs=1", "--config.search.max_steps_per_epoch=3", "--config.run.checkpoint_every=0",
            f"--config.run.workdir={tmp_path}", f"--config.run.name={name}"])

    ref_cfg = cfg_named("ref")
    ref_dir = rundir.create(ref_cfg, "search")
    get_strategy("darts")(ref_cfg, ref_dir, log=lambda *_: None)
    cfg = cfg_named("cut")
    path = rundir.create(cfg, "search")
    # what a run killed during its first epoch leaves: log lines, no checkpoint yet
    rundir.append_jsonl(os.path.join(path, "steps.jsonl"), {"epoch": 1, "step": 1, "train_loss": 9.0})
    logs = []
    get_strategy("darts")(cfg, path, log=logs.append, resume=True)
    assert any("no checkpoint" in m for m in logs)
    assert _logs(path) == _logs(ref_dir)


def _tiny_run(tmp_path, name, **over):
    args = [a for a in TINY if "checkpoint_every" not in a and "max_steps" not in a] + [
        "--config.run.checkpoint_every=0", "--config.search.max_steps_per_epoch=3",
        f"--config.run.workdir={tmp_path}", f"--config.run.name={name}"]
    cfg = config_lib.apply_overrides(config_lib.load(None), args)
    path = rundir.create(cfg, "search")
    return cfg, path, get_strategy("darts")(cfg, path, log=lambda *_: None)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_resumed_search_ends_as_an_uninterrupted_one(tmp_path):
    _, _, ref = _tiny_run(tmp_path, "ref")
    _, path, _ = _tiny_run(tmp_path, "cut")
    step_dir = os.path.join(path, "checkpoints", "6")
    for root, _, files in os.walk(step_dir):  # truncate every file of the newest checkpoint (a full disk)
        for f in files:
            with open(os.path.join(root, f), "r+b") as fh:
                fh.truncate(os.path.getsize(os.path.join(root, f)) // 3)
    logs = []
    out = get_strategy("darts")(config_lib.for_resume(path, None, [], "search"), path, log=logs.append, resume=True)
    assert any("moved to" in m for m in logs) and any("resumed from the checkpoint at step 3" in m for m in logs)
    assert os.path.isdir(os.path.join(path, "checkpoints", "damaged-6"))
    assert checkpoint.Checkpointer(os.path.join(path, "checkpoints")).steps() == [3, 6]
    for a, b in zip(jax.tree.leaves(ref["state"].alphas), jax.tree.leaves(out["state"].alphas)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_hand_edited_run_config_is_an_error_naming_the_field_never_a_restart(tmp_path):
    _, path, _ = _tiny_run(tmp_path, "edited")
    cfg_path = os.path.join(path, "config.json")
    saved = json.load(open(cfg_path))
    saved["search"]["epochs"] = 5
    json.dump(saved, open(cfg_path, "w"))
    with pytest.raises(JaxnasError, match="search.epochs: checkpoint 6 has 2, the config now 5"):
        get_strategy("darts")(config_lib.for_resume(path, None, [], "search"), path, log=lambda *_: None, resume=True)
    assert checkpoint.Checkpointer(os.path.join(path, "checkpoints")).steps() == [3, 6]  # nothing replaced


def test_a_loop_that_finishes_early_ends_its_epoch_there_and_saves_once():
    # driver.run with Loop.finished (a discrete search's budget): the step that spends the budget ends
    # the run as if it ended its epoch: logged, end_epoch and one save at that step, nothing after
    from jaxnas import driver, writers

    calls = []

    class Budgeted(driver.Loop):
        epochs, steps, log_every, checkpoint_every, catch_signals = 2, 10, 4, 0, False

        def __init__(self):
            self.progress, self.writer, self.n = driver.Progress(20, 0, "", enabled=False), writers.MetricWriter(None), 0

        def step(self, epoch, i):
            self.n += 1
            calls.append(("step", epoch, i))
            return {}

        def finished(self):
            return self.n == 13

        def log_step(self, epoch, i, gstep, metrics):
            calls.append(("log", gstep))

        def end_epoch(self, epoch, gstep, seconds):
            calls.append(("end", epoch, gstep))

        def save(self, gstep):
            calls.append(("save", gstep))

    driver.run(Budgeted())
    assert [c for c in calls if c[0] != "step"] == [("log", 4), ("log", 8), ("log", 10), ("end", 0, 10),
                                                    ("save", 10), ("log", 13), ("end", 1, 13), ("save", 13)]
    assert calls.count(("step", 1, 2)) == 1 and ("step", 1, 3) not in calls
