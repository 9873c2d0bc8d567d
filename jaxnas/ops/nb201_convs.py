"""NAS-Bench-201's conv ops (ReLU -> conv kxk -> BN), each with its batched form; its other ops
(none, skip_connect, avg_pool_3x3) are DARTS's."""

from __future__ import annotations

import jax
from flax import nnx

from jaxnas import kernels
from jaxnas.kernels.reference import conv, matmul_1x1_here
from jaxnas.nn import torch_uniform
from jaxnas.ops.layers import ReLUConvBN, StackedBatchNorm
from jaxnas.ops.registry import register_op


class StackedReLUConvBN(nnx.Module):
    """ReLU -> dense kxk conv -> BN for E edges that read one state: one conv with E*C outputs."""

    def __init__(self, E: int, C: int, k: int, stride: int, padding: int, rngs: nnx.Rngs):
        self.stride, self.padding = stride, padding
        self.kernel = nnx.Param(torch_uniform(rngs.params(), (E, k, k, C, C), k * k * C))
        self.bn = StackedBatchNorm(E, C, rngs=rngs)
        self.matmul_1x1 = matmul_1x1_here(kernels.platform())

    def __call__(self, x):
        E, k, _, C, D = self.kernel.shape
        kernel = self.kernel[...].transpose(1, 2, 3, 0, 4).reshape(k, k, C, E * D)  # the E convs side by side
        y = conv(jax.nn.relu(x), kernel, self.stride, self.padding, matmul_1x1=self.matmul_1x1)
        return self.bn(y.reshape(y.shape[:3] + (E, D)))


@register_op("nor_conv_1x1", batched=lambda E, C, stride, bn, rngs: StackedReLUConvBN(E, C, 1, stride, 0, rngs))
def nor_conv_1x1(C, stride, affine, rngs):
    """NAS-Bench-201's ReLU -> conv 1x1 -> BN."""
    return ReLUConvBN(C, C, 1, stride, 0, affine, rngs=rngs)


@register_op("nor_conv_3x3", batched=lambda E, C, stride, bn, rngs: StackedReLUConvBN(E, C, 3, stride, 1, rngs))
def nor_conv_3x3(C, stride, affine, rngs):
    """NAS-Bench-201's ReLU -> conv 3x3 (padding 1) -> BN."""
    return ReLUConvBN(C, C, 3, stride, 1, affine, rngs=rngs)
