"""Candidate operations and their registry (DARTS, Liu et al. 2019, Sec. 3 and code).

Every op maps an NHWC tensor with C channels to one with C channels, subsampled by
``stride``. Ops are registered once by name; a search space picks its op set by
name (``OP_SETS``) or as an explicit list. Definitions follow the original DARTS
code (``cnn/operations.py``): ReLU-Conv-BN ordering, convs without bias, BN with
eps 1e-5 and PyTorch momentum 0.1 (flax momentum 0.9), PyTorch's default conv and
linear initialisation, padding written out so strided convs pad like PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas import native
from jaxnas.errors import unknown

# PyTorch's default conv/linear weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

BN_MOMENTUM = 0.9  # flax convention; PyTorch momentum 0.1
BN_EPS = 1e-5

OpFactory = Callable[..., nnx.Module]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A registered op: ``factory(C, stride, affine, rngs)`` builds the module.

    ``bn_in_search``: the search network's mixed op appends a non-affine BN
    (DARTS does this for the pooling ops).
    """

    name: str
    factory: OpFactory
    bn_in_search: bool = False


OPS: dict[str, OpSpec] = {}


def register_op(name: str, *, bn_in_search: bool = False):
    """Decorator registering ``factory(C, stride, affine, rngs) -> nnx.Module`` as op ``name``."""

    def wrap(factory: OpFactory) -> OpFactory:
        if name in OPS:
            raise ValueError(f"op {name!r} is already registered")
        OPS[name] = OpSpec(name, factory, bn_in_search)
        return factory

    return wrap


def get_op(name: str) -> OpSpec:
    if name not in OPS:
        raise unknown("op", name, OPS)
    return OPS[name]


DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # the benchmark's order
OP_SETS: dict[str, tuple[str, ...]] = {"darts": DARTS_OPS, "nb201": NB201_OPS}


def resolve_op_set(ops: str | Sequence[str]) -> tuple[str, ...]:
    """An op set by name (``'darts'``) or a comma-separated / explicit list of op names."""
    if isinstance(ops, str):
        if ops in OP_SETS:
            return OP_SETS[ops]
        names = tuple(n.strip() for n in ops.split(",") if n.strip())
        if len(names) < 2 and not (len(names) == 1 and names[0] in OPS):
            raise unknown("op set", ops, list(OP_SETS) + ["a comma-separated list of ops"])
    else:
        names = tuple(ops)
    if not names:
        raise unknown("op set", ops, list(OP_SETS))
    for n in names:
        get_op(n)
    if len(set(names)) != len(names):
        raise unknown("op set (duplicate ops)", ",".join(names), OPS)
    return names


# ---------------------------------------------------------------- building blocks


def conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
         groups: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """A bias-free conv padded like PyTorch (explicit symmetric padding)."""
    return nnx.Conv(c_in, c_out, (k, k), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)),
                    kernel_dilation=(dilation, dilation), feature_group_count=groups,
                    use_bias=False, kernel_init=torch_default_init, rngs=rngs)


class DepthwiseConv(nnx.Module):
    """A bias-free depthwise conv (PyTorch ``Conv2d(C, C, k, groups=C)``).

    ``impl="native"`` runs jaxnas's CPU depthwise kernel (``jaxnas.native``; ``"auto"``, the
    default, picks it where it builds and JAX runs on the CPU, else ``"dense"``).
    ``impl="dense"`` computes it as a dense conv with a block-diagonal kernel: the same
    parameters (``kernel``, shape (k, k, 1, C)) and maths, but XLA:CPU runs grouped
    convolutions so slowly that spending C times the FLOPs on zeros made the retraining
    step 3x faster (docs/benchmarks.md). ``DilConv`` goes further and folds the dense form
    into its pointwise conv. ``impl="grouped"`` is PyTorch's literal form, kept as the
    reference. The default comes from ``depthwise_impl`` at construction time.
    """

    def __init__(self, c: int, k: int, stride: int, padding: int, dilation: int, *, rngs: nnx.Rngs,
                 impl: str | None = None):
        self.kernel = nnx.Param(torch_default_init(rngs.params(), (k, k, 1, c)))
        self.strides, self.kernel_size, self.kernel_dilation = (stride, stride), (k, k), (dilation, dilation)
        self.padding = ((padding, padding), (padding, padding))
        self.impl = impl or _DEPTHWISE[-1]
        if self.impl not in DEPTHWISE_IMPLS:
            raise unknown("depthwise implementation", self.impl, DEPTHWISE_IMPLS)
        if self.impl == "auto":
            self.impl = "native" if native.available() else "dense"
        self.feature_group_count = c

    def __call__(self, x):
        w = self.kernel[...]
        if self.impl == "native" and x.dtype == jnp.float32 and native.available():
            return native.depthwise_conv(x, w[:, :, 0, :], self.strides[0], self.kernel_dilation[0],
                                         self.padding[0][0])
        grouped = self.impl == "grouped"
        if not grouped:
            w = w[:, :, 0, :, None] * jnp.eye(w.shape[-1], dtype=w.dtype)
        return jax.lax.conv_general_dilated(
            x, w.astype(x.dtype), self.strides, self.padding, rhs_dilation=self.kernel_dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.feature_group_count if grouped else 1)


DEPTHWISE_IMPLS = ("auto", "native", "dense", "grouped")
_DEPTHWISE = ["auto"]


@contextlib.contextmanager
def depthwise_impl(impl: str):
    """Build the depthwise convs created inside this block with ``impl`` (one of ``DEPTHWISE_IMPLS``)."""
    _DEPTHWISE.append(impl)
    try:
        yield
    finally:
        _DEPTHWISE.pop()


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` over the last axis, the same maths (fast variance), with its running
    statistics replaced whole.

    flax 0.12's ``variable[...] = value`` compares shardings, which for a tracer builds an
    error message by searching the whole trace, so every BN update costed time in the
    size of the program: tracing the 8-cell supernet step grew quadratically (45 of 54 s
    at 2 cells were spent there). ``set_value`` without an index skips that check.

    In training mode, float32, on the CPU, one call of jaxnas's own kernel normalises
    (``jaxnas.native.batch_norm``; XLA emitted about eight fusions per BN, most of the
    search step's compile time); the affine scale and shift, where there are any, follow.
    """

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if mask is not None or self.axis != -1 or self.axis_name is not None:
            return super().__call__(x, use_running_average, mask=mask)
        if use_running_average is None:
            use_running_average = self.use_running_average
        axes = tuple(range(x.ndim - 1))
        if not use_running_average and x.dtype == jnp.float32 and native.available():
            y, mean, var = native.batch_norm(x, self.mean[...], self.var[...], self.momentum, self.epsilon)
            self.mean.set_value(jax.lax.stop_gradient(mean))
            self.var.set_value(jax.lax.stop_gradient(var))
            if self.scale is not None:
                y = y * self.scale[...]
            return y + self.bias[...] if self.bias is not None else y
        if use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean = x.mean(axes)
            var = jnp.maximum(0.0, (x * x).mean(axes) - mean * mean)
            m = self.momentum
            self.mean.set_value(jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean))
            self.var.set_value(jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var))
        mul = jax.lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            mul = mul * self.scale[...]
        y = (x - mean) * mul
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x.dtype)


def batch_norm(c: int, affine: bool, *, rngs: nnx.Rngs) -> BatchNorm:
    return BatchNorm(c, momentum=BN_MOMENTUM, epsilon=BN_EPS, use_scale=affine, use_bias=affine, rngs=rngs)


def _pool(x: jax.Array, kind: str, k: int, stride: int, padding: int) -> jax.Array:
    """jaxnas's pooling kernel on the CPU for float32, else XLA's reduce-window (the same maths)."""
    if x.dtype == jnp.float32 and native.available():
        return native.pool(x, kind, k, stride, padding)
    return native.pool_reference(x, kind, k, stride, padding)


def max_pool(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """kxk max pooling, padded with -inf."""
    return _pool(x, "max", k, stride, padding)


def avg_pool(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """Average pooling that does not count padded zeros (PyTorch count_include_pad=False)."""
    return _pool(x, "avg", k, stride, padding)


class ReLUConvBN(nnx.Module):
    """ReLU -> conv -> BN (DARTS ``ReLUConvBN``; the cell preprocessing block at k=1)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool,
                 *, rngs: nnx.Rngs):
        self.conv = conv(c_in, c_out, k, stride, padding, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(jax.nn.relu(x)))


class DilConv(nnx.Module):
    """ReLU -> depthwise kxk (dilated, strided) -> pointwise 1x1 -> BN.

    With the dense depthwise form the two convs run as one dense conv with the product kernel;
    with the native one the depthwise output is recomputed in the backward pass, not kept.
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int,
                 affine: bool, *, rngs: nnx.Rngs):
        self.depthwise = DepthwiseConv(c_in, k, stride, padding, dilation, rngs=rngs)
        self.pointwise = conv(c_in, c_out, 1, rngs=rngs)
        self.bn = batch_norm(c_out, affine, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(x)
        if self.depthwise.impl == "dense":
            # depthwise kxk then pointwise 1x1 == one dense kxk conv with kernel dw[i, j, c] * pw[c, d]:
            # k*k*C*D MACs, fewer than the block-diagonal depthwise form plus the 1x1 conv, and one
            # intermediate activation fewer (docs/benchmarks.md)
            dw, pw = self.depthwise.kernel[...], self.pointwise.kernel[...]
            kernel = dw[:, :, 0, :, None] * pw[0, 0]
            y = jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), self.depthwise.strides, self.depthwise.padding,
                rhs_dilation=self.depthwise.kernel_dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return self.bn(y)
        if self.depthwise.impl == "native" and x.dtype == jnp.float32 and native.available():
            d = self.depthwise
            y = native.separable(x, d.kernel[...][None, :, :, 0, :], self.pointwise.kernel[...][None, 0, 0],
                                 d.strides[0], d.kernel_dilation[0], d.padding[0][0])
            return self.bn(y[..., 0, :])
        return self.bn(self.pointwise(self.depthwise(x)))


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
    def __init__(self, kind: str, k: int, stride: int, padding: int):
        self.kind, self.k, self.stride, self.padding = kind, k, stride, padding

    def __call__(self, x):
        fn = max_pool if self.kind == "max" else avg_pool
        return fn(x, self.k, self.stride, self.padding)


# ---------------------------------------------------------------- the DARTS primitives


@register_op("none")
def _none(C, stride, affine, rngs):
    return Zero(stride)


@register_op("max_pool_3x3", bn_in_search=True)
def _max_pool_3x3(C, stride, affine, rngs):
    return Pool("max", 3, stride, 1)


@register_op("avg_pool_3x3", bn_in_search=True)
def _avg_pool_3x3(C, stride, affine, rngs):
    return Pool("avg", 3, stride, 1)


@register_op("skip_connect")
def _skip_connect(C, stride, affine, rngs):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine, rngs=rngs)


@register_op("sep_conv_3x3")
def _sep_conv_3x3(C, stride, affine, rngs):
    return SepConv(C, C, 3, stride, 1, affine, rngs=rngs)


@register_op("sep_conv_5x5")
def _sep_conv_5x5(C, stride, affine, rngs):
    return SepConv(C, C, 5, stride, 2, affine, rngs=rngs)


@register_op("dil_conv_3x3")
def _dil_conv_3x3(C, stride, affine, rngs):
    return DilConv(C, C, 3, stride, 2, 2, affine, rngs=rngs)


@register_op("dil_conv_5x5")
def _dil_conv_5x5(C, stride, affine, rngs):
    return DilConv(C, C, 5, stride, 4, 2, affine, rngs=rngs)


@register_op("nor_conv_1x1")
def _nor_conv_1x1(C, stride, affine, rngs):
    """NAS-Bench-201's ReLU -> conv 1x1 -> BN."""
    return ReLUConvBN(C, C, 1, stride, 0, affine, rngs=rngs)


@register_op("nor_conv_3x3")
def _nor_conv_3x3(C, stride, affine, rngs):
    """NAS-Bench-201's ReLU -> conv 3x3 (padding 1) -> BN."""
    return ReLUConvBN(C, C, 3, stride, 1, affine, rngs=rngs)


class MixedOp(nnx.Module):
    """One supernet edge: sum_i softmax(alpha)_i * op_i(x) (DARTS Eq. 1).

    The caller passes the already-softmaxed weights for this edge. In the search
    network (affine=False) ops registered with ``bn_in_search`` get a trailing
    non-affine BN, as DARTS does for pooling (``search_bn=False``: not, as NAS-Bench-201).
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
