import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas import kernels, ops
from jaxnas.kernels import build
from jaxnas.errors import JaxnasError


@pytest.mark.parametrize("name", ops.DARTS_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_darts_op_shape_and_stride(name, stride):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    op = ops.get_op(name).factory(4, stride, False, nnx.Rngs(0))
    y = op(x)
    assert y.shape == (2, 8 // stride, 8 // stride, 4)
    if name == "none":
        assert not np.any(np.asarray(y))
    if name == "skip_connect" and stride == 1:
        np.testing.assert_array_equal(y, x)


def test_op_structure_matches_darts():
    r = nnx.Rngs(0)
    sep = ops.get_op("sep_conv_5x5").factory(4, 2, False, r)
    # two depthwise-separable blocks, only the first strided; BN without affine parameters
    assert sep.block1.depthwise.strides == (2, 2) and sep.block2.depthwise.strides == (1, 1)
    assert sep.block1.depthwise.kernel_size == (5, 5) and sep.block1.depthwise.feature_group_count == 4
    assert sep.block1.bn.scale is None and sep.block1.bn.bias is None
    dil = ops.get_op("dil_conv_3x3").factory(4, 1, True, r)
    assert dil.depthwise.kernel_dilation == (2, 2) and dil.depthwise.padding == ((2, 2), (2, 2))
    assert dil.bn.scale is not None  # affine=True (evaluation network)
    assert isinstance(ops.get_op("skip_connect").factory(4, 2, False, r), ops.FactorizedReduce)
    with kernels.use("grouped"):
        assert ops.get_op("sep_conv_3x3").factory(4, 1, False, r).block1.depthwise.impl == "grouped"
    # the default: jaxnas's CPU kernel where it builds, else the dense form
    assert sep.block1.depthwise.impl == ("native" if build.available() else "dense")
    assert ops.get_op("max_pool_3x3").bn_in_search and not ops.get_op("sep_conv_3x3").bn_in_search


@pytest.mark.parametrize("impl", ["dense", "native"])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_dense_depthwise_equals_grouped(stride, dilation, impl):
    """The block-diagonal dense form and the native kernel compute PyTorch's grouped conv,
    values and gradients."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 5)), jnp.float32)
    dense = ops.DepthwiseConv(5, 3, stride, dilation, dilation, rngs=nnx.Rngs(0), impl=impl)
    grouped = ops.DepthwiseConv(5, 3, stride, dilation, dilation, rngs=nnx.Rngs(0), impl="grouped")
    np.testing.assert_array_equal(dense.kernel[...], grouped.kernel[...])
    np.testing.assert_allclose(dense(x), grouped(x), rtol=1e-5, atol=1e-5)
    # by hand: output pixel (0, 0) of channel 3 at stride 1, no dilation
    if stride == dilation == 1:
        w = np.asarray(grouped.kernel[...])[:, :, 0, 3]
        patch = np.pad(np.asarray(x[0, :, :, 3]), 1)[0:3, 0:3]
        assert float(grouped(x)[0, 0, 0, 3]) == pytest.approx(float((w * patch).sum()), rel=1e-5)

    def kernel_grad(m):
        graphdef, state = nnx.split(m)
        grads = jax.grad(lambda st: (nnx.merge(graphdef, st)(x) ** 2).sum())(state)
        return np.asarray(grads["kernel"][...])

    np.testing.assert_allclose(kernel_grad(dense), kernel_grad(grouped), rtol=1e-4, atol=1e-4)


def test_avg_pool_does_not_count_padding():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    y = ops.Pool("avg", 3, 1, 1)(x)
    # corner (0,0): mean of x[0:2, 0:2] = (0 + 1 + 4 + 5) / 4
    assert float(y[0, 0, 0, 0]) == pytest.approx(2.5)
    assert float(y[0, 1, 1, 0]) == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))


def test_max_pool_pads_with_minus_infinity():
    x = -jnp.ones((1, 4, 4, 1))
    assert float(ops.Pool("max", 3, 2, 1)(x)[0, 0, 0, 0]) == -1.0


def test_factorized_reduce_uses_shifted_input():
    fr = ops.FactorizedReduce(2, 4, affine=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    relu = jax.nn.relu(x)
    a = jnp.einsum("nhwc,cd->nhwd", relu[:, ::2, ::2], fr.conv1.kernel[0, 0])
    b = jnp.einsum("nhwc,cd->nhwd", relu[:, 1::2, 1::2], fr.conv2.kernel[0, 0])
    cat = jnp.concatenate([a, b], -1)
    ref = (cat - cat.mean((0, 1, 2))) / jnp.sqrt(cat.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(fr(x), ref, atol=1e-4)


def test_mixed_op_is_the_hand_weighted_sum():
    names = ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")
    m = ops.MixedOp(4, 1, names, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 4))
    w = jax.nn.softmax(jnp.array([0.3, -1.0, 0.5, 2.0]))
    out = m(x, w)
    pool_bn = m.ops[1](x)  # avg pool followed by its non-affine BN in the search network
    expected = w[0] * 0 + w[1] * pool_bn + w[2] * x + w[3] * m.ops[3](x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    p = ops.Pool("avg", 3, 1, 1)(x)
    np.testing.assert_allclose(pool_bn, (p - p.mean((0, 1, 2))) / jnp.sqrt(p.var((0, 1, 2)) + 1e-5), atol=1e-4)


def test_register_a_new_op_and_pick_op_sets():
    @ops.register_op("test_conv_1x1")
    def _conv1x1(C, stride, affine, rngs):
        return ops.ReLUConvBN(C, C, 1, stride, 0, affine, rngs=rngs)

    try:
        assert ops.resolve_op_set("none,test_conv_1x1") == ("none", "test_conv_1x1")
        m = ops.MixedOp(4, 2, ("none", "test_conv_1x1"), rngs=nnx.Rngs(0))
        assert m(jnp.ones((1, 8, 8, 4)), jnp.array([0.5, 0.5])).shape == (1, 4, 4, 4)
    finally:
        del ops.OPS["test_conv_1x1"]
    assert ops.resolve_op_set("darts") == ops.DARTS_OPS


def test_unknown_op_names_the_value_and_lists_allowed():
    with pytest.raises(JaxnasError, match=r"unknown op 'sep_conv_7x7'.*sep_conv_3x3"):
        ops.resolve_op_set("none,sep_conv_7x7")
    with pytest.raises(JaxnasError, match="unknown op set 'nope'"):
        ops.resolve_op_set("nope")


@pytest.mark.parametrize("impl", ["dense"] + (["native"] if build.available() else []))  # native: CPU only
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 2)])
def test_fused_separable_block_equals_depthwise_then_pointwise(stride, dilation, impl):
    """DilConv's one-conv form (dense impl) and its native-kernel form equal the two convs
    (grouped impl), values and gradients."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 9, 4)), jnp.float32)
    with kernels.use(impl):
        fused = ops.DilConv(4, 6, 3, stride, dilation, dilation, True, rngs=nnx.Rngs(0))
    assert fused.depthwise.impl == impl
    with kernels.use("grouped"):
        plain = ops.DilConv(4, 6, 3, stride, dilation, dilation, True, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(fused(x), plain(x), rtol=1e-4, atol=1e-4)

    def grads(m):
        graphdef, params, rest = nnx.split(m, nnx.Param, ...)
        g = jax.grad(lambda p: (nnx.merge(graphdef, p, rest, copy=True)(x) ** 2).sum())(params)
        return [np.asarray(v) for v in jax.tree.leaves(g)]

    for a, b in zip(grads(fused), grads(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_native_path_equals_flax_batch_norm(affine):
    # ops.BatchNorm normalises with jaxnas's kernel in training mode on the CPU; flax's own
    # nnx.BatchNorm (the same maths in XLA) is the reference, in outputs, statistics and gradients
    x = 3 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6)) + 1
    mine = ops.batch_norm(6, affine, rngs=nnx.Rngs(0))
    ref = nnx.BatchNorm(6, momentum=ops.BN_MOMENTUM, epsilon=ops.BN_EPS, use_scale=affine, use_bias=affine,
                        rngs=nnx.Rngs(0))
    if affine:
        for m in (mine, ref):
            m.scale.set_value(jnp.linspace(0.5, 2.0, 6))
            m.bias.set_value(jnp.linspace(-1.0, 1.0, 6))
    w = jax.random.normal(jax.random.key(1), x.shape)

    def loss(model, x):
        return jnp.sum(jnp.tanh(model(x)) * w)

    g_mine = nnx.grad(loss, argnums=(0, 1))(mine, x)
    g_ref = nnx.grad(loss, argnums=(0, 1))(ref, x)
    np.testing.assert_allclose(g_mine[1], g_ref[1], rtol=1e-4, atol=1e-5)
    if affine:
        for name in ("scale", "bias"):
            np.testing.assert_allclose(g_mine[0][name][...], g_ref[0][name][...], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mine.mean[...], ref.mean[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine.var[...], ref.var[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine(x), ref(x), rtol=1e-5, atol=1e-5)
