"""Test setup: 4 fake CPU devices (multi-device tests) and a shared compilation cache."""

import builtins
import os
import shutil
import subprocess

os.environ.setdefault("JAXNAS_HUGE_PAGES", "0")  # CLI subprocesses start once (tests/test_hugepages.py checks the restart)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ["XLA_FLAGS"] += "" if "device_count" in os.environ["XLA_FLAGS"] else \
    " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import ml_collections  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAXNAS_TEST_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from jaxnas import config as config_lib  # noqa: E402


def made_up_table(path: str, ops=None, seed: int = 0, noise: float = 0.2) -> str:
    """``experiments/made_up_table.py``'s invented NB-201-style table at ``path`` (not benchmark data)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "made_up_table", os.path.join(os.path.dirname(__file__), "..", "experiments", "made_up_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write(path, *(() if ops is None else (ops,)), seed=seed, noise=noise)


def tiny_cfg(**search) -> ml_collections.ConfigDict:
    """1 cell of 2 nodes over 3 ops on the 8x8 digits: compiles in seconds."""
    c = config_lib.search_defaults()
    c.data.name = "digits"
    c.space.C, c.space.layers, c.space.nodes = 4, 1, 2
    c.space.allow_no_normal_cell = True  # one reduction cell: the supernet compiles in seconds
    c.space.ops = "none,skip_connect,sep_conv_3x3"
    c.search.epochs, c.search.batch_size, c.search.eval_batch_size = 2, 16, 64
    c.run.log_every = 1000
    c.optim.arch_lr = 3e-3
    for k, v in search.items():
        c.search[k] = v
    return c


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(path)`` makes a folder or file unwritable, for root too: chmod, else the immutable
    flag (``chattr +i``), else (a file system without it) ``open`` refusing writes under ``path``."""
    undo = []

    def make(path):
        path = str(path)
        mode = os.stat(path).st_mode & 0o777
        os.chmod(path, 0o500 if os.path.isdir(path) else 0o400)
        undo.append(lambda: os.chmod(path, mode))
        if not os.access(path, os.W_OK):
            return
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0:
            undo.append(lambda: subprocess.run(["chattr", "-i", path], capture_output=True))
            return
        real_open = builtins.open

        def guarded(file, mode="r", *args, **kwargs):
            target = os.path.abspath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
            if any(c in mode for c in "wax+") and (target == path or target.startswith(path + os.sep)):
                raise PermissionError(13, "Permission denied", target)
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded)

    yield make
    for u in reversed(undo):
        u()


@pytest.fixture
def tiny():
    return tiny_cfg()


def _accelerator_plugins_missing() -> list[str]:
    from jaxnas import targets

    return sorted({f"NO {t.upper()} COMPILE: {why}" for t in ("h200", "a100", "tpu-v5e")
                   if (why := targets.available(t))})


# The accelerator compiles (test_targets_compile.py) need the plugins: without any of them (the main
# suite's venv) its tests are deselected and the summary says so; .ci/accel sets JAXNAS_ACCEL_REQUIRED=1,
# and there (or wherever a plugin is installed) it is collected and a missing plugin fails.
_MISSING = _accelerator_plugins_missing()
_LEAVE_OUT = len(_MISSING) == 3 and not os.environ.get("JAXNAS_ACCEL_REQUIRED")


def pytest_collection_modifyitems(config, items):
    if _LEAVE_OUT:
        out = [i for i in items if i.nodeid.split("::")[0].endswith("test_targets_compile.py")]
        if out:
            config.hook.pytest_deselected(items=out)
            items[:] = [i for i in items if i not in out]


def pytest_terminal_summary(terminalreporter):
    """Say in capitals when the accelerator compiles were left out for want of a plugin."""
    if _LEAVE_OUT:
        terminalreporter.write_sep("!", "ACCELERATOR COMPILES NOT RUN", red=True, bold=True)
        for reason in _MISSING:
            terminalreporter.write_line(reason, red=True)
        terminalreporter.write_line("run .ci/accel (Python >= 3.12, jax[cuda12], jax[tpu]) to compile them", red=True)
