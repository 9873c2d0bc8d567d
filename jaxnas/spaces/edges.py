"""All mixed-op edges that leave one state of a search cell, computed together.

DARTS's maths per edge is unchanged (Eq. 1: sum_o w_o * o(x), w the edge's relaxed
weights); this module only chooses how XLA sees it. The edges leaving one state read the
same input, so each op runs once for all of them in its batched form (registered with
the op: one depthwise call per op for all edges, pooling once); an op registered without
a batched form runs per edge. Each node's sum is materialised once (``kernels.materialize``),
not recomputed by XLA inside every consumer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnas import kernels
from jaxnas.errors import JaxnasError
from jaxnas.ops import batch_norm, batch_norm_together, get_op
from jaxnas.relaxations import get_relaxation


@dataclasses.dataclass(frozen=True)
class EdgeMix:
    """How each edge mixes its candidate ops (``SourceEdges``), one value passed down from the space's
    config; the defaults are DARTS's.

    * ``partial=K`` (PC-DARTS, Xu et al. 2020, Sec. 3.1): only C/K channels go through the ops.
    * ``aux_skip`` (DARTS-, Chu et al. 2021, Eq. 3): an extra scheduled ``skip * skip_connect(x)``.
    * ``hard`` (GDAS): the weights are straight-through one-hot rows; unselected ops are not run.
    * ``search_bn``: ops registered with ``bn_in_search`` get a non-affine BN after them (DARTS's
      ``MixedOp``; NAS-Bench-201's supernet has none).
    """

    partial: int = 1
    aux_skip: bool = False
    hard: bool = False
    search_bn: bool = True

    @classmethod
    def of(cls, relaxation: str, partial_channels: int = 1, aux_skip: bool = False,
           search_bn: bool = True) -> "EdgeMix":
        """The mixed op a space config asks for; ``hard`` follows from the relaxation."""
        return cls(partial_channels, aux_skip, get_relaxation(relaxation).hard, search_bn)


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


def group_softmax(betas: jax.Array, sizes: Sequence[int]) -> jax.Array:
    """PC-DARTS's edge normalization (Xu et al. 2020, Eq. 4; model_search.py ``weights2``): softmax of
    the per-edge betas over each node's incoming edges, ``sizes`` consecutive groups of edge rows."""
    out, start = [], 0
    for n in sizes:
        out.append(jax.nn.softmax(betas[start:start + n]))
        start += n
    return jnp.concatenate(out)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """PC-DARTS's ``channel_shuffle`` on the last axis: channel g*(C/groups)+j moves to j*groups+g."""
    c = x.shape[-1]
    return x.reshape(x.shape[:-1] + (groups, c // groups)).swapaxes(-1, -2).reshape(x.shape)


class SourceEdges(nnx.Module):
    """The mixed ops of E edges that all read one state ``x``; equal to E ``ops.MixedOp``
    run one by one (tests/test_spaces_edges.py). With ``fuse`` (default: the dense form off the CPU,
    what GPUs and TPUs run) the ops that are chains of ReLU-separable-BN blocks (a batched module with
    ``blocks()``: DARTS's sep and dil convs) run stage by stage together: a later stage's per-edge
    blocks as one grouped convolution a geometry (``kernels.separable_many``), each stage's BNs as one
    (``ops.batch_norm_together``); the same maths in fewer, larger kernels, which is what XLA:GPU's
    compile time and kernel launches grow with (docs/accelerators.md). ``mixed`` (an ``EdgeMix``) says how each edge mixes
    its ops: DARTS's weighted sum by default, or PC-DARTS's partial channels (the other C - C/K
    channels bypass the ops, 2x2 max-pooled at stride 2, are concatenated after them and the
    channels shuffled in K groups), DARTS-'s auxiliary skip (its stride-2 form a non-affine
    FactorizedReduce), GDAS's hard selection (an op no edge selected is not run, and an edge's
    unselected ops contribute their weight as a value; see ``jaxnas.relaxations``).
    """

    def __init__(self, E: int, C: int, stride: int, op_names: Sequence[str], *, rngs: nnx.Rngs,
                 mixed: EdgeMix = EdgeMix(), fuse: bool | None = None):
        partial, aux_skip, hard = mixed.partial, mixed.aux_skip, mixed.hard
        if partial < 1 or C % partial:
            raise JaxnasError(f"space.partial_channels={partial} must divide the cell's channel count {C}")
        if partial > 1 and aux_skip:
            raise JaxnasError("space.partial_channels > 1 and space.aux_skip cannot be combined "
                              "(no official code defines the auxiliary skip over partial channels)")
        self.E, self.C, self.stride, self.partial, self.hard = E, C, stride, partial, hard
        self.op_names = tuple(op_names)
        self.impl = kernels.resolve()
        self.fuse = (self.impl == "dense" and kernels.platform() != "cpu") if fuse is None else bool(fuse)
        c_ops = C // partial
        ops = {}
        for i, name in enumerate(self.op_names):
            spec = get_op(name)
            if spec.zero:
                continue
            bn = spec.bn_in_search and mixed.search_bn
            ops[str(i)] = spec.batched(E, c_ops, stride, bn, rngs) if spec.batched else \
                PerEdge(name, E, c_ops, stride, bn, rngs)
        self.ops = nnx.Dict(ops)
        aux = None
        if aux_skip:
            spec = get_op("skip_connect")
            aux = spec.batched(E, C, stride, False, rngs) if spec.batched else \
                PerEdge("skip_connect", E, C, stride, False, rngs)
        self.aux = nnx.data(aux)

    def _out_shape(self, x: jax.Array, channels: int) -> tuple[int, ...]:
        s = self.stride
        return x[:, ::s, ::s, None, :].shape[:3] + (self.E, channels)

    def _mixed(self, x: jax.Array, weights: jax.Array, scaled: jax.Array) -> jax.Array:
        """sum_o w_o * o(x) over the op channels; ``weights`` decide what a hard relaxation selected,
        ``scaled`` (weights times any edge scale) multiply."""
        shape = self._out_shape(x, x.shape[-1])
        outs = {} if self.hard or not self.fuse else self._chains(x)
        out = None
        for i in range(len(self.op_names)):
            w = scaled[:, i, None]  # (E, 1) broadcasts over the (E, C) trailing axes
            if str(i) not in self.ops:
                if not self.hard:
                    continue
                term = jnp.broadcast_to(w * (weights[:, i, None] == 0), shape)  # a none op left unselected
            elif self.hard:
                sel = weights[:, i, None] != 0
                term = nnx.cond(jnp.any(sel), lambda op, x, w, sel: w * jnp.where(sel, op(x), 1.0),
                                lambda op, x, w, sel: jnp.broadcast_to(w, shape), self.ops[str(i)], x, w, sel)
            else:
                term = (outs[str(i)] if str(i) in outs else self.ops[str(i)](x)) * w
            out = term if out is None else out + term
        return jnp.zeros(shape, x.dtype) if out is None else out  # every op is none

    def _chains(self, x: jax.Array) -> dict[str, jax.Array]:
        """The outputs of every op that is a chain of ReLU-separable-BN blocks, stage by stage: the
        first blocks read x (shared), later ones their op's previous output."""
        chains = {i: op.blocks() for i, op in self.ops.items() if hasattr(op, "blocks")}
        if len(chains) < 2 and not any(len(c) > 1 for c in chains.values()):
            return {}
        outs: dict[str, jax.Array] = {}
        for stage in range(max((len(c) for c in chains.values()), default=0)):
            ids = [i for i, c in chains.items() if len(c) > stage]
            blocks = [chains[i][stage] for i in ids]
            xs = x if stage == 0 else [outs[i] for i in ids]
            ys = kernels.separable_many(xs, [b.geometry() for b in blocks], self.impl, relu=True)
            for i, y in zip(ids, batch_norm_together([b.bn for b in blocks], ys)):
                outs[i] = y
        return outs

    def __call__(self, x: jax.Array, weights: jax.Array, edge_scale: jax.Array | None = None,
                 skip: jax.Array | float = 1.0) -> jax.Array:
        """x (N, H, W, C); weights (E, n_ops); edge_scale (E,) multiplies each edge's output (PC-DARTS's
        edge normalization); ``skip``: the auxiliary skip's beta. Returns (N, H', W', E, C): edge e is
        ``out[..., e, :]`` (this layout needs no transposes)."""
        scaled = (weights if edge_scale is None else weights * edge_scale[:, None]).astype(x.dtype)
        if edge_scale is not None:
            edge_scale = edge_scale.astype(x.dtype)
        if self.partial == 1:
            out = self._mixed(x, weights, scaled)
        else:
            c_ops = self.C // self.partial
            mixed = self._mixed(x[..., :c_ops], weights, scaled)
            rest = x[..., c_ops:]
            if self.stride == 2:
                rest = kernels.pool(rest, "max", 2, 2, 0, self.impl)
            rest = jnp.broadcast_to(rest[..., None, :], mixed.shape[:3] + (self.E, rest.shape[-1]))
            if edge_scale is not None:
                rest = rest * edge_scale[:, None]
            out = channel_shuffle(jnp.concatenate([mixed, rest], axis=-1), self.partial)
        if self.aux is not None:
            out = out + jnp.asarray(skip, x.dtype) * self.aux(x)
        return out


def cell_states(sources, inputs: Sequence[jax.Array], rows, targets, weights: jax.Array,
                edge_scale: jax.Array | None = None, skip: jax.Array | float = 1.0) -> list[jax.Array]:
    """The states of a cell: ``inputs``, then each node as the sum of the edges into it.

    ``sources[s]`` (a ``SourceEdges``) reads state s and feeds states ``targets[s]`` with weight
    rows ``rows[s]`` (and ``edge_scale`` entries, when given); every edge goes from an earlier
    state to a later one.
    """
    impl = sources[0].impl
    states, pending = list(inputs), {}
    for s, source in enumerate(sources):
        if s == len(states):
            states.append(kernels.materialize(pending.pop(s), impl))
        idx = jnp.array(rows[s])
        out = source(states[s], weights[idx], None if edge_scale is None else edge_scale[idx], skip)
        for k, t in enumerate(targets[s]):
            edge = out[..., k, :]
            pending[t] = pending[t] + edge if t in pending else edge
    states.extend(kernels.materialize(pending[t], impl) for t in sorted(pending))
    return states
