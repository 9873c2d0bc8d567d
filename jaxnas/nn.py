"""Building blocks every space and method shares: the architecture-parameter variable type,
PyTorch's default initialisation (for parity with the reference codes), parameter counting, and the
compute dtypes a step may run in.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas.errors import JaxnasError, unknown
from jaxnas.kernels import reference

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
"""The compute dtypes a step may run in (``search.dtype``, ``train.dtype``): parameters, optimizer
states and BN running statistics stay float32 either way."""


def check_dtype(order: str, dtype) -> None:
    """DARTS's finite differences (``second_fd``) perturb the weights by 0.01 / ||grad||, about 1e-5 a
    weight at DARTS's size: below bfloat16's resolution (2^-8 relative), so w+ and w- would round to
    w and the difference to zero. That order needs float32."""
    if order == "second_fd" and jnp.dtype(dtype) != jnp.float32:
        raise JaxnasError(f"search.order=second_fd needs search.dtype=float32, got {jnp.dtype(dtype).name}: its "
                          f"finite-difference step (0.01 / ||grad_w||, ~1e-5 a weight) is below bfloat16's "
                          f"resolution; use order=second (exact) or first with bfloat16")


PASSES = ("unrolled", "loop")


def check_passes(passes: str, order: str, perturbation: bool = False) -> None:
    """``passes="loop"`` needs the first order's two like passes; a perturbation (SDARTS) changes the
    weight pass only, so it cannot share the body."""
    if passes not in PASSES:
        raise unknown("search.passes", passes, PASSES)
    if passes == "loop" and (order != "first" or perturbation):
        why = f"search.order={order}" if order != "first" else "a perturbation of the weight pass (SDARTS)"
        raise JaxnasError(f"search.passes=loop runs the first order's val and train passes as one loop; "
                          f"{why} has no two like passes (allowed there: unrolled)")


class ArchParam(nnx.Variable):
    """Architecture parameters (DARTS's alphas): kept apart from ``nnx.Param`` weights."""


# PyTorch's default conv/linear weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype=jnp.float32) -> jax.Array:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default init with the fan-in given explicitly,
    for weights of E edges stacked on a leading axis (each edge initialised as its own conv)."""
    bound = 1.0 / jnp.sqrt(jnp.asarray(fan_in, dtype))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv(nnx.Conv):
    """``nnx.Conv`` (its parameters, init and checkpoints) computed by ``kernels.reference.conv``,
    whose derivatives of every order stay convolutions of the forward's size (second-order DARTS
    differentiates the kernel gradient of every conv). A 2-D conv with the same stride, dilation
    and symmetric padding on both axes (what ``conv`` builds) takes that path; any other
    configuration is ``nnx.Conv``'s own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from jaxnas import kernels  # the kernel layer imports this module's helpers

        self.matmul_1x1 = reference.matmul_1x1_here(kernels.platform())

    def __call__(self, inputs: jax.Array) -> jax.Array:
        geometry = _square_geometry(self)
        if geometry is None:
            return super().__call__(inputs)
        y = reference.conv(inputs, self.kernel[...], *geometry, self.feature_group_count,
                           matmul_1x1=getattr(self, "matmul_1x1", True))
        return y if self.bias is None else y + self.bias[...]


def _square_geometry(c: nnx.Conv) -> tuple[int, int, int] | None:
    """``(stride, padding, dilation)`` of a 2-D conv that has one of each on both axes, else None."""
    def pair(v):  # flax reads None as 1 for strides and dilations
        v = 1 if v is None else v
        return (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else None

    strides, dilations, pads = pair(c.strides), pair(c.kernel_dilation), pair(c.padding)
    if len(c.kernel_size) != 2 or pair(c.input_dilation) != (1, 1) or c.mask is not None or pads is None:
        return None
    pads = tuple(pair(p) for p in pads)
    if len(set(strides)) != 1 or len(set(dilations)) != 1 or None in pads or len(set(sum(pads, ()))) != 1:
        return None
    return strides[0], pads[0][0], dilations[0]


def conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
         groups: int = 1, *, rngs: nnx.Rngs) -> Conv:
    """A bias-free conv padded like PyTorch (explicit symmetric padding), PyTorch's init."""
    return Conv(c_in, c_out, (k, k), strides=(stride, stride),
                padding=((padding, padding), (padding, padding)),
                kernel_dilation=(dilation, dilation), feature_group_count=groups,
                use_bias=False, kernel_init=torch_default_init, rngs=rngs)


def torch_linear(c_in: int, c_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear`` initialised as PyTorch's ``nn.Linear`` (weight and bias U(+-1/sqrt(c_in)))."""
    bound = 1.0 / c_in ** 0.5
    return nnx.Linear(c_in, c_out, kernel_init=torch_default_init,
                      bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound), rngs=rngs)


def count_params(model: nnx.Module, exclude_auxiliary: bool = True) -> int:
    """Weights (``nnx.Param``) counted as DARTS's utils.count_parameters_in_MB does: the auxiliary head excluded."""
    state = nnx.state(model, nnx.Param)
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if exclude_auxiliary and any(getattr(p, "key", None) == "auxiliary" for p in path):
            continue
        total += leaf.size
    return total


def split_model(model: nnx.Module) -> tuple[Any, Any, Any, Any]:
    """Split a supernet into (graphdef, params, alphas, batch_stats); nothing else may hold state."""
    graphdef, params, alphas, stats, rest = nnx.split(model, nnx.Param, ArchParam, nnx.BatchStat, ...)
    leftover = jax.tree.leaves(rest)
    if leftover:
        raise ValueError(f"supernet holds state that is neither weights, alphas nor BN statistics: {rest}")
    return graphdef, params, alphas, stats
