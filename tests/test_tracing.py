import glob
import gzip
import json
import os
import re

import pytest

from jaxnas import config as config_lib
from jaxnas import rundir
from jaxnas.errors import JaxnasError
from jaxnas.search import get_strategy
from jaxnas.tracing import StepTrace

from conftest import tiny_cfg


def step_executions(path: str) -> int:
    """How many times the jitted search step ran in the trace (its host-side Execute events)."""
    (trace,) = glob.glob(os.path.join(path, "profile", "plugins", "profile", "*", "*.trace.json.gz"))
    events = json.load(gzip.open(trace))["traceEvents"]
    return sum(1 for e in events if e.get("ph") == "X" and re.fullmatch(r"\S*Execute \(jit_step\)", e.get("name", "")))


def test_a_search_traces_exactly_its_window_of_steps(tmp_path):
    cfg = tiny_cfg(epochs=1, batch_size=32, max_steps_per_epoch=6)
    cfg.run.workdir, cfg.run.name = str(tmp_path), "run"
    cfg.run.profile_step, cfg.run.profile_steps = 3, 2
    path = rundir.create(cfg, "search")
    logs = []
    get_strategy("darts")(cfg, path, log=logs.append)
    assert step_executions(path) == 2  # steps 3 and 4 of 6, not the compiling first nor the others
    assert glob.glob(os.path.join(path, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    assert any(line.startswith("profile of steps 3-4 written to") for line in logs)


def test_a_window_the_run_never_reaches_is_logged_and_nothing_is_written(tmp_path):
    logs = []
    trace = StepTrace(50, 3, str(tmp_path), log=logs.append)
    for gstep in range(1, 11):
        trace.before(gstep)
        trace.after(gstep, None)
    trace.close()
    assert not os.path.exists(os.path.join(tmp_path, "profile"))
    assert logs == ["run.profile_step=50: this run did not go through that step, no trace written"]


def test_profiling_needs_a_run_directory_and_a_loop_that_has_steps():
    with pytest.raises(JaxnasError, match="run.profile_step=2 needs a run directory"):
        StepTrace(2, 1, None)
    for cfg, what in ((config_lib.optimize_defaults(), "jaxnas optimize"),
                      (tiny_cfg(strategy="random"), "search.strategy='random'")):
        with pytest.raises(JaxnasError, match=re.escape(f"not {what}")):
            config_lib.apply_overrides(cfg, ["run.profile_step=5"])
    with pytest.raises(JaxnasError, match="'run.profile_steps' must be >= 1, got 0"):
        config_lib.apply_overrides(tiny_cfg(), ["run.profile_step=5", "run.profile_steps=0"])
