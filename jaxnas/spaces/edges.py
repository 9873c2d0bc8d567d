"""All mixed-op edges that leave one state of a search cell, computed together.

DARTS's maths per edge is unchanged (Eq. 1: sum_o w_o * o(x), w the edge's relaxed
weights); this module only chooses how XLA sees it. The edges leaving one state read the
same input, so each op runs once for all of them in its batched form (registered with
the op: one depthwise call per op for all edges, pooling once); an op registered without
a batched form runs per edge. Each node's sum is materialised once (``kernels.materialize``),
not recomputed by XLA inside every consumer.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas import kernels
from jaxnas.ops import batch_norm, get_op


class PerEdge(nnx.Module):
    """An op without a batched form: E modules built by its factory, outputs stacked on axis 3."""

    def __init__(self, name: str, E: int, C: int, stride: int, bn: bool, rngs: nnx.Rngs):
        spec = get_op(name)
        mods = [spec.factory(C, stride, False, rngs) for _ in range(E)]
        if bn:
            mods = [nnx.Sequential(m, batch_norm(C, False, rngs=rngs)) for m in mods]
        self.edges = nnx.List(mods)

    def __call__(self, x):
        return jnp.stack([m(x) for m in self.edges], axis=3)


class SourceEdges(nnx.Module):
    """The mixed ops of E edges that all read one state ``x``; equal to E ``ops.MixedOp``
    run one by one (tests/test_spaces_edges.py)."""

    def __init__(self, E: int, C: int, stride: int, op_names: Sequence[str], *, rngs: nnx.Rngs,
                 search_bn: bool = True):
        self.E, self.C, self.stride = E, C, stride
        self.op_names = tuple(op_names)
        self.impl = kernels.resolve()
        ops = {}
        for i, name in enumerate(self.op_names):
            spec = get_op(name)
            if spec.zero:
                continue
            bn = spec.bn_in_search and search_bn
            ops[str(i)] = spec.batched(E, C, stride, bn, rngs) if spec.batched else \
                PerEdge(name, E, C, stride, bn, rngs)
        self.ops = nnx.Dict(ops)

    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        """x (N, H, W, C); weights (E, n_ops). Returns (N, H', W', E, C): edge e is
        ``out[..., e, :]`` (this layout needs no transposes)."""
        out = None
        for i in range(len(self.op_names)):
            if str(i) not in self.ops:
                continue
            term = self.ops[str(i)](x) * weights[:, i, None]  # (E, 1) broadcasts over the (E, C) trailing axes
            out = term if out is None else out + term
        if out is None:  # every op is none
            s = self.stride
            out = jnp.zeros(x[:, ::s, ::s, None, :].shape[:3] + (self.E, x.shape[-1]), x.dtype)
        return out


def cell_states(sources, inputs: Sequence[jax.Array], rows, targets, weights: jax.Array) -> list[jax.Array]:
    """The states of a cell: ``inputs``, then each node as the sum of the edges into it.

    ``sources[s]`` (a ``SourceEdges``) reads state s and feeds states ``targets[s]`` with weight
    rows ``rows[s]``; every edge goes from an earlier state to a later one.
    """
    impl = sources[0].impl
    states, pending = list(inputs), {}
    for s, source in enumerate(sources):
        if s == len(states):
            states.append(kernels.materialize(pending.pop(s), impl))
        out = source(states[s], weights[jnp.array(rows[s])])
        for k, t in enumerate(targets[s]):
            edge = out[..., k, :]
            pending[t] = pending[t] + edge if t in pending else edge
    states.extend(kernels.materialize(pending[t], impl) for t in sorted(pending))
    return states
