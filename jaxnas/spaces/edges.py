"""All mixed-op edges that leave one state of a search cell, computed together.

DARTS's maths per edge is unchanged (Eq. 1: sum_o softmax(alpha)_o * o(x)); this
module only chooses how XLA sees it. XLA:CPU runs dense convolutions on its fast
path but grouped ones (depthwise convs, and any conv vmapped over edges) at well
under 1 GFLOP/s (docs/benchmarks.md), so:

- the edges leaving one state read the same input, so each op's first depthwise
  conv runs for all of them in one call;
- ``space.depthwise`` chooses how a depthwise kxk + pointwise 1x1 pair is computed:
  ``"native"`` runs the depthwise convs of all E edges and then each edge's pointwise
  conv in one call of jaxnas's own CPU kernel (``jaxnas.native.separable``); ``"dense"`` computes the
  pair as one dense kxk conv with kernel ``dw[.., c] * pw[c, d]`` (exact, k*k*C*C
  MACs a pixel instead of k*k*C + C*C, but on XLA's fast path); ``"shift"`` as k*k
  shifted multiply-adds (slow to compile). ``"auto"`` (the default) is ``native``
  where the kernel builds and JAX runs on the CPU, else ``dense``;
- pooling (and the non-affine BN DARTS puts after it) is the same for every edge
  leaving a state, so it is computed once;
- each node's sum is materialised once (``jaxnas.native.materialize``), not
  recomputed by XLA inside every consumer;
- ops without a batched form (user-registered ones) run per edge as modules.

The weights are built by the ops' own factories (``ops.MixedOp``), so
initialisation and parameter counts are DARTS's, then restacked per op.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxnas import native
from jaxnas import ops as ops_lib
from jaxnas.errors import unknown

DW_IMPLS = ("auto", "native", "dense", "shift")


def resolve_impl(impl: str) -> str:
    """``auto``: the native kernel on CPU where it builds (jaxnas/native), else ``dense``."""
    if impl not in DW_IMPLS:
        raise unknown("depthwise implementation", impl, DW_IMPLS)
    if impl == "auto":
        return "native" if native.available() else "dense"
    if impl == "native" and not native.available():
        return "dense"
    return impl


def _conv(x, w, stride, pad, dil=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                        rhs_dilation=(dil, dil), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _shift_depthwise(x, dw, stride, pad, dil):
    """x (N, H, W, [E,] C), dw (E, k, k, C) -> (N, H', W', E, C): depthwise conv as shifted multiply-adds."""
    k = dw.shape[1]
    shared = x.ndim == 4
    widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 3)
    xp = jnp.pad(x, widths)
    h_out = (x.shape[1] + 2 * pad - dil * (k - 1) - 1) // stride + 1
    w_out = (x.shape[2] + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out = None
    for i in range(k):
        for j in range(k):
            patch = xp[:, i * dil: i * dil + stride * (h_out - 1) + 1: stride,
                       j * dil: j * dil + stride * (w_out - 1) + 1: stride]
            if shared:
                patch = patch[..., None, :]
            term = patch * dw[:, i, j, :]
            out = term if out is None else out + term
    return out


def separable(x, dw, pw, stride: int, pad: int, dil: int, impl: str) -> jax.Array:
    """ReLU'd input -> depthwise kxk -> pointwise 1x1 for E edges at once.

    x: (N, H, W, C) shared by the edges or (N, H, W, E, C) one per edge; dw (E, k, k, C);
    pw (E, C, D). Returns (N, H', W', E, D).
    """
    E, k = dw.shape[0], dw.shape[1]
    if impl == "native" and x.dtype == jnp.float32:
        return native.separable(x, dw, pw, stride, dil, pad)
    if impl == "shift":
        return jnp.einsum("nhwec,ecd->nhwed", _shift_depthwise(x, dw, stride, pad, dil), pw)
    kernel = dw[:, :, :, :, None] * pw[:, None, None, :, :]  # (E, k, k, C, D)
    if x.ndim == 4:
        stacked = jnp.moveaxis(kernel, 0, 3).reshape(k, k, dw.shape[-1], E * pw.shape[-1])
        y = _conv(x, stacked, stride, pad, dil)
        return y.reshape(y.shape[:3] + (E, pw.shape[-1]))
    return jnp.stack([_conv(x[..., e, :], kernel[e], stride, pad, dil) for e in range(E)], axis=3)


def _stack(arrays) -> nnx.Param:
    return nnx.Param(jnp.asarray(np.stack([np.asarray(a) for a in arrays])))


class _BN(nnx.Module):
    """A non-affine BN over the (E, C) channels of a (N, H, W, E, C) tensor: E BNs in one."""

    def __init__(self, E: int, C: int, rngs: nnx.Rngs):
        self.bn = ops_lib.batch_norm(E * C, False, rngs=rngs)

    def __call__(self, y):
        return self.bn(y.reshape(y.shape[:3] + (-1,))).reshape(y.shape)


class _SepOp(nnx.Module):
    """``sep_conv_kxk`` (two separable blocks, the first strided) for E edges."""

    def __init__(self, mods, k, pad, stride, C, rngs):
        self.k, self.pad, self.stride = k, pad, stride
        b1, b2 = [m.block1 for m in mods], [m.block2 for m in mods]
        self.dw1 = _stack([b.depthwise.kernel[...][:, :, 0, :] for b in b1])
        self.pw1 = _stack([b.pointwise.kernel[...][0, 0] for b in b1])
        self.dw2 = _stack([b.depthwise.kernel[...][:, :, 0, :] for b in b2])
        self.pw2 = _stack([b.pointwise.kernel[...][0, 0] for b in b2])
        self.bn1, self.bn2 = _BN(len(mods), C, rngs), _BN(len(mods), C, rngs)

    def __call__(self, r, impl):
        y = self.bn1(separable(r, self.dw1[...], self.pw1[...], self.stride, self.pad, 1, impl))
        return self.bn2(separable(jax.nn.relu(y), self.dw2[...], self.pw2[...], 1, self.pad, 1, impl))


class _DilOp(nnx.Module):
    """``dil_conv_kxk`` (one dilated separable block) for E edges."""

    def __init__(self, mods, k, pad, dil, stride, C, rngs):
        self.k, self.pad, self.dil, self.stride = k, pad, dil, stride
        self.dw = _stack([m.depthwise.kernel[...][:, :, 0, :] for m in mods])
        self.pw = _stack([m.pointwise.kernel[...][0, 0] for m in mods])
        self.bn = _BN(len(mods), C, rngs)

    def __call__(self, r, impl):
        return self.bn(separable(r, self.dw[...], self.pw[...], self.stride, self.pad, self.dil, impl))


class _ConvOp(nnx.Module):
    """ReLU -> dense kxk conv -> BN (NAS-Bench-201's ``nor_conv``) for E edges: one conv."""

    def __init__(self, mods, k, pad, stride, C, rngs):
        self.pad, self.stride = pad, stride
        self.kernel = _stack([m.conv.kernel[...] for m in mods])  # (E, k, k, C, C)
        self.bn = _BN(len(mods), C, rngs)

    def __call__(self, r, impl):
        E, k, _, C, D = self.kernel.shape
        y = _conv(r, jnp.moveaxis(self.kernel[...], 0, 3).reshape(k, k, C, E * D), self.stride, self.pad)
        return self.bn(y.reshape(y.shape[:3] + (E, D)))


class _ReduceOp(nnx.Module):
    """``skip_connect`` at stride 2: FactorizedReduce (two 1x1 stride-2 convs, concat, BN) for E edges."""

    def __init__(self, mods, C, rngs):
        self.k1 = _stack([m.conv1.kernel[...][0, 0] for m in mods])  # (E, C, C/2)
        self.k2 = _stack([m.conv2.kernel[...][0, 0] for m in mods])
        self.bn = _BN(len(mods), C, rngs)

    def __call__(self, r, impl):
        shifted = jnp.pad(r[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        a = jnp.einsum("nhwc,ecd->nhwed", r[:, ::2, ::2, :], self.k1[...])
        b = jnp.einsum("nhwc,ecd->nhwed", shifted[:, ::2, ::2, :], self.k2[...])
        return self.bn(jnp.concatenate([a, b], axis=-1))


class SourceEdges(nnx.Module):
    """The mixed ops of E edges that all read one state ``x``.

    Built from E ``ops.MixedOp`` edges (their weights restacked), and equal to running
    them one by one (tests/test_spaces_edges.py).
    """

    def __init__(self, E: int, C: int, stride: int, op_names: Sequence[str], *, rngs: nnx.Rngs,
                 dw_impl: str = "auto", search_bn: bool = True):
        dw_impl = resolve_impl(dw_impl)
        mixed = [ops_lib.MixedOp(C, stride, op_names, affine=False, search_bn=search_bn, rngs=rngs)
                 for _ in range(E)]
        self.E, self.stride, self.dw_impl = E, stride, dw_impl
        self.op_names = tuple(op_names)
        batched, kinds, generic = {}, [], {}
        for i, name in enumerate(self.op_names):
            mods = [m.ops[i] for m in mixed]
            kind, mod = _batched(name, mods, C, stride, rngs)
            kinds.append(kind)
            if kind == "generic":
                generic[str(i)] = nnx.List(mods)
            elif mod is not None:
                batched[str(i)] = mod
        self.kinds = tuple(kinds)
        self.batched = nnx.Dict(batched)
        self.generic = nnx.Dict(generic)

    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        """x (N, H, W, C); weights (E, n_ops) softmaxed. Returns (N, H', W', E, C): edge e is
        ``out[..., e, :]`` (this layout needs no transposes)."""
        r = jax.nn.relu(x)
        out = None
        for i, kind in enumerate(self.kinds):
            w = weights[:, i, None]  # (E, 1): broadcasts over the (E, C) trailing axes
            if kind == "none":
                continue
            if kind == "identity":
                term = x[..., None, :] * w
            elif kind == "pool":
                term = self.batched[str(i)](x)[..., None, :] * w
            elif kind == "generic":
                term = jnp.stack([self.generic[str(i)][e](x) for e in range(self.E)], axis=3) * w
            else:
                term = self.batched[str(i)](r, self.dw_impl) * w  # (N, H', W', E, C)
            out = term if out is None else out + term
        if out is None:  # every op is none
            s = self.stride
            out = jnp.zeros(x[:, ::s, ::s, None, :].shape[:3] + (self.E, x.shape[-1]), x.dtype)
        return out


def _materialize(x: jax.Array) -> jax.Array:
    """Compute a node once: XLA:CPU would otherwise recompute the node's whole weighted sum
    (and the earlier nodes inside it) in every consumer (jaxnas.native.materialize)."""
    return native.materialize(x) if native.available() else x


def cell_states(sources, inputs: Sequence[jax.Array], rows, targets, weights: jax.Array) -> list[jax.Array]:
    """The states of a cell: ``inputs``, then each node as the sum of the edges into it.

    ``sources[s]`` (a ``SourceEdges``) reads state s and feeds states ``targets[s]`` with alpha
    rows ``rows[s]``; every edge goes from an earlier state to a later one.
    """
    states, pending = list(inputs), {}
    for s, source in enumerate(sources):
        if s == len(states):
            states.append(_materialize(pending.pop(s)))
        out = source(states[s], weights[jnp.array(rows[s])])
        for k, t in enumerate(targets[s]):
            edge = out[..., k, :]
            pending[t] = pending[t] + edge if t in pending else edge
    states.extend(_materialize(pending[t]) for t in sorted(pending))
    return states


class _Pool(nnx.Module):
    def __init__(self, kind, stride, C, bn, rngs):
        self.kind, self.stride = kind, stride
        self.bn = ops_lib.batch_norm(C, False, rngs=rngs) if bn else None

    def __call__(self, x):
        fn = ops_lib.max_pool if self.kind == "max" else ops_lib.avg_pool
        y = fn(x, 3, self.stride, 1)
        return self.bn(y) if self.bn is not None else y


def _batched(name, mods, C, stride, rngs):
    """(kind, batched module or None) for op ``name`` given its E per-edge modules."""
    m0 = mods[0]
    if name == "none" and isinstance(m0, ops_lib.Zero):
        return "none", None
    if name == "skip_connect":
        if isinstance(m0, ops_lib.Identity):
            return "identity", None
        if isinstance(m0, ops_lib.FactorizedReduce):
            return "reduce", _ReduceOp(mods, C, rngs)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = m0.layers[0] if isinstance(m0, nnx.Sequential) else m0
        if isinstance(pool, ops_lib.Pool) and pool.k == 3 and pool.padding == 1:
            return "pool", _Pool(pool.kind, stride, C, isinstance(m0, nnx.Sequential), rngs)
    spec = _CONVS.get(name)
    if spec is not None:
        kind, k, pad, dil = spec
        if kind == "sep" and isinstance(m0, ops_lib.SepConv):
            return "conv", _SepOp(mods, k, pad, stride, C, rngs)
        if kind == "dil" and isinstance(m0, ops_lib.DilConv):
            return "conv", _DilOp(mods, k, pad, dil, stride, C, rngs)
        if kind == "conv" and isinstance(m0, ops_lib.ReLUConvBN):
            return "conv", _ConvOp(mods, k, pad, stride, C, rngs)
    return "generic", None


_CONVS = {
    "sep_conv_3x3": ("sep", 3, 1, 1), "sep_conv_5x5": ("sep", 5, 2, 1),
    "dil_conv_3x3": ("dil", 3, 2, 2), "dil_conv_5x5": ("dil", 5, 4, 2),
    "nor_conv_1x1": ("conv", 1, 0, 1), "nor_conv_3x3": ("conv", 3, 1, 1),
}
