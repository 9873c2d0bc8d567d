"""The CIFAR residual networks of the reweighting benchmarks, as models of ``jaxnas optimize``:

* ``resnet:<depth>`` (default 32): He et al. 2016, Sec. 4.2: a 3x3 conv of 16 channels, three stages
  of n = (depth - 2) / 6 basic blocks (3x3 conv-BN-ReLU, 3x3 conv-BN, shortcut, ReLU) at 16, 32 and
  64 channels, the first block of stages 2 and 3 with stride 2; shortcuts are option A (identity;
  where the shape changes, stride-2 subsampling with the new channels zero-padded), global average
  pooling, a linear layer. ResNet-32 has 0.46M parameters (their Table 6). Kaiming-normal init of
  convs and the linear layer, as the implementation MW-Net uses (``resnet.py``).
* ``wrn:<depth>-<k>`` (default 28-10): Zagoruyko & Komodakis 2016: pre-activation blocks
  (BN-ReLU-3x3 conv, BN-ReLU-3x3 conv), n = (depth - 4) / 6 per stage at 16k, 32k, 64k channels, 1x1
  conv shortcuts where the shape changes, BN-ReLU, global average pooling, linear; no dropout (MW-Net's
  ``droprate`` default). WRN-28-10 has 36.5M parameters (their Table 1). Kaiming-normal (fan-out) conv
  init, PyTorch's default linear weight init with bias 0, as ``wideresnet.py``.

BN: PyTorch's eps 1e-5 and momentum 0.1. Both take any image size (global pooling).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas.errors import JaxnasError
from jaxnas.nn import torch_default_init
from jaxnas.ops.layers import batch_norm
from jaxnas.optimize.models import register_model

_kaiming_in = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
_kaiming_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(c_in, c_out, k, stride, init, rngs):
    p = k // 2
    return nnx.Conv(c_in, c_out, (k, k), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=False,
                    kernel_init=init, rngs=rngs)


class _Basic(nnx.Module):
    def __init__(self, c_in, c_out, stride, rngs):
        self.conv1, self.bn1 = _conv(c_in, c_out, 3, stride, _kaiming_in, rngs), batch_norm(c_out, True, rngs=rngs)
        self.conv2, self.bn2 = _conv(c_out, c_out, 3, 1, _kaiming_in, rngs), batch_norm(c_out, True, rngs=rngs)
        self.stride, self.pad = stride, c_out - c_in

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        short = x
        if self.stride != 1 or self.pad:  # option A: subsample, zero-pad the new channels
            short = x[:, ::self.stride, ::self.stride]
            short = jnp.pad(short, ((0, 0), (0, 0), (0, 0), (self.pad // 2, self.pad - self.pad // 2)))
        return jax.nn.relu(y + short)


class CifarResNet(nnx.Module):
    """ResNet-(6n+2) for CIFAR (module docstring)."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, *, rngs: nnx.Rngs):
        n = (depth - 2) // 6
        self.stem, self.bn = _conv(in_channels, 16, 3, 1, _kaiming_in, rngs), batch_norm(16, True, rngs=rngs)
        blocks, c = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_Basic(c, width, 2 if stage and i == 0 else 1, rngs))
                c = width
        self.blocks = nnx.List(blocks)
        self.fc = nnx.Linear(64, num_classes, kernel_init=_kaiming_in, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


class _PreAct(nnx.Module):
    def __init__(self, c_in, c_out, stride, rngs):
        self.bn1, self.conv1 = batch_norm(c_in, True, rngs=rngs), _conv(c_in, c_out, 3, stride, _kaiming_out, rngs)
        self.bn2, self.conv2 = batch_norm(c_out, True, rngs=rngs), _conv(c_out, c_out, 3, 1, _kaiming_out, rngs)
        self.short = _conv(c_in, c_out, 1, stride, _kaiming_out, rngs) if (c_in != c_out or stride != 1) else None

    def __call__(self, x):
        o = jax.nn.relu(self.bn1(x))
        y = self.conv2(jax.nn.relu(self.bn2(self.conv1(o))))
        return y + (self.short(o) if self.short is not None else x)


class WideResNet(nnx.Module):
    """WRN-depth-k (module docstring)."""

    def __init__(self, depth: int, k: int, in_channels: int, num_classes: int, *, rngs: nnx.Rngs):
        n = (depth - 4) // 6
        self.stem = _conv(in_channels, 16, 3, 1, _kaiming_out, rngs)
        blocks, c = [], 16
        for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
            for i in range(n):
                blocks.append(_PreAct(c, width, 2 if stage and i == 0 else 1, rngs))
                c = width
        self.blocks = nnx.List(blocks)
        self.bn = batch_norm(c, True, rngs=rngs)
        self.fc = nnx.Linear(c, num_classes, kernel_init=torch_default_init, bias_init=nnx.initializers.zeros,
                             rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.fc(jax.nn.relu(self.bn(x)).mean(axis=(1, 2)))


@register_model("resnet")
def _resnet(arg: str, in_shape, num_classes, rngs, cfg):
    try:
        depth = int(arg or 32)
    except ValueError:
        raise JaxnasError(f"model resnet:{arg}: the depth is an integer 6n+2, e.g. resnet:32") from None
    if depth < 8 or (depth - 2) % 6:
        raise JaxnasError(f"model resnet:{arg}: the depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110)")
    return CifarResNet(depth, in_shape[-1], num_classes, rngs=rngs)


@register_model("wrn")
def _wrn(arg: str, in_shape, num_classes, rngs, cfg):
    try:
        depth, k = (int(v) for v in (arg or "28-10").split("-"))
    except ValueError:
        raise JaxnasError(f"model wrn:{arg}: give <depth>-<widen factor>, e.g. wrn:28-10") from None
    if depth < 10 or (depth - 4) % 6 or k < 1:
        raise JaxnasError(f"model wrn:{arg}: the depth must be 6n+4 with n >= 1 and the widen factor >= 1")
    return WideResNet(depth, k, in_shape[-1], num_classes, rngs=rngs)
