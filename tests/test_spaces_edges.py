import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnas import kernels, ops
from jaxnas.errors import JaxnasError
from jaxnas.kernels import build, separable
from jaxnas.ops.darts_primitives import SharedPool, StackedDilConv, StackedFactorizedReduce, StackedSepConv
from jaxnas.ops.nb201_convs import StackedReLUConvBN
from jaxnas.spaces.edges import EdgeMix, PerEdge, SourceEdges


def _set(var, value):
    var.set_value(jnp.asarray(value).reshape(var[...].shape))


def _copy_dil(src, e, dst):
    _set(dst.depthwise.kernel, src.dw[...][e])
    _set(dst.pointwise.kernel, src.pw[...][e])


def _reference(group, names, search_bn=True):
    """The same edges as plain MixedOps (the per-edge form), holding the batched form's weights."""
    ref = [ops.MixedOp(group.C, group.stride, names, affine=False, search_bn=search_bn, rngs=nnx.Rngs(99))
           for _ in range(group.E)]
    for i in range(len(names)):
        src = group.ops.get(str(i)) if str(i) in group.ops else None
        for e, mixed in enumerate(ref):
            dst = mixed.ops[i]
            if isinstance(src, StackedSepConv):
                _copy_dil(src.block1, e, dst.block1)
                _copy_dil(src.block2, e, dst.block2)
            elif isinstance(src, StackedDilConv):
                _copy_dil(src, e, dst)
            elif isinstance(src, StackedReLUConvBN):
                _set(dst.conv.kernel, src.kernel[...][e])
            elif isinstance(src, StackedFactorizedReduce):
                _set(dst.conv1.kernel, src.k1[...][e])
                _set(dst.conv2.kernel, src.k2[...][e])
            elif isinstance(src, PerEdge):
                nnx.update(dst, nnx.state(src.edges[e]))
    return ref


# the shift form (slow to compile, not the default) only at stride 1, to keep the suite short; "fused": the
# dense form stage by stage (what GPUs and TPUs run: grouped convolutions, one BN a stage)
@pytest.mark.parametrize("impl, stride", [("native", 1), ("native", 2), ("dense", 1), ("dense", 2), ("shift", 1),
                                          ("fused", 1), ("fused", 2)])
def test_batched_edges_equal_separate_mixed_ops(impl, stride):
    names = ops.DARTS_OPS
    with kernels.use("dense" if impl == "fused" else impl):
        group = SourceEdges(3, 4, stride, names, rngs=nnx.Rngs(0), fuse=impl == "fused")
    assert group.fuse == (impl == "fused")
    ref = _reference(group, names)
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
    # and the BN running statistics moved as the separate BNs' did (one forward each, above)
    for i, src in group.ops.items():
        if isinstance(src, StackedSepConv):
            mean = src.block2.bn.bn.mean[...].reshape(3, 4)
            for e in range(3):
                np.testing.assert_allclose(mean[e], ref[e].ops[int(i)].block2.bn.mean[...], rtol=1e-4, atol=1e-5)
        if isinstance(src, SharedPool):  # one pool and BN for all edges: each edge's own BN saw the same
            for e in range(3):
                np.testing.assert_allclose(src.bn.var[...], ref[e].ops[int(i)].layers[1].var[...], rtol=1e-4, atol=1e-5)


def test_fused_edges_second_order_equals_the_per_op_form():
    """DARTS's exact second order differentiates the weight gradient again: through the grouped
    convolutions and the shared BN the fused form gives the per-op form's Hessian-vector product."""
    names = ops.DARTS_OPS
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (2, len(names))), -1)
    results = []
    for fuse in (False, True):
        with kernels.use("dense"):
            group = SourceEdges(2, 4, 1, names, rngs=nnx.Rngs(0), fuse=fuse)
        gdef, params, rest = nnx.split(group, nnx.Param, ...)

        def loss(p, w):
            return (nnx.merge(gdef, p, rest, copy=True)(x, w) ** 2).sum()

        v = jax.tree.map(jnp.ones_like, params)
        hvp = jax.grad(lambda w: sum(jax.tree.leaves(jax.tree.map(lambda g, t: (g * t).sum(),
                                                                   jax.grad(loss)(params, w), v))))(w)
        results.append(hvp)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-3, atol=1e-3)
    assert np.abs(np.asarray(results[0])).max() > 0


def test_separable_many_equals_one_block_at_a_time():
    """Per-edge inputs of two geometries (3x3 and 5x5 dilated): one grouped convolution per geometry,
    the same outputs as ``separable`` per block; a shared input the same as well."""
    keys = jax.random.split(jax.random.key(0), 8)
    blocks = [(jax.random.normal(keys[0], (2, 3, 3, 4)), jax.random.normal(keys[1], (2, 4, 4)), 1, 1, 1),
              (jax.random.normal(keys[2], (3, 3, 3, 4)), jax.random.normal(keys[3], (3, 4, 4)), 1, 1, 1),
              (jax.random.normal(keys[4], (1, 5, 5, 4)), jax.random.normal(keys[5], (1, 4, 4)), 1, 2, 4)]
    xs = [jax.random.normal(keys[6], (2, 9, 9, b[0].shape[0], 4)) for b in blocks]
    for got, b, x in zip(kernels.separable_many(xs, blocks, "dense"), blocks, xs):
        np.testing.assert_allclose(got, separable(x, *b, "dense"), rtol=1e-4, atol=1e-4)
    x = jax.random.normal(keys[7], (2, 9, 9, 4))
    for got, b in zip(kernels.separable_many(x, blocks, "dense", relu=True), blocks):
        np.testing.assert_allclose(got, separable(x, *b, "dense", relu=True), rtol=1e-4, atol=1e-4)


def test_batch_norm_together_equals_separate_batch_norms():
    a = ops.batch_norm(3, False, rngs=nnx.Rngs(0))
    b = ops.StackedBatchNorm(2, 3, rngs=nnx.Rngs(0))
    a_ref = ops.batch_norm(3, False, rngs=nnx.Rngs(0))
    b_ref = ops.StackedBatchNorm(2, 3, rngs=nnx.Rngs(0))
    ya = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 2 + 1
    yb = jax.random.normal(jax.random.key(1), (4, 5, 5, 2, 3)) - 3
    out = ops.batch_norm_together([a, b], [ya, yb])
    np.testing.assert_allclose(out[0], a_ref(ya), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], b_ref(yb), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.mean[...], a_ref.mean[...], rtol=1e-6)
    np.testing.assert_allclose(b.bn.var[...], b_ref.bn.var[...], rtol=1e-6)
    # hand-worked: the running mean moves 10% of the way to the batch mean (PyTorch momentum 0.1)
    np.testing.assert_allclose(a.mean[...], 0.1 * np.asarray(ya).mean((0, 1, 2)), rtol=1e-5)


def test_edges_fuse_by_default_off_the_cpu_in_the_dense_form():
    with kernels.use("dense", "cuda"):
        assert SourceEdges(2, 4, 1, ops.DARTS_OPS, rngs=nnx.Rngs(0)).fuse
    with kernels.use("dense", "cpu"):
        assert not SourceEdges(2, 4, 1, ops.DARTS_OPS, rngs=nnx.Rngs(0)).fuse
    with kernels.use("shift", "tpu"):
        assert not SourceEdges(2, 4, 1, ops.DARTS_OPS, rngs=nnx.Rngs(0)).fuse


def test_user_ops_and_nb201_convs_take_the_per_edge_and_batched_paths():
    names = ("none", "nor_conv_3x3", "nor_conv_1x1", "test_edges_op")
    if "test_edges_op" not in ops.OPS:
        ops.register_op("test_edges_op")(lambda C, stride, affine, rngs: ops.ReLUConvBN(C, C, 3, stride, 1, affine,
                                                                                       rngs=rngs))
    group = SourceEdges(2, 3, 1, names, rngs=nnx.Rngs(1))
    assert "0" not in group.ops and isinstance(group.ops["1"], StackedReLUConvBN)
    assert isinstance(group.ops["3"], PerEdge)  # registered without a batched form: per edge
    ref = _reference(group, names)
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (2, 4)), -1)
    np.testing.assert_allclose(group(x, w), np.stack([ref[e](x, w[e]) for e in range(2)], 3), rtol=1e-4, atol=1e-4)
    # NAS-Bench-201's supernet: no BN after the pool
    nb = ops.NB201_OPS
    group = SourceEdges(3, 3, 1, nb, rngs=nnx.Rngs(4), mixed=EdgeMix(search_bn=False))
    ref = _reference(group, nb, search_bn=False)
    w = jax.nn.softmax(jax.random.normal(jax.random.key(5), (3, len(nb))), -1)
    np.testing.assert_allclose(group(x, w), np.stack([ref[e](x, w[e]) for e in range(3)], 3), rtol=1e-4, atol=1e-4)


def test_dense_and_shift_separable_forms_agree_with_a_hand_computed_case():
    # one edge, one channel: depthwise 3x3 of ones on a ramp, then pointwise weight 2
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    dw, pw = np.ones((1, 3, 3, 1), np.float32), np.full((1, 1, 1), 2.0, np.float32)
    xp = np.pad(x[0, :, :, 0], 1)
    expected = 2 * np.array([[xp[i:i + 3, j:j + 3].sum() for j in range(4)] for i in range(4)])
    for impl in ("native", "dense", "shift", "grouped"):
        y = separable(x, dw, pw, 1, 1, 1, impl)
        np.testing.assert_allclose(y[0, :, :, 0, 0], expected)


def test_unknown_kernel_implementation_is_named():
    with pytest.raises(JaxnasError, match="kernel implementation 'im2col'"):
        with kernels.use("im2col"):
            pass


def test_auto_falls_back_to_the_dense_form_without_the_native_kernel(monkeypatch):
    assert kernels.resolve("auto") == ("native" if build.available() else "dense")
    monkeypatch.setenv("JAXNAS_NATIVE", "0")
    build._load.cache_clear()
    try:
        assert kernels.resolve("auto") == "dense" and kernels.resolve("native") == "dense"
        assert kernels.resolve("shift") == "shift"
    finally:
        monkeypatch.delenv("JAXNAS_NATIVE")
        build._load.cache_clear()


def test_stacked_weights_are_initialised_like_separate_ops_and_build_abstractly():
    """Each edge's stacked weights are U(+-1/sqrt(fan_in)) of its own op, and a supernet's edges
    build under jax.eval_shape (no concrete arrays needed)."""
    group = SourceEdges(4, 16, 1, ops.DARTS_OPS, rngs=nnx.Rngs(0))
    sep = group.ops[str(ops.DARTS_OPS.index("sep_conv_5x5"))].block1
    assert np.abs(np.asarray(sep.dw[...])).max() <= 1 / 5 and np.abs(np.asarray(sep.dw[...])).max() > 0.9 / 5
    assert np.abs(np.asarray(sep.pw[...])).max() <= 1 / 4 and np.abs(np.asarray(sep.pw[...])).max() > 0.9 / 4
    shapes = jax.eval_shape(lambda: nnx.state(SourceEdges(2, 4, 2, ops.DARTS_OPS, rngs=nnx.Rngs(0))))
    assert len(jax.tree.leaves(shapes)) > 0
