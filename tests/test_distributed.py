"""Two processes on localhost (CPU collectives) end with the alphas of one process on the same global batch."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import distributed, rundir
from jaxnas.errors import JaxnasError
from jaxnas.search import get_strategy

from test_resume import CACHE, TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def test_two_processes_agree_with_one(tmp_path):
    args = TINY + ["--config.search.epochs=1", f"--config.run.workdir={tmp_path}"]
    cfg = config_lib.apply_overrides(config_lib.load(None), args + ["--config.run.name=one", "--config.run.devices=2"])
    ref = get_strategy("darts")(cfg, rundir.create(cfg, "search"), log=lambda *_: None)

    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxnas", "search", *args, "--config.run.name=two",
         f"--config.run.compile_cache={CACHE}", f"--config.run.coordinator=127.0.0.1:{port}",
         "--config.run.num_processes=2", f"--config.run.process_id={i}", "--config.run.init_timeout=60"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 0 of 2 joined" in outs[0][0] and "2 x cpu in 2 process(es)" in outs[0][0]
    assert "epoch 1/1" in outs[0][0] and "epoch" not in outs[1][0]  # only process 0 logs
    got = rundir.read_jsonl(str(tmp_path / "two" / "alphas.jsonl"))
    want = rundir.read_jsonl(str(tmp_path / "one" / "alphas.jsonl"))
    assert len(got) == len(want) == 1
    for key in ("alphas_normal", "alphas_reduce"):
        np.testing.assert_allclose(np.asarray(got[0][key]), np.asarray(want[0][key]), rtol=0, atol=1e-6)
    g = rundir.read_jsonl(str(tmp_path / "two" / "metrics.jsonl"))[0]["genotype"]
    assert g == ref["genotype"].to_dict()


def test_settings_from_flags_environment_and_slurm(monkeypatch):
    run = config_lib.search_defaults().run
    for var in ("JAXNAS_COORDINATOR", "JAXNAS_NUM_PROCESSES", "JAXNAS_PROCESS_ID", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.settings(run) is None
    monkeypatch.setenv("JAXNAS_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("JAXNAS_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAXNAS_PROCESS_ID", "3")
    assert distributed.settings(run) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                         "process_id": 3, "initialization_timeout": 120}
    monkeypatch.setenv("JAXNAS_PROCESS_ID", "4")
    with pytest.raises(JaxnasError, match=r"process_id must be in \[0, 4\), got 4"):
        distributed.settings(run)
    for var in ("JAXNAS_COORDINATOR", "JAXNAS_NUM_PROCESSES", "JAXNAS_PROCESS_ID"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert distributed.settings(run)["cluster_detection_method"] == "slurm"
    run.coordinator = "nohost"
    with pytest.raises(JaxnasError, match="missing: num_processes, process_id"):
        distributed.settings(run)


def test_unreachable_coordinator_is_one_line_exit_2(tmp_path):
    port = _free_port()
    p = subprocess.run([sys.executable, "-m", "jaxnas", "search", f"--config.run.workdir={tmp_path}",
                        f"--config.run.coordinator=127.0.0.1:{port}", "--config.run.num_processes=2",
                        "--config.run.process_id=1", "--config.run.init_timeout=3"],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"cannot join the process group at 127.0.0.1:{port}" in p.stderr
    assert "Traceback" not in p.stderr


def test_process_count_must_divide_the_batch():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    from jaxnas import parallel

    with pytest.raises(JaxnasError, match="not divisible by the device count 2"):
        parallel.check_batch(7, mesh)
