"""The NAS-Bench-201 space (Dong & Yang, ICLR 2020; AutoDL-Projects' TinyNetwork).

A cell has 4 nodes and 6 edges: node j sums op_{j<-i}(node i) over i < j, and the
cell's output is node 3. Ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3,
avg_pool_3x3. Architectures are the benchmark's strings
``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|``
or its indices. The network: 3x3 stem (16 channels) + BN; 3 stages of N=5 cells at
16/32/64 channels joined by residual reduction blocks; BN-ReLU, global pooling,
linear classifier (Dong & Yang, ICLR 2020; the benchmark's official code, D-X-Y/AutoDL-Projects).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxnas.errors import JaxnasError
from jaxnas.nn import conv, torch_linear
from jaxnas.ops import NB201_OPS, ReLUConvBN, batch_norm, get_op, resolve_op_set
from jaxnas.spaces.base import DiscreteSpace
from jaxnas.spaces.cell_supernet import CellSupernet, CellType, onehot_rows
from jaxnas.spaces.edges import EdgeMix, SourceEdges, cell_states
from jaxnas.spaces.registry import Space, register_space

NODES = 4
EDGES = tuple((j, i) for j in range(1, NODES) for i in range(j))  # (target, source), string order
NUM_ARCHS = len(NB201_OPS) ** len(EDGES)  # 15625


@dataclasses.dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell: the op on each of the 6 edges, in the string's order."""

    ops: tuple[str, ...]

    def __post_init__(self):
        if len(self.ops) != len(EDGES):
            raise JaxnasError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        for op in self.ops:
            if op not in NB201_OPS:
                raise JaxnasError(f"unknown NAS-Bench-201 op {op!r}; allowed: {', '.join(NB201_OPS)}")

    def to_str(self) -> str:
        nodes, k = [], 0
        for j in range(1, NODES):
            nodes.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(nodes)

    def __str__(self) -> str:
        return self.to_str()

    def to_dict(self) -> dict:
        return {"space": "nb201", "arch": self.to_str(), "index": self.index}

    @property
    def index(self) -> int:
        return index_of(self)


def from_str(text: str) -> NB201Arch:
    """Parse the benchmark's arch string; a malformed one is an error naming the problem."""
    nodes = text.strip().split("+")
    if len(nodes) != NODES - 1:
        raise JaxnasError(f"NAS-Bench-201 arch {text!r}: expected {NODES - 1} nodes joined by '+', got {len(nodes)}")
    ops = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise JaxnasError(f"NAS-Bench-201 arch {text!r}: node {j} {node!r} must look like |op~0|op~1|")
        parts = node[1:-1].split("|")
        if len(parts) != j:
            raise JaxnasError(f"NAS-Bench-201 arch {text!r}: node {j} needs {j} inputs, got {len(parts)}")
        for i, part in enumerate(parts):
            op, _, src = part.partition("~")
            if src != str(i):
                raise JaxnasError(f"NAS-Bench-201 arch {text!r}: node {j} input {i} is {part!r}, expected op~{i}")
            ops.append(op)
    return NB201Arch(tuple(ops))


@functools.cache
def _order() -> tuple[tuple[str, ...], ...]:
    """The benchmark's index order: product over edges, last edge fastest, shuffled by random.seed(88)."""
    archs = list(itertools.product(NB201_OPS, repeat=len(EDGES)))
    rnd = random.Random(88)
    rnd.shuffle(archs)
    return tuple(archs)


@functools.cache
def _index_map() -> dict[tuple[str, ...], int]:
    return {a: i for i, a in enumerate(_order())}


def from_index(index: int) -> NB201Arch:
    if not 0 <= index < NUM_ARCHS:
        raise JaxnasError(f"NAS-Bench-201 index {index} is out of range [0, {NUM_ARCHS})")
    return NB201Arch(_order()[index])


def index_of(arch: NB201Arch) -> int:
    return _index_map()[arch.ops]


def parse(value) -> NB201Arch:
    """An arch from a string (``|op~0|+...``), an index (int or digits) or an NB201Arch."""
    if isinstance(value, NB201Arch):
        return value
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
        return from_index(int(value))
    if isinstance(value, dict) and "arch" in value:
        return from_str(value["arch"])
    if isinstance(value, str):
        return from_str(value)
    raise JaxnasError(f"cannot read a NAS-Bench-201 arch from {value!r}")


class ResBlock(nnx.Module):
    """The benchmark's residual reduction block (ResNet basic block, stride 2)."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.a = ReLUConvBN(c_in, c_out, 3, 2, 1, True, rngs=rngs)
        self.b = ReLUConvBN(c_out, c_out, 3, 1, 1, True, rngs=rngs)
        self.shortcut = conv(c_in, c_out, 1, 1, 0, rngs=rngs)

    def __call__(self, x):
        n, h, w, c = x.shape
        pooled = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # AvgPool2d(2, 2)
        return self.shortcut(pooled) + self.b(self.a(x))


class InferCell(nnx.Module):
    """A discrete cell; ``none`` edges are left out (they add zeros)."""

    def __init__(self, arch: NB201Arch, C: int, *, rngs: nnx.Rngs):
        self.arch = arch
        self.edges = nnx.List([get_op(op).factory(C, 1, True, rngs) for op in arch.ops])

    def __call__(self, x):
        states = [x]
        for j in range(1, NODES):
            terms = [self.edges[k](states[i]) for k, (t, i) in enumerate(EDGES)
                     if t == j and self.arch.ops[k] != "none"]
            states.append(sum(terms[1:], terms[0]) if terms else jnp.zeros_like(x))
        return states[-1]


class SearchCell(nnx.Module):
    """A supernet cell: every edge a mixed op over the op set (non-affine BN, no BN after pools).

    The edges leaving each node run together (``edges.SourceEdges``): one dense conv per op.
    """

    def __init__(self, C: int, op_names: Sequence[str], *, rngs: nnx.Rngs, mixed: EdgeMix = EdgeMix(search_bn=False)):
        # node i feeds edges rows[i] (indices into EDGES, the alpha rows) towards targets[i]
        self.rows = tuple(tuple(k for k, (_, src) in enumerate(EDGES) if src == i) for i in range(NODES - 1))
        self.targets = tuple(tuple(EDGES[k][0] for k in r) for r in self.rows)
        self.sources = nnx.List([SourceEdges(len(r), C, 1, op_names, rngs=rngs, mixed=mixed) for r in self.rows])

    def __call__(self, x, weights, edge_scale=None, skip=1.0):
        return cell_states(self.sources, [x], self.rows, self.targets, weights, edge_scale, skip)[-1]


class _Skeleton(nnx.Module):
    def _build(self, in_channels, num_classes, C, N, make_cell, rngs):
        self.stem_conv = conv(in_channels, C, 3, 1, 1, rngs=rngs)
        self.stem_bn = batch_norm(C, True, rngs=rngs)
        layers, c = [], C
        for stage, c_out in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResBlock(c, c_out, rngs=rngs))
            layers += [make_cell(c_out) for _ in range(N)]
            c = c_out
        self.layers = nnx.List(layers)
        self.head_bn = batch_norm(c, True, rngs=rngs)
        self.classifier = torch_linear(c, num_classes, rngs)

    def _head(self, x):
        return self.classifier(jax.nn.relu(self.head_bn(x)).mean(axis=(1, 2)))


class NB201Network(_Skeleton):
    """The benchmark's TinyNetwork for one cell: what every NAS-Bench-201 record trained."""

    def __init__(self, arch: NB201Arch, in_channels: int, num_classes: int, *, C: int = 16, N: int = 5,
                 rngs: nnx.Rngs):
        self._build(in_channels, num_classes, C, N, lambda c: InferCell(arch, c, rngs=rngs), rngs)

    def __call__(self, x):
        x = self.stem_bn(self.stem_conv(x))
        for layer in self.layers:
            x = layer(x)
        return self._head(x)


CELL = CellType("alphas", "alphas", "betas")


class NB201Supernet(_Skeleton, CellSupernet):
    """The space's supernet for differentiable search (DARTS on NAS-Bench-201): one alpha matrix (6, ops)
    shared by every cell (``CellSupernet``), turned into edge weights by the relaxation named ``relaxation``.
    ``partial_channels``, ``edge_norm`` (per-edge betas softmaxed over each node's 1, 2, 3 inputs)
    and ``aux_skip`` are the mixed-op variants of PC-DARTS and DARTS- (``edges.EdgeMix``); the supernet's
    ops have no BN of their own, as in the benchmark's."""

    def __init__(self, in_channels: int, num_classes: int, *, C: int = 16, N: int = 5,
                 ops: str | Sequence[str] = "nb201", relaxation: str = "softmax", partial_channels: int = 1,
                 edge_norm: bool = False, aux_skip: bool = False, rngs: nnx.Rngs):
        op_names = resolve_op_set(ops)
        mixed = EdgeMix.of(relaxation, partial_channels, aux_skip, search_bn=False)
        self._build(in_channels, num_classes, C, N, lambda c: SearchCell(c, op_names, rngs=rngs, mixed=mixed), rngs)
        self.init_arch((CELL,), len(EDGES), list(range(1, NODES)), op_names, relaxation, edge_norm, rngs)

    def forward(self, x, weights, scales, skip):
        w, scale = weights["alphas"], None if scales is None else scales["alphas"]
        x = self.stem_bn(self.stem_conv(x))
        for layer in self.layers:
            x = layer(x, w, scale, skip) if isinstance(layer, SearchCell) else layer(x)
        return self._head(x)

    def genotype(self) -> NB201Arch:
        """The strongest op per edge (argmax of the alphas, the benchmark's discretization for every method;
        ops an op mask dropped are never chosen)."""
        return NB201Arch(tuple(self.op_names[i] for i in self.strengths(CELL).argmax(-1)))


class NB201Discrete(DiscreteSpace):
    """Decision i is the op on edge i (string order); greedy starts from all skip_connect,
    so that every edge lies on a path to the output while it is being decided."""

    name = "nb201"

    def __init__(self, space_cfg=None, in_shape=None):
        self.cfg = space_cfg
        ops = getattr(space_cfg, "ops", "auto") if space_cfg is not None else "auto"
        self.ops = resolve_op_set("nb201" if ops == "auto" else ops)  # the one op-list reader
        for op in self.ops:
            if op not in NB201_OPS:
                raise JaxnasError(f"unknown NAS-Bench-201 op {op!r}; allowed: {', '.join(NB201_OPS)}")

    def num_decisions(self, arch):
        return len(EDGES)

    def choices(self, arch, i):
        return list(self.ops)

    def choice(self, arch, i):
        return arch.ops[i]

    def with_choice(self, arch, i, value):
        ops = list(arch.ops)
        ops[i] = value
        return NB201Arch(tuple(ops))

    def initial(self):
        return NB201Arch(("skip_connect",) * len(EDGES))

    def encode(self, arch):
        return arch.to_str()

    def decode(self, text):
        return parse(text)

    def build(self, arch, in_shape, num_classes, rngs):
        C = self.cfg.C if self.cfg is not None else 16
        N = self.cfg.cells_per_stage if self.cfg is not None else 5
        return NB201Network(arch, in_shape[-1], num_classes, C=C, N=N, rngs=rngs)

    def onehot_alphas(self, arch, op_names):
        return {CELL.alphas: onehot_rows([list(op_names).index(op) for op in arch.ops], len(op_names))}


@register_space("nb201")
class NB201Space(Space):
    """NAS-Bench-201's cell space: supernet, the benchmark's network, strings and indices."""

    def defaults(self):
        # ops "auto": the benchmark's 5 ops; cells_per_stage: N of the benchmark's network
        # partial_channels, edge_norm, aux_skip: the mixed-op variants of PC-DARTS and DARTS- (edges.SourceEdges)
        return ml_collections.ConfigDict(dict(C=16, cells_per_stage=5, ops="auto", relaxation="softmax",
                                              partial_channels=1, edge_norm=False, aux_skip=False))

    def ranges(self):
        return {"C": (1, 4096), "cells_per_stage": (1, 200), "partial_channels": (1, 4096)}

    def supernet(self, cfg, in_shape, num_classes, rngs):
        ops = "nb201" if cfg.ops == "auto" else cfg.ops
        return NB201Supernet(in_shape[-1], num_classes, C=cfg.C, N=cfg.cells_per_stage, ops=ops,
                             relaxation=cfg.relaxation, partial_channels=cfg.partial_channels,
                             edge_norm=cfg.edge_norm, aux_skip=cfg.aux_skip, rngs=rngs)

    def discrete(self, cfg, in_shape=None):
        return NB201Discrete(self.fields(cfg), in_shape)

    def arch_from_dict(self, d):
        return parse(d)

    def drawings(self, arch):
        edges = [(str(i), str(j), op) for (j, i), op in zip(EDGES, arch.ops) if op != "none"]
        return [("cell", "NAS-Bench-201 cell", edges)]

    def edge_names(self, key, n):
        return [f"{i} -> {j}" for j, i in EDGES][:n]
