"""Every jaxnas step compiles for each accelerator target, without the accelerator.

Each compile runs in its own process (``python -m jaxnas.targets``): a ``Check failed`` inside XLA
is a fatal abort that would kill pytest, so it becomes this test's failure, named by target and
step. The plugins come from the ``accel`` extra (``jax[cuda12]``, ``jax[tpu]``), which needs
Python >= 3.12 for the newest jax; ``.ci/accel`` builds that environment and runs this file.
Without the plugins (the main suite's Python 3.11 venv) this file is not collected and the summary says
so in capitals (tests/conftest.py); where it is collected, a missing plugin is a failure.
"""

import json
import os
import subprocess
import sys

import pytest

from jaxnas import targets
from jaxnas.targets import steps

CI_TARGETS = ("h200", "a100", "tpu-v5e")  # h100 is h200's sm_90 with less memory (python -m jaxnas.targets)
MISSING = {t: targets.available(t) for t in CI_TARGETS}
TIMEOUT = 900
# Every step for sm_90; for sm_80 and TPU the steps that differ in their programs' structure: each order
# in both spaces' first order, the methods that change the mixed op itself (partial channels, hard
# sampling), retraining, the optimize trainer, L2RW's step and a hypergradient update, and the
# first-order search and retraining in bfloat16, and the first order's passes as one loop.
# JAXNAS_ACCEL_FULL=1 compiles every step for each.
FULL = os.environ.get("JAXNAS_ACCEL_FULL", "") not in ("", "0")
SUBSET = {"search-darts-first", "search-darts-second", "search-darts-second_fd", "search-darts-single",
          "search-nb201-first", "search-darts-pcdarts", "search-darts-gdas", "retrain", "optimize",
          "optimize-l2rw", "optimize-hypergrad", "search-darts-first-bfloat16", "retrain-bfloat16",
          "search-darts-first-loop"}


def cases():
    for target in CI_TARGETS:
        for spec in steps.every_step():
            if FULL or target == "h200" or steps.step_id(spec) in SUBSET:
                yield pytest.param(target, spec, id=f"{target}-{steps.step_id(spec)}")


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the suite's 4 fake CPU devices are not the target's
    return env


def compile_step(target: str, spec: dict, devices: int = 1, hlo: str = "") -> dict:
    args = [sys.executable, "-m", "jaxnas.targets", "--target", target, "--devices", str(devices)]
    for key, value in spec.items():
        args += [f"--{key}", str(value)]
    if hlo:
        args += ["--hlo", hlo]
    name = f"{steps.step_id(spec)} for {target}"
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"compiling {name} took over {TIMEOUT} s")
    tail = "\n".join(out.stderr.strip().splitlines()[-15:])
    if out.returncode < 0:
        pytest.fail(f"XLA aborted (signal {-out.returncode}) compiling {name}:\n{tail}")
    assert out.returncode == 0, f"compiling {name} exited {out.returncode}:\n{tail}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _skip_missing(target: str):
    """Collected means compiles were asked for (tests/conftest.py): a missing plugin fails the test."""
    assert not MISSING[target], f"cannot compile for {target}: {MISSING[target]}"


@pytest.mark.parametrize("target,spec", list(cases()))
def test_step_compiles(target, spec):
    _skip_missing(target)
    report = compile_step(target, spec)
    assert report["target"] == target and report["gflops"] > 0 and report["memory_gb"] > 0
    assert report["kernels"] in ("dense", "shift", "grouped")  # an XLA form: the CPU kernels never leave the CPU
    if targets.get(target).platform == "cuda":
        assert any(k.startswith("__cudnn$conv") for k in report["library_calls"]), report["library_calls"]


@pytest.mark.parametrize("target", ["h200", "tpu-v5e"])
def test_data_parallel_step_splits_the_batch_and_all_reduces(target, tmp_path):
    """On 2 devices at 8 images each, every device holds the same arguments as on one (state
    replicated, batch split) and the program all-reduces the gradients."""
    _skip_missing(target)
    spec = dict(kind="search", space="darts", order="first")
    one = compile_step(target, spec, 1)
    hlo = tmp_path / "two.hlo"
    two = compile_step(target, spec, 2, hlo=str(hlo))
    assert two["devices"] == 2 and two["argument_gb"] == one["argument_gb"]
    text = hlo.read_text()
    assert "all-reduce" in text or "all-reduce-start" in text


@pytest.mark.parametrize("target", CI_TARGETS)
def test_report_counts_a_matmul_exactly(target):
    """A hand-worked program: x (256, 512) @ w (512, 128) split over rows on 2 devices is
    2*256*512*128 FLOPs, half a device; each device holds half of x and all of w."""
    _skip_missing(target)
    code = f"""
import json
from jaxnas import targets
targets.prepare_environment()
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
m = targets.mesh({target!r}, 2)
x = jax.ShapeDtypeStruct((256, 512), jnp.float32, sharding=NamedSharding(m, P("data")))
w = jax.ShapeDtypeStruct((512, 128), jnp.float32, sharding=NamedSharding(m, P()))
f = jax.jit(lambda x, w: x @ w, out_shardings=NamedSharding(m, P("data")))
r = targets.compile(f, (x, w), {target!r}, 2)
print(json.dumps([r.flops, r.argument_bytes, r.output_bytes]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert out.returncode == 0, out.stderr[-2000:]
    flops, arg, res = json.loads(out.stdout.strip().splitlines()[-1])
    assert flops == 2 * 256 * 512 * 128 / 2
    assert arg == 4 * (128 * 512 + 512 * 128)
    assert res == 4 * 128 * 128


def test_every_ci_target_can_be_compiled_for_here():
    assert MISSING == {t: None for t in CI_TARGETS}


@pytest.mark.parametrize("target", ["h200", "a100"])
def test_per_edge_separable_blocks_compile_as_grouped_convolutions(target, tmp_path):
    """Off the CPU the edges run stage by stage (``edges.SourceEdges.fuse``): each source state's
    per-edge second separable blocks are one grouped convolution a kernel size (E groups), which
    cuDNN runs as such. (TPU's compiler rewrites grouped convolutions, so its compiled program
    does not show them.)"""
    _skip_missing(target)
    hlo = tmp_path / "step.hlo"
    compile_step(target, dict(kind="search", space="darts", order="first"), hlo=str(hlo))
    text = hlo.read_text()
    assert "feature_group_count=2" in text  # the 2-edge source states of the test-size reduction cell
