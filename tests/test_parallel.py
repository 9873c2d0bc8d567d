import jax
import numpy as np
from flax import nnx

from jaxnas import parallel
from jaxnas import optim
from jaxnas.search import bilevel as B
from jaxnas.spaces import build_supernet

from conftest import tiny_cfg


def _run_on(n_devices: int, order: str):
    cfg = tiny_cfg(order=order)
    model = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0))
    schedule = optim.epoch_cosine_lr(cfg.optim.lr, cfg.optim.lr_min, 4, 5)
    w_tx, a_tx = optim.weight_optimizer(cfg.optim, schedule), optim.alpha_optimizer(cfg.optim)
    graphdef, state = B.init_state(model, w_tx, a_tx)
    mesh = parallel.make_mesh(n_devices)
    step = parallel.jit_data_parallel(B.make_search_step(graphdef, w_tx, a_tx, schedule, order, cfg.optim), mesh, 2)
    state = parallel.put_replicated(state, mesh)
    rng = np.random.default_rng(0)
    for _ in range(3):
        tb, vb = ({"x": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
                   "y": rng.integers(0, 10, 16).astype(np.int32)} for _ in range(2))
        state, _ = step(state, parallel.put_batch(tb, mesh), parallel.put_batch(vb, mesh))
    assert state.params["classifier"]["kernel"][...].sharding.num_devices == n_devices
    return jax.device_get(state)


def test_one_two_and_four_devices_give_the_same_search_state():
    assert jax.device_count() >= 4
    ref = _run_on(1, "first")
    for n in (2, 4):
        other = _run_on(n, "first")
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(other)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # the alphas moved, so the comparison is not of untouched initial values
    cfg = tiny_cfg()
    init = build_supernet(cfg.space, (8, 8, 1), 10, nnx.Rngs(0)).alphas_normal[...]
    assert np.abs(np.asarray(ref.alphas["alphas_normal"][...]) - np.asarray(init)).mean() > 1e-4


def test_second_order_on_two_devices_matches_one():
    ref, two = _run_on(1, "second"), _run_on(2, "second")
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(two)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_batch_must_divide_over_devices():
    import pytest

    from jaxnas.errors import JaxnasError

    with pytest.raises(JaxnasError, match="batch size 6 is not divisible by the device count 4"):
        parallel.check_batch(6, parallel.make_mesh(4))


class _Device:
    def __init__(self, platform):
        self.platform = platform


class _Mesh:
    def __init__(self, platform):
        self.devices = np.array([_Device(platform)], dtype=object)


def test_compiler_options_turn_the_fusion_autotuner_off_on_gpus_only():
    off = {"xla_gpu_experimental_enable_fusion_autotuner": False}
    assert parallel.compiler_options(_Mesh("gpu")) == off
    assert parallel.compiler_options(_Mesh("cuda")) == off
    assert parallel.compiler_options(_Mesh("gpu"), fusion_autotune=True) is None
    assert parallel.compiler_options(_Mesh("tpu")) is None and parallel.compiler_options(_Mesh("cpu")) is None
    # this jax's XLA knows the option: a step jitted with it compiles and runs (here on the CPU)
    f = jax.jit(lambda x: x * 2, compiler_options=off)
    np.testing.assert_allclose(f(np.ones(3, np.float32)), 2.0)
