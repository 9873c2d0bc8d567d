import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import native


def test_kernel_builds_and_registers_on_cpu():
    # the machines this project runs its CI on have a C++ compiler: the kernel must build there
    assert native.available()
    assert any(p.name.startswith("depthwise-") for p in native.cache_dir().iterdir())


@pytest.mark.parametrize("N,H,W,C,R,K,stride,dilation,padding", [
    (2, 7, 6, 3, 2, 3, 1, 1, 1),     # two edges sharing one input, channels below one vector block
    (2, 8, 8, 20, 1, 5, 2, 1, 2),    # one full 16-channel block plus a tail, stride 2
    (3, 9, 7, 16, 3, 3, 2, 2, 2),    # dilated and strided, three edges
    (1, 6, 6, 5, 1, 5, 1, 2, 4),     # DARTS's dil_conv_5x5 geometry
    (2, 5, 5, 32, 1, 3, 1, 1, 0),    # no padding
    (2, 12, 11, 16, 2, 5, 1, 2, 4),  # dil_conv_5x5 at stride 1 on full blocks: interior tiles and borders
    (1, 10, 9, 32, 4, 3, 1, 1, 1),   # sep_conv_3x3's first conv for four edges
])
def test_depthwise_conv_equals_xla_grouped_conv_in_values_and_gradients(N, H, W, C, R, K, stride, dilation, padding):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (N, H, W, C))
    k = jax.random.normal(kk, (K, K, R * C))
    y = native.depthwise_conv(x, k, stride, dilation, padding)
    ref = native.reference(x, k, stride, dilation, padding)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, y.shape)

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(fn(x, k, stride, dilation, padding) * g), (0, 1))(x, k)

    for a, b in zip(jax.jit(lambda: grads(native.depthwise_conv))(), grads(native.reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_hand_computed_case_and_repeatable_results():
    # a 3x3 kernel of ones on a 4x4 ramp: each output is the sum of its zero-padded 3x3 window;
    # output channel 1 reads input channel 0 again (R = 2) with the kernel doubled
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    k = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))], -1).astype(np.float32)
    xp = np.pad(x[0, :, :, 0], 1)
    window = np.array([[xp[i:i + 3, j:j + 3].sum() for j in range(4)] for i in range(4)])
    y = np.asarray(native.depthwise_conv(jnp.asarray(x), jnp.asarray(k), 1, 1, 1))
    np.testing.assert_array_equal(y[0, :, :, 0], window)
    np.testing.assert_array_equal(y[0, :, :, 1], 2 * window)
    # the kernel gradient sums per-sample parts in a fixed order: bitwise the same on every call
    xs = jax.random.normal(jax.random.key(1), (8, 8, 8, 16))
    ks = jax.random.normal(jax.random.key(2), (3, 3, 32))
    f = jax.jit(jax.grad(lambda k: jnp.sum(native.depthwise_conv(xs, k, 1, 1, 1) ** 2)))
    np.testing.assert_array_equal(f(ks), f(ks))


def test_disabled_kernel_is_reported_unavailable(monkeypatch):
    monkeypatch.setenv("JAXNAS_NATIVE", "0")
    native._load.cache_clear()
    try:
        assert not native.available()
    finally:
        monkeypatch.delenv("JAXNAS_NATIVE")
        native._load.cache_clear()
    assert native.available()


def test_second_derivatives_equal_xla_grouped_conv():
    # DARTS's exact second-order step differentiates through a weight gradient: grad of grad
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 4))
    k = jax.random.normal(jax.random.key(4), (3, 3, 8))
    v = jax.random.normal(jax.random.key(5), (2, 3, 3, 8))

    def outer(fn):
        def inner(x, k):  # a scalar of the first derivatives, differentiated again
            gx, gk = jax.grad(lambda x, k: jnp.sum(jnp.tanh(fn(x, k, 2, 1, 1)) * v), (0, 1))(x, k)
            return jnp.sum(gx ** 2) + jnp.sum(jnp.sin(gk))
        return jax.grad(inner, (0, 1))(x, k)

    for a, b in zip(outer(native.depthwise_conv), outer(native.reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_materialize_is_the_identity_in_values_and_gradients():
    x = jax.random.normal(jax.random.key(6), (3, 4, 5))
    f = jax.jit(lambda x: native.materialize(x * 2.0) ** 2)
    np.testing.assert_array_equal(f(x), (x * 2.0) ** 2)
    np.testing.assert_allclose(jax.grad(lambda x: f(x).sum())(x), 8.0 * x, rtol=1e-6)
    assert native.materialize(jnp.arange(4, dtype=jnp.int32)).tolist() == [0, 1, 2, 3]
