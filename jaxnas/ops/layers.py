"""The layers DARTS's operations are made of (cnn/operations.py), for one edge.

ReLU-Conv-BN ordering, convs without bias, BN with eps 1e-5 and PyTorch momentum 0.1 (flax
momentum 0.9), PyTorch's default conv and linear initialisation, padding written out so
strided convs pad like PyTorch. Computations with several implementations (depthwise conv,
separable block, training-mode BN, pooling) go through ``jaxnas.kernels``; each module keeps
the implementation it was built with (the builder's ``kernels=``, see ``jaxnas.kernels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas import kernels
from jaxnas.nn import conv, torch_default_init
from jaxnas.ops.registry import get_op

BN_MOMENTUM = 0.9  # flax convention; PyTorch momentum 0.1
BN_EPS = 1e-5


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` over the last axis, the same maths; training mode goes through
    ``kernels.batch_norm`` (one native call each way on the CPU), and the running statistics
    are replaced whole (``set_value``: flax 0.12's indexed assignment compares shardings, which
    made tracing the 8-cell supernet quadratic in its size)."""

    def __init__(self, num_features: int, *, impl: str | None = None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.impl = kernels.resolve(impl)

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if mask is not None or self.axis != -1 or self.axis_name is not None:
            return super().__call__(x, use_running_average, mask=mask)
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            y = (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + self.epsilon)
        else:
            y, mean, var = kernels.batch_norm(x, self.mean[...], self.var[...], self.momentum, self.epsilon,
                                              self.impl)
            self.mean.set_value(jax.lax.stop_gradient(mean))
            self.var.set_value(jax.lax.stop_gradient(var))
        if self.scale is not None:
            y = y * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x.dtype)


def batch_norm(c: int, affine: bool, *, rngs: nnx.Rngs) -> BatchNorm:
    """DARTS's ``nn.BatchNorm2d(c, affine=affine)``."""
    return BatchNorm(c, momentum=BN_MOMENTUM, epsilon=BN_EPS, use_scale=affine, use_bias=affine, rngs=rngs)


class StackedBatchNorm(nnx.Module):
    """E non-affine BNs over the (E, C) channels of a (N, H, W, E, C) tensor, in one."""

    def __init__(self, E: int, C: int, *, rngs: nnx.Rngs):
        self.bn = batch_norm(E * C, False, rngs=rngs)

    def __call__(self, y):
        return self.bn(y.reshape(y.shape[:3] + (-1,))).reshape(y.shape)


def batch_norm_together(norms: Sequence[BatchNorm | StackedBatchNorm], ys: Sequence[jax.Array]) -> list[jax.Array]:
    """``[norm(y) for norm, y in zip(norms, ys)]`` for training-mode non-affine BNs, as one BN over their
    channels side by side (the same per-channel statistics, each module's running statistics updated
    as its own call would): one reduction each way instead of one per module."""
    bns = [n.bn if isinstance(n, StackedBatchNorm) else n for n in norms]
    first = bns[0]
    if (len(bns) == 1 or len({y.shape[:3] for y in ys}) > 1 or any(b.use_running_average or b.scale is not None or b.bias is not None
                             or (b.momentum, b.epsilon, b.impl) != (first.momentum, first.epsilon, first.impl)
                             for b in bns)):
        return [n(y) for n, y in zip(norms, ys)]
    flat = [y.reshape(y.shape[:3] + (-1,)) for y in ys]
    sizes = [f.shape[-1] for f in flat]
    out, mean, var = kernels.batch_norm(jnp.concatenate(flat, -1), jnp.concatenate([b.mean[...] for b in bns]),
                                        jnp.concatenate([b.var[...] for b in bns]), first.momentum, first.epsilon,
                                        first.impl)
    result, start = [], 0
    for b, y, n in zip(bns, ys, sizes):
        b.mean.set_value(jax.lax.stop_gradient(mean[start:start + n]))
        b.var.set_value(jax.lax.stop_gradient(var[start:start + n]))
        result.append(out[..., start:start + n].reshape(y.shape).astype(y.dtype))
        start += n
    return result


class DepthwiseConv(nnx.Module):
    """A bias-free depthwise conv (PyTorch ``Conv2d(C, C, k, groups=C)``), kernel (k, k, 1, C)."""

    def __init__(self, c: int, k: int, stride: int, padding: int, dilation: int, *, rngs: nnx.Rngs,
                 impl: str | None = None):
        self.kernel = nnx.Param(torch_default_init(rngs.params(), (k, k, 1, c)))
        self.strides, self.kernel_size, self.kernel_dilation = (stride, stride), (k, k), (dilation, dilation)
        self.padding = ((padding, padding), (padding, padding))
        self.feature_group_count = c
        self.impl = kernels.resolve(impl)

    def __call__(self, x):
        return kernels.depthwise_conv(x, self.kernel[...][:, :, 0, :], self.strides[0], self.kernel_dilation[0],
                                      self.padding[0][0], self.impl)


class ReLUConvBN(nnx.Module):
    """ReLU -> conv -> BN (DARTS ``ReLUConvBN``; the cell preprocessing block at k=1)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool,
                 *, rngs: nnx.Rngs):
        self.conv = conv(c_in, c_out, k, stride, padding, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(jax.nn.relu(x)))


class DilConv(nnx.Module):
    """ReLU -> depthwise kxk (dilated, strided) -> pointwise 1x1 -> BN, the pair as one
    ``kernels.separable`` call."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int,
                 affine: bool, *, rngs: nnx.Rngs):
        self.depthwise = DepthwiseConv(c_in, k, stride, padding, dilation, rngs=rngs)
        self.pointwise = conv(c_in, c_out, 1, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x):
        d = self.depthwise
        y = kernels.separable(x, d.kernel[...][None, :, :, 0, :], self.pointwise.kernel[...][None, 0, 0],
                              d.strides[0], d.kernel_dilation[0], d.padding[0][0], d.impl, relu=True)
        return self.bn(y[..., 0, :])


class SepConv(nnx.Module):
    """Two depthwise-separable blocks; only the first depthwise conv is strided."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool,
                 *, rngs: nnx.Rngs):
        self.block1 = DilConv(c_in, c_in, k, stride, padding, 1, affine, rngs=rngs)
        self.block2 = DilConv(c_in, c_out, k, 1, padding, 1, affine, rngs=rngs)

    def __call__(self, x):
        return self.block2(self.block1(x))


class FactorizedReduce(nnx.Module):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), concat, BN.

    Deliberate difference from DARTS: the shifted input is zero-padded at the far
    edge so odd spatial sizes work; for even sizes the result is identical.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool, *, rngs: nnx.Rngs):
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.conv1 = conv(c_in, c_out // 2, 1, 2, rngs=rngs)
        self.conv2 = conv(c_in, c_out // 2, 1, 2, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(x)
        shifted = jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.bn(jnp.concatenate([self.conv1(x), self.conv2(shifted)], axis=-1))


class Zero(nnx.Module):
    """The ``none`` op: zeros of the strided shape."""

    def __init__(self, stride: int):
        self.stride = stride

    def __call__(self, x):
        return jnp.zeros_like(x[:, :: self.stride, :: self.stride, :])


class Identity(nnx.Module):
    def __call__(self, x):
        return x


class Pool(nnx.Module):
    """kxk ``max`` or ``avg`` pooling, padding never counted (``kernels.pool``)."""

    def __init__(self, kind: str, k: int, stride: int, padding: int, impl: str | None = None):
        self.kind, self.k, self.stride, self.padding = kind, k, stride, padding
        self.impl = kernels.resolve(impl)

    def __call__(self, x):
        return kernels.pool(x, self.kind, self.k, self.stride, self.padding, self.impl)


class MixedOp(nnx.Module):
    """One supernet edge: sum_i w_i * op_i(x) (DARTS Eq. 1), w the edge's relaxed weights.

    The per-edge reference form; supernets run the edges leaving a state together
    (``jaxnas.spaces.edges``). In the search network (affine=False) ops registered with
    ``bn_in_search`` get a trailing non-affine BN, as DARTS does for pooling
    (``search_bn=False``: not, as NAS-Bench-201).
    """

    def __init__(self, C: int, stride: int, op_names: Sequence[str], *, affine: bool = False,
                 search_bn: bool = True, rngs: nnx.Rngs):
        ops = []
        for name in op_names:
            spec = get_op(name)
            op = spec.factory(C, stride, affine, rngs)
            if spec.bn_in_search and search_bn:
                op = nnx.Sequential(op, batch_norm(C, False, rngs=rngs))
            ops.append(op)
        self.ops = nnx.List(ops)

    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        out = None
        for i, op in enumerate(self.ops):
            term = weights[i] * op(x)
            out = term if out is None else out + term
        return out
