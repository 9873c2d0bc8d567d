"""The DARTS search space (Liu et al. 2019, Sec. 2.1; cnn/model_search.py).

Cells have 2 input states and ``nodes`` intermediate nodes; node i sums one mixed
op from each of the 2+i earlier states. Edges are numbered node-major, as the
rows of DARTS's alpha matrices. All normal cells share ``alphas_normal`` and all
reduction cells ``alphas_reduce``.

The edges leaving each state run together (``edges.SourceEdges``): one depthwise
call per op for all of them (jaxnas's native CPU kernel, or a dense conv with the
product kernel where that is not available), with identical maths.
"""

from __future__ import annotations

import dataclasses
import json

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxnas import genotype as genotype_lib
from jaxnas.errors import JaxnasError
from jaxnas.ops import FactorizedReduce, ReLUConvBN, batch_norm, conv, resolve_op_set, torch_default_init
from jaxnas.spaces import register_discrete_space, register_space
from jaxnas.spaces.base import DiscreteSpace
from jaxnas.spaces.edges import SourceEdges, cell_states


class ArchParam(nnx.Variable):
    """Architecture parameters (alphas): kept apart from ``nnx.Param`` weights."""


def edge_row(node: int, source: int) -> int:
    """Alpha row of the edge from state ``source`` into intermediate node ``node``."""
    return sum(2 + i for i in range(node)) + source


def num_edges(nodes: int) -> int:
    return sum(2 + i for i in range(nodes))


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Cells at 1/3 and 2/3 depth reduce (DARTS: ``i in [layers//3, 2*layers//3]``)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


class SearchCell(nnx.Module):
    """A DARTS search cell (cnn/model_search.py ``Cell``); the edges leaving each state
    run together (``edges.SourceEdges``)."""

    def __init__(self, nodes: int, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 op_names: Sequence[str], *, rngs: nnx.Rngs, dw_impl: str = "auto"):
        self.nodes, self.reduction = nodes, reduction
        if reduction_prev:
            self.pre0 = FactorizedReduce(C_pp, C, affine=False, rngs=rngs)
        else:
            self.pre0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False, rngs=rngs)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False, rngs=rngs)
        # State s (0, 1: the cell inputs; 2 + i: node i) feeds states targets[s] with alpha rows rows[s].
        self.targets = tuple(tuple(range(2, nodes + 2)) if s < 2 else tuple(range(s + 1, nodes + 2))
                             for s in range(nodes + 1))
        self.rows = tuple(tuple(edge_row(t - 2, s) for t in ts) for s, ts in enumerate(self.targets))
        self.sources = nnx.List([
            SourceEdges(len(t), C, 2 if reduction and s < 2 else 1, op_names, rngs=rngs, dw_impl=dw_impl)
            for s, t in enumerate(self.targets)])

    def __call__(self, s0: jax.Array, s1: jax.Array, weights: jax.Array) -> jax.Array:
        states = cell_states(self.sources, [self.pre0(s0), self.pre1(s1)], self.rows, self.targets, weights)
        return jnp.concatenate(states[2:], axis=-1)


class DartsSupernet(nnx.Module):
    """DARTS ``Network`` (search model): stem, cells, global pooling, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, C: int = 16, layers: int = 8, nodes: int = 4,
                 stem_multiplier: int = 3, ops: str | Sequence[str] = "darts", depthwise: str = "auto",
                 rngs: nnx.Rngs):
        self.op_names = resolve_op_set(ops)
        self.nodes = nodes
        c_curr = stem_multiplier * C
        self.stem_conv = conv(in_channels, c_curr, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(c_curr, True, rngs=rngs)
        C_pp, C_p, c_curr = c_curr, c_curr, C
        cells, reduction_prev = [], False
        self.reductions = reduction_layers(layers)
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                c_curr *= 2
            cells.append(SearchCell(nodes, C_pp, C_p, c_curr, reduction, reduction_prev, self.op_names, rngs=rngs,
                                    dw_impl=depthwise))
            reduction_prev = reduction
            C_pp, C_p = C_p, nodes * c_curr
        self.cells = nnx.List(cells)
        self.classifier = _torch_linear(C_p, num_classes, rngs)
        shape = (num_edges(nodes), len(self.op_names))
        self.alphas_normal = ArchParam(1e-3 * jax.random.normal(rngs.params(), shape))
        self.alphas_reduce = ArchParam(1e-3 * jax.random.normal(rngs.params(), shape))

    def __call__(self, x: jax.Array) -> jax.Array:
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        w_normal = jax.nn.softmax(self.alphas_normal[...], axis=-1)
        w_reduce = jax.nn.softmax(self.alphas_reduce[...], axis=-1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(s1.mean(axis=(1, 2)))

    def genotype(self) -> genotype_lib.Genotype:
        """DARTS's discretization of the current alphas (see ``genotype.derive``)."""
        w_n = np.asarray(jax.nn.softmax(self.alphas_normal[...], axis=-1))
        w_r = np.asarray(jax.nn.softmax(self.alphas_reduce[...], axis=-1))
        return genotype_lib.derive(w_n, w_r, self.op_names, self.nodes)


@register_space("darts")
def build(space_cfg, in_shape, num_classes: int, rngs: nnx.Rngs) -> DartsSupernet:
    for field in ("C", "layers", "nodes", "stem_multiplier"):
        if int(space_cfg[field]) < 1:
            raise JaxnasError(f"space.{field} must be a positive integer, got {space_cfg[field]!r}")
    if len(in_shape) != 3:
        raise JaxnasError(f"the DARTS space takes images (H, W, C), got input shape {tuple(in_shape)}")
    return DartsSupernet(in_shape[-1], num_classes, C=space_cfg.C, layers=space_cfg.layers,
                         nodes=space_cfg.nodes, stem_multiplier=space_cfg.stem_multiplier,
                         ops="darts" if space_cfg.ops == "auto" else space_cfg.ops,
                         depthwise=space_cfg.get("depthwise", "auto"), rngs=rngs)


# ---------------------------------------------------------------- the discrete (evaluation) network


def drop_path(x: jax.Array, drop_prob, key: jax.Array) -> jax.Array:
    """Per-sample drop of a whole path, kept samples scaled by 1/keep (DARTS utils.drop_path)."""
    keep = 1.0 - drop_prob
    mask = jax.random.bernoulli(key, keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, 0.0)


class EvalCell(nnx.Module):
    """A DARTS cell built only from a genotype's ops (cnn/model.py ``Cell``), affine BN."""

    def __init__(self, genotype: genotype_lib.Genotype, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, *, rngs: nnx.Rngs):
        from jaxnas.ops import Identity, get_op

        self.reduction = reduction
        if reduction_prev:
            self.pre0 = FactorizedReduce(C_pp, C, affine=True, rngs=rngs)
        else:
            self.pre0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=True, rngs=rngs)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True, rngs=rngs)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.sources = tuple(src for _, src in edges)
        ops = [get_op(name).factory(C, 2 if reduction and src < 2 else 1, True, rngs) for name, src in edges]
        self.is_identity = tuple(isinstance(op, Identity) for op in ops)
        self.ops = nnx.List(ops)
        self.multiplier = len(self.concat)

    def __call__(self, s0, s1, drop_prob=0.0, key=None):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(len(self.sources) // 2):
            total = 0.0
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.sources[k]])
                if key is not None and not self.is_identity[k]:
                    key, sub = jax.random.split(key)
                    h = drop_path(h, drop_prob, sub)
                total = total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nnx.Module):
    """DARTS ``AuxiliaryHeadCIFAR``: ReLU, avg-pool 5x5/3 (padding not counted), 1x1 conv 128, BN, ReLU,
    2x2 conv 768, BN, ReLU, linear. Input is 8x8 for 32x32 images."""

    def __init__(self, C: int, num_classes: int, *, rngs: nnx.Rngs):
        self.conv1 = conv(C, 128, 1, rngs=rngs)
        self.bn1 = batch_norm(128, True, rngs=rngs)
        self.conv2 = conv(128, 768, 2, rngs=rngs)
        self.bn2 = batch_norm(768, True, rngs=rngs)
        self.classifier = _torch_linear(768, num_classes, rngs)

    def __call__(self, x):
        from jaxnas.ops import avg_pool

        x = avg_pool(jax.nn.relu(x), 5, 3, 0)
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = jax.nn.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.reshape(x.shape[0], -1))


def _torch_linear(c_in: int, c_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    bound = 1.0 / np.sqrt(c_in)
    return nnx.Linear(c_in, c_out, kernel_init=torch_default_init,
                      bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound), rngs=rngs)


class DartsNetwork(nnx.Module):
    """DARTS ``NetworkCIFAR``: the evaluation network of a genotype (C=36, 20 layers in the paper)."""

    def __init__(self, genotype: genotype_lib.Genotype, in_channels: int, num_classes: int, *, C: int = 36,
                 layers: int = 20, auxiliary: bool = True, stem_multiplier: int = 3, rngs: nnx.Rngs):
        genotype_lib.validate(genotype)
        c_curr = stem_multiplier * C
        self.stem_conv = conv(in_channels, c_curr, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(c_curr, True, rngs=rngs)
        C_pp, C_p, c_curr = c_curr, c_curr, C
        cells, reduction_prev = [], False
        self.reductions = reduction_layers(layers)
        self.aux_after = 2 * layers // 3
        c_aux = None
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                c_curr *= 2
            cell = EvalCell(genotype, C_pp, C_p, c_curr, reduction, reduction_prev, rngs=rngs)
            cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * c_curr
            if i == self.aux_after:
                c_aux = C_p
        self.cells = nnx.List(cells)
        self.auxiliary = AuxiliaryHead(c_aux, num_classes, rngs=rngs) if auxiliary else None
        self.classifier = _torch_linear(C_p, num_classes, rngs)

    def __call__(self, x, drop_prob=0.0, key=None):
        """Logits and auxiliary logits (None without the head); drop-path only when ``key`` is given."""
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        aux = None
        for i, cell in enumerate(self.cells):
            sub = None
            if key is not None:
                key, sub = jax.random.split(key)
            s0, s1 = s1, cell(s0, s1, drop_prob, sub)
            if i == self.aux_after and self.auxiliary is not None:
                aux = self.auxiliary(s1)
        return self.classifier(s1.mean(axis=(1, 2))), aux


def count_params(model: nnx.Module, exclude_auxiliary: bool = True) -> int:
    """Weights counted as DARTS's utils.count_parameters_in_MB does: the auxiliary head excluded."""
    state = nnx.state(model, nnx.Param)
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if exclude_auxiliary and any(getattr(p, "key", None) == "auxiliary" for p in path):
            continue
        total += leaf.size
    return total


# ---------------------------------------------------------------- the discrete form (random search, evolution)


@register_discrete_space("darts")
class DartsSpace(DiscreteSpace):
    """A genotype as 4 * nodes decisions: (op, source) of each of the two inputs of every node of
    the normal cell, then of the reduction cell. The two inputs of a node have distinct sources,
    as in DARTS's genotypes; ``none`` is never chosen."""

    name = "darts"

    def __init__(self, space_cfg, in_shape=None):
        self.cfg = space_cfg
        ops = "darts" if space_cfg.ops == "auto" else space_cfg.ops
        self.op_names = resolve_op_set(ops)
        self.ops = tuple(o for o in self.op_names if o != "none")
        self.nodes = space_cfg.nodes
        if not self.ops:
            raise JaxnasError(f"space.ops {space_cfg.ops!r} has no op other than none")

    def _slot(self, i: int) -> tuple[str, int]:
        cell, k = divmod(i, 2 * self.nodes)
        return ("normal", "reduce")[cell], k

    def num_decisions(self, arch):
        return 4 * self.nodes

    def choice(self, arch, i):
        cell, k = self._slot(i)
        return tuple(getattr(arch, cell)[k])

    def choices(self, arch, i):
        cell, k = self._slot(i)
        partner = getattr(arch, cell)[k ^ 1][1]
        return [(op, src) for src in range(k // 2 + 2) if src != partner for op in self.ops]

    def with_choice(self, arch, i, value):
        cell, k = self._slot(i)
        edges = list(getattr(arch, cell))
        edges[k] = (str(value[0]), int(value[1]))
        return dataclasses.replace(arch, **{cell: tuple(edges)})

    def initial(self):
        edges = tuple((self.ops[0], s) for _ in range(self.nodes) for s in (0, 1))
        concat = tuple(range(2, 2 + self.nodes))
        return genotype_lib.Genotype(edges, concat, edges, concat)

    def encode(self, arch):
        return json.dumps(arch.to_dict(), separators=(",", ":"))

    def decode(self, text):
        return genotype_lib.validate(genotype_lib.from_dict(json.loads(text)))

    def build(self, arch, in_shape, num_classes, rngs):
        return DartsNetwork(arch, in_shape[-1], num_classes, C=self.cfg.C, layers=self.cfg.layers,
                            auxiliary=False, stem_multiplier=self.cfg.stem_multiplier, rngs=rngs)

    def onehot_alphas(self, arch, op_names):
        if "none" not in op_names:
            raise JaxnasError("weight sharing in the DARTS space needs 'none' in space.ops "
                              "(edges left out of the genotype are set to it)")
        out = {}
        for cell in ("normal", "reduce"):
            rows = [op_names.index("none")] * num_edges(self.nodes)
            for k, (op, src) in enumerate(getattr(arch, cell)):
                rows[edge_row(k // 2, src)] = op_names.index(op)
            a = np.full((len(rows), len(op_names)), -1e9, np.float32)
            a[np.arange(len(rows)), rows] = 0.0
            out[f"alphas_{cell}"] = a
        return out
