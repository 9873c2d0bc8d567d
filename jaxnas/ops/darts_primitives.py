"""DARTS's primitives (cnn/operations.py), each with its batched form for the supernet.

A batched form holds the weights of E edges stacked on a leading axis, each edge initialised
as its own op would be (PyTorch's default init with that op's fan-in), and computes the E
edges that read one state together: one depthwise call per op for all of them, and pooling
(identical for every edge) once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas import kernels
from jaxnas.kernels.reference import conv, matmul_1x1_here
from jaxnas.nn import torch_uniform
from jaxnas.ops.layers import DilConv, FactorizedReduce, Identity, Pool, SepConv, StackedBatchNorm, Zero, batch_norm
from jaxnas.ops.registry import register_op


def _stacked(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int) -> nnx.Param:
    return nnx.Param(torch_uniform(rngs.params(), shape, fan_in))


class SharedPool(nnx.Module):
    """kxk pooling (and DARTS's trailing non-affine BN) for E edges: the same for all, computed once."""

    def __init__(self, kind: str, stride: int, C: int, bn: bool, rngs: nnx.Rngs):
        self.pool = Pool(kind, 3, stride, 1)
        self.bn = batch_norm(C, False, rngs=rngs) if bn else None

    def __call__(self, x):
        y = self.pool(x)
        return (self.bn(y) if self.bn is not None else y)[..., None, :]


class SharedIdentity(nnx.Module):
    def __call__(self, x):
        return x[..., None, :]


class StackedFactorizedReduce(nnx.Module):
    """``skip_connect`` at stride 2 (FactorizedReduce: two 1x1 stride-2 convs, concat, BN) for E edges."""

    def __init__(self, E: int, C: int, rngs: nnx.Rngs):
        self.k1 = _stacked(rngs, (E, C, C // 2), C)
        self.k2 = _stacked(rngs, (E, C, C // 2), C)
        self.bn = StackedBatchNorm(E, C, rngs=rngs)
        self.matmul_1x1 = matmul_1x1_here(kernels.platform())

    def __call__(self, x):
        r = jax.nn.relu(x)
        shifted = jnp.pad(r[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.bn(jnp.concatenate([self._conv(r, self.k1[...]), self._conv(shifted, self.k2[...])], axis=-1))

    def _conv(self, x, k):
        """The E edges' 1x1 stride-2 convs of x: k (E, C, D) -> (N, H/2, W/2, E, D). On the CPU a
        matrix product over the strided pixels; elsewhere one convolution with E*D outputs, since
        the product form aborts XLA:GPU's Triton GEMM fusion in jax 0.11 (docs/accelerators.md)."""
        if self.matmul_1x1:
            return jnp.einsum("nhwc,ecd->nhwed", x[:, ::2, ::2, :], k)
        E, C, D = k.shape
        y = conv(x, jnp.moveaxis(k, 0, 1).reshape(1, 1, C, E * D), 2, 0)
        return y.reshape(y.shape[:3] + (E, D))


class StackedDilConv(nnx.Module):
    """``dil_conv_kxk`` (ReLU, depthwise kxk dilated, pointwise 1x1, BN) for E edges: x (N, H, W, C)
    shared by the edges or (N, H, W, E, C) one per edge."""

    def __init__(self, E: int, C: int, k: int, stride: int, padding: int, dilation: int, rngs: nnx.Rngs):
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.dw = _stacked(rngs, (E, k, k, C), k * k)
        self.pw = _stacked(rngs, (E, C, C), C)
        self.bn = StackedBatchNorm(E, C, rngs=rngs)
        self.impl = kernels.resolve()

    def geometry(self) -> tuple:
        """``kernels.separable``'s block arguments: (dw, pw, stride, dilation, padding)."""
        return self.dw[...], self.pw[...], self.stride, self.dilation, self.padding

    def blocks(self) -> tuple["StackedDilConv", ...]:
        """The op as a chain of ReLU-separable-BN blocks (``edges.SourceEdges`` runs the blocks of
        every such op together)."""
        return (self,)

    def __call__(self, x):
        y = kernels.separable(x, *self.geometry(), self.impl, relu=True)
        return self.bn(y)


class StackedSepConv(nnx.Module):
    """``sep_conv_kxk`` (two separable blocks, only the first strided) for E edges."""

    def __init__(self, E: int, C: int, k: int, stride: int, padding: int, rngs: nnx.Rngs):
        self.block1 = StackedDilConv(E, C, k, stride, padding, 1, rngs)
        self.block2 = StackedDilConv(E, C, k, 1, padding, 1, rngs)

    def blocks(self) -> tuple[StackedDilConv, ...]:
        return (self.block1, self.block2)

    def __call__(self, x):
        return self.block2(self.block1(x))  # block 2 reads one input per edge: (N, H, W, E, C)


@register_op("none", zero=True)
def none(C, stride, affine, rngs):
    return Zero(stride)


def _shared_pool(kind):
    return lambda E, C, stride, bn, rngs: SharedPool(kind, stride, C, bn, rngs)


@register_op("max_pool_3x3", bn_in_search=True, batched=_shared_pool("max"))
def max_pool_3x3(C, stride, affine, rngs):
    return Pool("max", 3, stride, 1)


@register_op("avg_pool_3x3", bn_in_search=True, batched=_shared_pool("avg"))
def avg_pool_3x3(C, stride, affine, rngs):
    return Pool("avg", 3, stride, 1)


def _skip_batched(E, C, stride, bn, rngs):
    return SharedIdentity() if stride == 1 else StackedFactorizedReduce(E, C, rngs)


@register_op("skip_connect", batched=_skip_batched)
def skip_connect(C, stride, affine, rngs):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine, rngs=rngs)


@register_op("sep_conv_3x3", batched=lambda E, C, stride, bn, rngs: StackedSepConv(E, C, 3, stride, 1, rngs))
def sep_conv_3x3(C, stride, affine, rngs):
    return SepConv(C, C, 3, stride, 1, affine, rngs=rngs)


@register_op("sep_conv_5x5", batched=lambda E, C, stride, bn, rngs: StackedSepConv(E, C, 5, stride, 2, rngs))
def sep_conv_5x5(C, stride, affine, rngs):
    return SepConv(C, C, 5, stride, 2, affine, rngs=rngs)


@register_op("dil_conv_3x3", batched=lambda E, C, stride, bn, rngs: StackedDilConv(E, C, 3, stride, 2, 2, rngs))
def dil_conv_3x3(C, stride, affine, rngs):
    return DilConv(C, C, 3, stride, 2, 2, affine, rngs=rngs)


@register_op("dil_conv_5x5", batched=lambda E, C, stride, bn, rngs: StackedDilConv(E, C, 5, stride, 4, 2, rngs))
def dil_conv_5x5(C, stride, affine, rngs):
    return DilConv(C, C, 5, stride, 4, 2, affine, rngs=rngs)
