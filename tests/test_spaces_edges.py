import jax
import numpy as np
import pytest
from flax import nnx

from jaxnas import ops
from jaxnas.errors import JaxnasError
from jaxnas.spaces.edges import SourceEdges, separable


def _reference(E, C, stride, names, seed, search_bn=True):
    """The same edges as plain MixedOps, built from the same random stream."""
    rngs = nnx.Rngs(seed)
    return [ops.MixedOp(C, stride, names, affine=False, search_bn=search_bn, rngs=rngs) for _ in range(E)]


# the shift form (slow to compile, not the default) only at stride 1, to keep the suite short
@pytest.mark.parametrize("impl, stride", [("native", 1), ("native", 2), ("dense", 1), ("dense", 2), ("shift", 1)])
def test_batched_edges_equal_separate_mixed_ops(impl, stride):
    names = ops.DARTS_OPS
    group = SourceEdges(3, 4, stride, names, rngs=nnx.Rngs(0), dw_impl=impl)
    ref = _reference(3, 4, stride, names, 0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (3, len(names))), -1)
    np.testing.assert_allclose(group(x, w), np.stack([ref[e](x, w[e]) for e in range(3)], 3), rtol=1e-4, atol=1e-4)

    # gradients with respect to the input and the mixing weights agree as well
    g_def, g_state = nnx.split(group)
    r_def, r_state = nnx.split(nnx.List(ref))

    def loss_group(x, w):
        return (nnx.merge(g_def, g_state, copy=True)(x, w) ** 2).sum()

    def loss_ref(x, w):
        edges = nnx.merge(r_def, r_state, copy=True)
        return sum((edges[e](x, w[e]) ** 2).sum() for e in range(3))

    for a, b in zip(jax.grad(loss_group, (0, 1))(x, w), jax.grad(loss_ref, (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_user_ops_and_nb201_convs_take_the_per_edge_and_batched_paths():
    names = ("none", "nor_conv_3x3", "nor_conv_1x1", "test_edges_op")
    if "test_edges_op" not in ops.OPS:
        ops.register_op("test_edges_op")(lambda C, stride, affine, rngs: ops.ReLUConvBN(C, C, 3, stride, 1, affine,
                                                                                       rngs=rngs))
    group = SourceEdges(2, 3, 1, names, rngs=nnx.Rngs(1))
    assert group.kinds == ("none", "conv", "conv", "generic")
    ref = _reference(2, 3, 1, names, 1)
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (2, 4)), -1)
    np.testing.assert_allclose(group(x, w), np.stack([ref[e](x, w[e]) for e in range(2)], 3), rtol=1e-4, atol=1e-4)
    # NAS-Bench-201's supernet: no BN after the pool
    nb = ops.NB201_OPS
    group = SourceEdges(3, 3, 1, nb, rngs=nnx.Rngs(4), search_bn=False)
    ref = _reference(3, 3, 1, nb, 4, search_bn=False)
    w = jax.nn.softmax(jax.random.normal(jax.random.key(5), (3, len(nb))), -1)
    np.testing.assert_allclose(group(x, w), np.stack([ref[e](x, w[e]) for e in range(3)], 3), rtol=1e-4, atol=1e-4)


def test_dense_and_shift_separable_forms_agree_with_a_hand_computed_case():
    # one edge, one channel: depthwise 3x3 of ones on a ramp, then pointwise weight 2
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    dw, pw = np.ones((1, 3, 3, 1), np.float32), np.full((1, 1, 1), 2.0, np.float32)
    xp = np.pad(x[0, :, :, 0], 1)
    expected = 2 * np.array([[xp[i:i + 3, j:j + 3].sum() for j in range(4)] for i in range(4)])
    for impl in ("native", "dense", "shift"):
        y = separable(x, dw, pw, 1, 1, 1, impl)
        np.testing.assert_allclose(y[0, :, :, 0, 0], expected)


def test_unknown_depthwise_form_is_named():
    with pytest.raises(JaxnasError, match="depthwise implementation 'im2col'"):
        SourceEdges(1, 2, 1, ("none", "skip_connect"), rngs=nnx.Rngs(0), dw_impl="im2col")


def test_auto_falls_back_to_the_dense_form_without_the_native_kernel(monkeypatch):
    from jaxnas import native
    from jaxnas.spaces.edges import resolve_impl

    assert resolve_impl("auto") == ("native" if native.available() else "dense")
    monkeypatch.setenv("JAXNAS_NATIVE", "0")
    native._load.cache_clear()
    try:
        assert resolve_impl("auto") == "dense" and resolve_impl("native") == "dense"
        assert resolve_impl("shift") == "shift"
    finally:
        monkeypatch.delenv("JAXNAS_NATIVE")
        native._load.cache_clear()
