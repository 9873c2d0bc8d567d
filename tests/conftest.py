"""Test setup: 4 fake CPU devices (multi-device tests) and a shared compilation cache."""

import os

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
def tiny():
    return tiny_cfg()
