"""The DARTS search space (Liu et al. 2019, Sec. 2.1; cnn/model_search.py).

Cells have 2 input states and ``nodes`` intermediate nodes; node i sums one mixed
op from each of the 2+i earlier states. Edges are numbered node-major, as the
rows of DARTS's alpha matrices. All normal cells share ``alphas_normal`` and all
reduction cells ``alphas_reduce``.

The edges leaving each state run together (``edges.SourceEdges``), each op in its
batched form, with identical maths. Edge weights come from the alphas through the
relaxation named by ``space.relaxation`` (softmax: DARTS).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxnas import genotype as genotype_lib
from jaxnas import kernels
from jaxnas.errors import JaxnasError
from jaxnas.nn import conv, torch_linear
from jaxnas.ops import FactorizedReduce, Identity, ReLUConvBN, batch_norm, get_op, resolve_op_set
from jaxnas.spaces.base import DiscreteSpace
from jaxnas.spaces.cell_supernet import CellSupernet, CellType, onehot_rows
from jaxnas.spaces.edges import EdgeMix, SourceEdges, cell_states
from jaxnas.spaces.registry import Space, register_space


def edge_row(node: int, source: int) -> int:
    """Alpha row of the edge from state ``source`` into intermediate node ``node``."""
    return sum(2 + i for i in range(node)) + source


def num_edges(nodes: int) -> int:
    return sum(2 + i for i in range(nodes))


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Cells at 1/3 and 2/3 depth reduce (DARTS: ``i in [layers//3, 2*layers//3]``)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def build_cells(layers: int, C: int, stem_channels: int, make_cell) -> tuple[list, list[int]]:
    """DARTS's macro layout (model_search.py / model.py ``Network``): C channels, doubled at each
    reduction cell; each cell reads the two previous outputs. ``make_cell(C_pp, C_p, C, reduction,
    reduction_prev) -> (cell, output channels)``; returns the cells and each one's output channels."""
    C_pp, C_p, c_curr = stem_channels, stem_channels, C
    cells, channels, reduction_prev = [], [], False
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        if reduction:
            c_curr *= 2
        cell, c_out = make_cell(C_pp, C_p, c_curr, reduction, reduction_prev)
        cells.append(cell)
        channels.append(c_out)
        reduction_prev = reduction
        C_pp, C_p = C_p, c_out
    return cells, channels


class SearchCell(nnx.Module):
    """A DARTS search cell (cnn/model_search.py ``Cell``); the edges leaving each state
    run together (``edges.SourceEdges``), each edge's mixed op as ``mixed`` says."""

    def __init__(self, nodes: int, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 op_names: Sequence[str], *, rngs: nnx.Rngs, mixed: EdgeMix = EdgeMix()):
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
            SourceEdges(len(t), C, 2 if reduction and s < 2 else 1, op_names, rngs=rngs, mixed=mixed)
            for s, t in enumerate(self.targets)])

    def __call__(self, s0: jax.Array, s1: jax.Array, weights: jax.Array, edge_scale: jax.Array | None = None,
                 skip: jax.Array | float = 1.0) -> jax.Array:
        states = cell_states(self.sources, [self.pre0(s0), self.pre1(s1)], self.rows, self.targets, weights,
                             edge_scale, skip)
        return jnp.concatenate(states[2:], axis=-1)


NORMAL = CellType("normal", "alphas_normal", "betas_normal")
REDUCE = CellType("reduce", "alphas_reduce", "betas_reduce")


class DartsSupernet(CellSupernet):
    """DARTS ``Network`` (search model): stem, cells, global pooling, linear classifier. All normal
    cells share ``alphas_normal`` and all reduction cells ``alphas_reduce`` (``CellSupernet``).

    ``relaxation`` names the map from alphas to edge weights (``jaxnas.relaxations``);
    ``partial_channels`` and ``aux_skip`` are the mixed-op variants of PC-DARTS and DARTS-
    (``edges.EdgeMix``); with ``edge_norm`` each cell type has per-edge betas (``betas_normal``,
    ``betas_reduce``) softmaxed over each node's incoming edges."""

    def __init__(self, in_channels: int, num_classes: int, *, C: int = 16, layers: int = 8, nodes: int = 4,
                 stem_multiplier: int = 3, ops: str | Sequence[str] = "darts", relaxation: str = "softmax",
                 partial_channels: int = 1, edge_norm: bool = False, aux_skip: bool = False, op_threshold: float = 0.0,
                 rngs: nnx.Rngs):
        op_names = resolve_op_set(ops)
        mixed = EdgeMix.of(relaxation, partial_channels, aux_skip)
        self.nodes, self.aux_skip, self.op_threshold = nodes, aux_skip, op_threshold
        c_curr = stem_multiplier * C
        self.stem_conv = conv(in_channels, c_curr, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(c_curr, True, rngs=rngs)
        self.reductions = reduction_layers(layers)
        cells, channels = build_cells(layers, C, c_curr, lambda C_pp, C_p, c, red, red_prev: (
            SearchCell(nodes, C_pp, C_p, c, red, red_prev, op_names, rngs=rngs, mixed=mixed), nodes * c))
        self.cells = nnx.List(cells)
        self.classifier = torch_linear(channels[-1], num_classes, rngs)
        self.init_arch((NORMAL, REDUCE), num_edges(nodes), [2 + i for i in range(nodes)], op_names, relaxation,
                       edge_norm, rngs)

    def forward(self, x, weights, scales, skip):
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[kind], None if scales is None else scales[kind], skip)
        return self.classifier(s1.mean(axis=(1, 2)))

    def genotype(self) -> genotype_lib.Genotype:
        """DARTS's discretization (``genotype.derive_cell``) of the strengths (``CellSupernet.strengths``);
        a kept edge weaker than ``op_threshold`` gets ``none`` (FairDARTS's threshold_sparse)."""
        cells = {t.kind: genotype_lib.derive_cell(self.strengths(t), self.op_names, self.nodes, distributions=False,
                                                  threshold=self.op_threshold) for t in (NORMAL, REDUCE)}
        concat = tuple(range(2, 2 + self.nodes))
        return genotype_lib.Genotype(cells["normal"], concat, cells["reduce"], concat)


# ---------------------------------------------------------------- the discrete (evaluation) network


def drop_path(x: jax.Array, drop_prob, key: jax.Array) -> jax.Array:
    """Per-sample drop of a whole path, kept samples scaled by 1/keep (DARTS utils.drop_path), in x's
    dtype (a float32 ``drop_prob`` would otherwise promote a bfloat16 network to float32 from here on)."""
    keep = 1.0 - drop_prob
    mask = jax.random.bernoulli(key, keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class EvalCell(nnx.Module):
    """A DARTS cell built only from a genotype's ops (cnn/model.py ``Cell``), affine BN."""

    def __init__(self, genotype: genotype_lib.Genotype, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, *, rngs: nnx.Rngs):
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
        self.classifier = torch_linear(768, num_classes, rngs)
        self.impl = kernels.resolve()

    def __call__(self, x):
        x = kernels.pool(jax.nn.relu(x), "avg", 5, 3, 0, self.impl)
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = jax.nn.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.reshape(x.shape[0], -1))


class DartsNetwork(nnx.Module):
    """DARTS ``NetworkCIFAR``: the evaluation network of a genotype (C=36, 20 layers in the paper)."""

    def __init__(self, genotype: genotype_lib.Genotype, in_channels: int, num_classes: int, *, C: int = 36,
                 layers: int = 20, auxiliary: bool = True, stem_multiplier: int = 3, rngs: nnx.Rngs):
        genotype_lib.validate(genotype)
        c_curr = stem_multiplier * C
        self.stem_conv = conv(in_channels, c_curr, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(c_curr, True, rngs=rngs)
        self.reductions = reduction_layers(layers)
        self.aux_after = 2 * layers // 3

        def make_cell(C_pp, C_p, c, red, red_prev):
            cell = EvalCell(genotype, C_pp, C_p, c, red, red_prev, rngs=rngs)
            return cell, cell.multiplier * c

        cells, channels = build_cells(layers, C, c_curr, make_cell)
        self.cells = nnx.List(cells)
        self.auxiliary = AuxiliaryHead(channels[self.aux_after], num_classes, rngs=rngs) if auxiliary else None
        self.classifier = torch_linear(channels[-1], num_classes, rngs)

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


# ---------------------------------------------------------------- the discrete form (random search, evolution)


class DartsDiscrete(DiscreteSpace):
    """A genotype as 4 * nodes decisions: (op, source) of each of the two inputs of every node of
    the normal cell, then of the reduction cell. The two inputs of a node have distinct sources,
    as in DARTS's genotypes; ``none`` is never chosen."""

    name = "darts"

    def __init__(self, space_cfg, in_shape=None):
        self.cfg = space_cfg
        self.op_names = resolve_op_set(_ops(space_cfg))
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
        for t in (NORMAL, REDUCE):
            rows = [op_names.index("none")] * num_edges(self.nodes)
            for k, (op, src) in enumerate(getattr(arch, t.kind)):
                rows[edge_row(k // 2, src)] = op_names.index(op)
            out[t.alphas] = onehot_rows(rows, len(op_names))
        return out


def _ops(space_cfg) -> str:
    return "darts" if space_cfg.ops == "auto" else space_cfg.ops


def darts_cell_edges(edges, concat, nodes: int) -> list[tuple[str, str, str]]:
    """A DARTS cell as ``(source, target, op)`` triples over named states c_{k-2}, c_{k-1}, 0.., c_{k}."""
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(nodes)]
    out = [(names[src], str(i // 2), op) for i, (op, src) in enumerate(edges) if op != "none"]
    out += [(names[j], "c_{k}", "") for j in concat]
    return out


@register_space("darts")
class DartsSpace(Space):
    """DARTS's cell space: supernet, genotypes, the evaluation network and the cell drawings."""

    def defaults(self):
        # ops "auto": DARTS's 8 ops; relaxation: jaxnas.relaxations (softmax: DARTS)
        # allow_no_normal_cell: layers 1 and 2 hold only reduction cells, so the genotype's normal cell would
        # come from untrained alphas; refused unless asked for (the tests' 1-cell supernets compile fast)
        # partial_channels, edge_norm, aux_skip: the mixed-op variants of PC-DARTS and DARTS- (edges.SourceEdges)
        # op_threshold: kept edges whose best op is weaker get none (FairDARTS's threshold_sparse; 0: off)
        return ml_collections.ConfigDict(dict(C=16, layers=8, nodes=4, stem_multiplier=3, ops="auto",
                                              relaxation="softmax", partial_channels=1, edge_norm=False,
                                              aux_skip=False, op_threshold=0.0, allow_no_normal_cell=False))

    def ranges(self):
        return {"C": (1, 4096), "layers": (1, 200), "nodes": (1, 16), "stem_multiplier": (1, 16),
                "partial_channels": (1, 4096), "op_threshold": (0.0, 1.0)}

    def supernet(self, cfg, in_shape, num_classes, rngs):
        for field in ("C", "layers", "nodes", "stem_multiplier"):
            if int(cfg[field]) < 1:
                raise JaxnasError(f"space.{field} must be a positive integer, got {cfg[field]!r}")
        if len(in_shape) != 3:
            raise JaxnasError(f"the DARTS space takes images (H, W, C), got input shape {tuple(in_shape)}")
        if len(reduction_layers(cfg.layers)) >= cfg.layers and not cfg.allow_no_normal_cell:
            raise JaxnasError(f"space.layers={cfg.layers} builds only reduction cells, so the normal cell would be "
                              f"derived from untrained alphas; use space.layers >= 3 (or set "
                              f"space.allow_no_normal_cell=true for a reduction-cell-only supernet)")
        if all(name == "none" for name in resolve_op_set(_ops(cfg))):
            raise JaxnasError(f"space.ops {cfg.ops!r} has no op besides none: there is nothing to search")
        return DartsSupernet(in_shape[-1], num_classes, C=cfg.C, layers=cfg.layers, nodes=cfg.nodes,
                             stem_multiplier=cfg.stem_multiplier, ops=_ops(cfg), relaxation=cfg.relaxation,
                             partial_channels=cfg.partial_channels, edge_norm=cfg.edge_norm, aux_skip=cfg.aux_skip,
                             op_threshold=cfg.op_threshold, rngs=rngs)

    def discrete(self, cfg, in_shape=None):
        return DartsDiscrete(self.fields(cfg), in_shape)

    def arch_from_dict(self, d):
        return genotype_lib.from_dict(d)

    def drawings(self, arch):
        return [(f"cell_{name}", f"{name} cell", darts_cell_edges(edges, concat, arch.nodes))
                for name, edges, concat in (("normal", arch.normal, arch.normal_concat),
                                            ("reduce", arch.reduce, arch.reduce_concat))]

    def edge_names(self, key, n):
        """DARTS's edge order: node 0's inputs (c_{k-2}, c_{k-1}), then node 1's (and node 0), ..."""
        names, node = [], 0
        while len(names) < n:
            names += [f"{('c{k-2}', 'c{k-1}')[src] if src < 2 else src - 2} -> {node}" for src in range(node + 2)]
            node += 1
        return names[:n]
