import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.kernels import build, native, reference


def test_kernel_builds_and_registers_on_cpu():
    # the machines this project runs its CI on have a C++ compiler: the kernel must build there
    assert build.available()
    assert any(p.name.startswith("kernels-") for p in build.cache_dir().iterdir())


@pytest.mark.parametrize("N,H,W,C,R,K,stride,dilation,padding", [
    (2, 7, 6, 3, 2, 3, 1, 1, 1),     # two edges sharing one input, channels below one vector block
    (2, 8, 8, 20, 1, 5, 2, 1, 2),    # one full 16-channel block plus a tail, stride 2
    (3, 9, 7, 16, 3, 3, 2, 2, 2),    # dilated and strided, three edges
    (1, 6, 6, 5, 1, 5, 1, 2, 4),     # DARTS's dil_conv_5x5 geometry
    (2, 5, 5, 32, 1, 3, 1, 1, 0),    # no padding
    (2, 12, 11, 16, 2, 5, 1, 2, 4),  # dil_conv_5x5 at stride 1 on full blocks: interior tiles and borders
    (1, 10, 9, 32, 4, 3, 1, 1, 1),   # sep_conv_3x3's first conv for four edges
    (2, 7, 8, 13, 2, 3, 1, 1, 1),    # 13 channels: an 8- and a 4-float vector and a scalar (AVX-512)
    (2, 6, 6, 4, 3, 5, 1, 2, 4),     # PC-DARTS's 4 channels an op (C=16, K=4): one 4-float vector
])
def test_depthwise_conv_equals_xla_grouped_conv_in_values_and_gradients(N, H, W, C, R, K, stride, dilation, padding):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (N, H, W, C))
    k = jax.random.normal(kk, (K, K, R * C))
    y = native.depthwise_conv(x, k, stride, dilation, padding)
    ref = reference.depthwise_conv(x, k, stride, dilation, padding)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, y.shape)

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(fn(x, k, stride, dilation, padding) * g), (0, 1))(x, k)

    for a, b in zip(jax.jit(lambda: grads(native.depthwise_conv))(), grads(reference.depthwise_conv)):
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
    build._load.cache_clear()
    try:
        assert not build.available()
    finally:
        monkeypatch.delenv("JAXNAS_NATIVE")
        build._load.cache_clear()
    assert build.available()


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

    for a, b in zip(outer(native.depthwise_conv), outer(reference.depthwise_conv)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_materialize_is_the_identity_in_values_and_gradients():
    x = jax.random.normal(jax.random.key(6), (3, 4, 5))
    f = jax.jit(lambda x: native.materialize(x * 2.0) ** 2)
    np.testing.assert_array_equal(f(x), (x * 2.0) ** 2)
    np.testing.assert_allclose(jax.grad(lambda x: f(x).sum())(x), 8.0 * x, rtol=1e-6)
    assert native.materialize(jnp.arange(4, dtype=jnp.int32)).tolist() == [0, 1, 2, 3]


def _bn_reference(x, running_mean, running_var, momentum=0.9, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = jnp.maximum(0.0, (x * x).mean(axes) - mean * mean)
    return ((x - mean) * jax.lax.rsqrt(var + eps), momentum * running_mean + (1 - momentum) * mean,
            momentum * running_var + (1 - momentum) * var)


@pytest.mark.parametrize("shape", [(4, 5, 3, 7), (600, 20), (2, 3, 4, 2, 16)])
def test_batch_norm_equals_the_jnp_form_to_second_derivatives(shape):
    # shapes below, at and above one 256-row chunk; channels below, at and off a vector block
    kx, km, kv, kw, kc = jax.random.split(jax.random.key(3), 5)
    x = 2 * jax.random.normal(kx, shape) + 1
    ch = shape[-1]
    rm, rv = jax.random.normal(km, (ch,)), jax.random.uniform(kv, (ch,), minval=1, maxval=2)
    for a, b in zip(native.batch_norm(x, rm, rv, 0.9, 1e-5), _bn_reference(x, rm, rv)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    w, c = jax.random.normal(kw, shape), jax.random.normal(kc, (2, ch))

    def loss(bn):  # reaches all three outputs, so every cotangent path of the kernel is checked
        def f(x, rm, rv):
            y, m2, v2 = bn(x, rm, rv)
            return jnp.sum(jnp.sin(y) * w) + jnp.sum(m2 * c[0]) + jnp.sum(v2 * c[1])
        return f

    native_loss = loss(lambda *a: native.batch_norm(*a, 0.9, 1e-5))
    for a, b in zip(jax.grad(native_loss, (0, 1, 2))(x, rm, rv), jax.grad(loss(_bn_reference), (0, 1, 2))(x, rm, rv)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    def hessian_vector(f):  # gradient of the gradient's squared norm: what exact second-order DARTS needs
        return jax.grad(lambda x: jnp.sum(jax.grad(f)(x, rm, rv) ** 2))(x)

    if len(shape) != 4:  # second derivatives once (compile time); they do not depend on the chunking
        return
    np.testing.assert_allclose(hessian_vector(native_loss), hessian_vector(loss(_bn_reference)), rtol=1e-3, atol=1e-4)

    # the second-derivative call (jaxnas_bn_bwd2) on its own: every output, then its VJP (third order)
    ks = jax.random.split(jax.random.key(4), 6)
    y = native.batch_norm(x, rm, rv, 0.9, 1e-5)[0]
    args = (y, jax.random.uniform(ks[0], (ch,), minval=0.5, maxval=2), jax.random.normal(ks[1], shape),
            *(jax.random.normal(k, (ch,)) for k in ks[2:5]), jax.random.normal(ks[5], shape))
    for a, b in zip(native._bn_second(*args, 0.9), native._bn_second_reference(*args, 0.9)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    third = [jax.grad(lambda *t: jnp.sum(jnp.sin(f(*t, 0.9)[2])), (0, 2, 6))(*args)
             for f in (native._bn_second, native._bn_second_reference)]
    for a, b in zip(*third):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_batch_norm_hand_case_and_repeatable_statistics():
    # channel 0 holds 1, 2, 3, 4: mean 2.5, biased variance 1.25
    x = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    y, mean, var = native.batch_norm(x, jnp.zeros(2), jnp.ones(2), 0.9, 1e-5)
    np.testing.assert_allclose(y[:, 0], (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-6)
    np.testing.assert_array_equal(y[:, 1], 0.0)
    np.testing.assert_allclose(mean, [0.25, 0.0], rtol=1e-6)
    np.testing.assert_allclose(var, [0.9 + 0.125, 0.9], rtol=1e-6)
    # chunk partial sums are added in a fixed order: bitwise the same on every call
    xs = jax.random.normal(jax.random.key(4), (32, 16, 16, 48))
    f = jax.jit(jax.grad(lambda x: jnp.sum(native.batch_norm(x, jnp.zeros(48), jnp.ones(48), 0.9, 1e-5)[0] ** 3)))
    np.testing.assert_array_equal(f(xs), f(xs))


@pytest.mark.parametrize("N,H,W,Cin,E,C,D,K,stride,dilation,padding,relu", [
    (2, 7, 6, 3, 2, 3, 5, 3, 1, 1, 1, False),      # two edges sharing the input, channels off a vector block
    (3, 9, 7, 32, 2, 16, 16, 3, 2, 2, 2, True),    # one input per edge (Cin = E*C), dilated, strided, ReLU fused
    (2, 9, 11, 16, 4, 16, 20, 5, 1, 1, 2, True),   # four edges, full 4-pixel tiles plus a tail, D off a block
    (2, 6, 7, 4, 3, 4, 4, 3, 1, 1, 1, True),       # PC-DARTS's 4 channels an op, three edges sharing the input
])
def test_separable_equals_grouped_conv_then_pointwise_to_second_derivatives(
        N, H, W, Cin, E, C, D, K, stride, dilation, padding, relu):
    kx, kk, kp, kg = jax.random.split(jax.random.key(5), 4)
    x = jax.random.normal(kx, (N, H, W, Cin))
    dw, pw = jax.random.normal(kk, (E, K, K, C)), jax.random.normal(kp, (E, C, D))
    if Cin == E * C:
        x = x.reshape(N, H, W, E, C)

    def spec(x, dw, pw):  # XLA's grouped conv per edge (of relu(x) with relu), then its 1x1 conv
        xs = jax.nn.relu(x.reshape(N, H, W, -1)) if relu else x.reshape(N, H, W, -1)
        kernel = jnp.moveaxis(dw, 0, 2).reshape(K, K, E * C)
        y = reference.depthwise_conv(xs, kernel, stride, dilation, padding)
        return jnp.stack([y[..., e * C:(e + 1) * C] @ pw[e] for e in range(E)], axis=3)

    y = native.separable(x, dw, pw, stride, dilation, padding, relu)
    np.testing.assert_allclose(y, spec(x, dw, pw), rtol=1e-4, atol=1e-4)
    g = jax.random.normal(kg, y.shape)

    def grads(fn):
        return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a)) * g), (0, 1, 2))(x, dw, pw)

    def native_fn(*a):
        return native.separable(*a, stride, dilation, padding, relu)

    for a, b in zip(grads(native_fn), grads(spec)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)

    # a derivative in x alone (an architecture gradient: the weights are constants) or in the weights
    # alone: the backward call computes only what is asked, and the result is the same
    only_x = jax.grad(lambda x: jnp.sum(jnp.sin(native_fn(x, dw, pw)) * g))
    np.testing.assert_allclose(only_x(x), grads(spec)[0], rtol=1e-4, atol=1e-3)
    assert "want_dw = 0" in jax.jit(only_x).lower(x).as_text()
    only_w = jax.grad(lambda dw, pw: jnp.sum(jnp.sin(native_fn(x, dw, pw)) * g), (0, 1))(dw, pw)
    for a, b in zip(only_w, grads(spec)[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)

    if E != 4:  # second derivatives on the four-edge case only (compile time)
        return

    def through_weight_grad(fn):  # DARTS's exact step: d/dx of a function of the weight gradient
        return jax.grad(lambda x: sum(jnp.sum(t ** 2) for t in jax.grad(
            lambda *w: jnp.sum(jnp.sin(fn(x, *w)) * g), (0, 1))(dw, pw)))(x)

    np.testing.assert_allclose(through_weight_grad(native_fn), through_weight_grad(spec), rtol=1e-3,
                               atol=1e-3 * float(jnp.abs(through_weight_grad(spec)).max()))

    def second(fn):  # the gradient of the gradient's norm: every cotangent (dx, ddw, dpw) of the transpose
        return jax.grad(lambda *p: sum(jnp.sum(t ** 2) for t in jax.grad(
            lambda *a: jnp.sum(jnp.sin(fn(*a)) * g), (0, 1, 2))(*p)), (0, 1, 2))(x, dw, pw)

    for a, b in zip(second(native_fn), second(spec)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(jnp.abs(b).max()))

    # the fused second-derivative call against its six-call form, and its own VJP (third order)
    xs, kernel = x.reshape(N, H, W, -1), jnp.moveaxis(dw, 0, 2).reshape(K, K, E * C)
    args = [xs, kernel, pw, g.reshape(g.shape[:3] + (-1,))] + [
        jax.random.normal(jax.random.key(i), t.shape) for i, t in enumerate((xs, kernel, pw))]
    for fused_relu in (False, True):  # both forms of the call, whatever this case's relu
        geometry = (stride, dilation, padding, fused_relu)
        calls = native._sep_second_calls(*args, *geometry)
        for want_dx, want_dw in ((True, True), (True, False), (False, True), (False, False)):
            fused = native._sep_second(*args, *geometry, want_dx, want_dw)  # outputs not wanted are zeros
            wanted = (want_dx, want_dw, want_dw, True)
            for a, b, w in zip(fused, calls, wanted):
                np.testing.assert_allclose(a, b if w else jnp.zeros_like(b), rtol=1e-4,
                                           atol=1e-4 * float(jnp.abs(b).max()))
        np.testing.assert_array_equal(fused[3], native._sep_second(*args, *geometry, False, False)[3])  # repeatable
    third = jax.grad(lambda *t: jnp.sum(jnp.sin(native._sep_second(*t, *geometry, True, True)[2])),
                     (0, 3, 4))(*args)
    third_ref = jax.grad(lambda *t: jnp.sum(jnp.sin(native._sep_second_calls(*t, *geometry)[2])), (0, 3, 4))(*args)
    for a, b in zip(third, third_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("kind", reference.POOLS)
@pytest.mark.parametrize("N,H,W,C,k,stride,padding", [
    (2, 7, 6, 3, 3, 1, 1),     # channels below one vector block
    (2, 8, 8, 20, 3, 2, 1),    # a full block plus a tail, stride 2 (DARTS's reduction cells)
    (2, 11, 11, 16, 5, 3, 0),  # DARTS's auxiliary head: 5x5, stride 3, no padding
    (2, 6, 7, 13, 3, 1, 1),    # 13 channels: 8- and 4-float vectors and a scalar (PC-DARTS's narrow ops)
])
def test_pool_equals_xla_reduce_window_to_second_derivatives(kind, N, H, W, C, k, stride, padding):
    kx, kg = jax.random.split(jax.random.key(6))
    x = jnp.round(2 * jax.random.normal(kx, (N, H, W, C))) / 2  # many ties: the gradient goes to the first max
    y = native.pool(x, kind, k, stride, padding)
    np.testing.assert_allclose(y, reference.pool(x, kind, k, stride, padding), rtol=1e-6, atol=1e-6)
    g = jax.random.normal(kg, y.shape)

    def grad_x(fn, g):
        return jax.grad(lambda x: jnp.sum(fn(x, kind, k, stride, padding) * g))(x)

    np.testing.assert_allclose(grad_x(native.pool, g), grad_x(reference.pool, g), rtol=1e-6, atol=1e-6)

    def second(fn):  # through the gradient, with respect to the cotangent and the input
        return jax.grad(lambda x, g: jnp.sum(jnp.sin(jax.grad(lambda x: jnp.sum(fn(x, kind, k, stride, padding)
                                                                               * g))(x))), (0, 1))(x, g)

    for a, b in zip(second(native.pool), second(reference.pool)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def third(fn):  # once more: the VJP of the second derivative (jaxnas_pool_jvp's transpose)
        def second_g(g):
            return jax.grad(lambda g: jnp.sum(jnp.sin(grad_x(fn, g))))(g)

        return jax.grad(lambda g: jnp.sum(jnp.cos(second_g(g))))(g)

    np.testing.assert_allclose(third(native.pool), third(reference.pool), rtol=1e-4, atol=1e-5)
