"""Discrete cell architectures in DARTS's layout, the DARTS derivation rule, and JSON I/O.

A genotype lists, for each intermediate node of a normal and a reduction cell, its
two inputs as (op name, source state) pairs; states 0 and 1 are the cell inputs and
state 2+i is intermediate node i. Files are JSON (never pickle or eval).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from jaxnas import rundir
from jaxnas.errors import JaxnasError, unknown
from jaxnas.ops import OPS
from jaxnas.relaxations import softmax_np

Edge = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Genotype:
    """DARTS ``Genotype(normal, normal_concat, reduce, reduce_concat)``."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict:
        return {
            "normal": [[op, src] for op, src in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, src] for op, src in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        def cell(edges):
            return " ".join(f"{op}<-{src}" for op, src in edges)

        return f"normal: {cell(self.normal)} | reduce: {cell(self.reduce)}"


def _edges(value, where: str) -> tuple[Edge, ...]:
    if not isinstance(value, (list, tuple)):
        raise JaxnasError(f"genotype field {where!r} must be a list of [op, input] pairs, got {value!r}")
    out = []
    for item in value:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                or isinstance(item[1], bool) or not isinstance(item[1], int)):
            raise JaxnasError(f"genotype field {where!r}: {item!r} is not an [op name, input index] pair")
        out.append((item[0], int(item[1])))
    return tuple(out)


def validate(g: Genotype) -> Genotype:
    """Check op names, node references and concat lists; raise JaxnasError naming the bad value."""
    for cell, edges, concat in (("normal", g.normal, g.normal_concat), ("reduce", g.reduce, g.reduce_concat)):
        if not edges or len(edges) % 2:
            raise JaxnasError(f"genotype {cell} cell needs two (op, input) pairs per node, got {len(edges)} pairs")
        nodes = len(edges) // 2
        for k, (op, src) in enumerate(edges):
            if op not in OPS:
                raise unknown(f"op in genotype {cell} cell", op, OPS)
            node = k // 2
            if not 0 <= src < 2 + node:
                raise JaxnasError(
                    f"genotype {cell} cell: node {node} takes input {src}, which does not exist "
                    f"(allowed 0..{1 + node}: the two cell inputs and earlier nodes)")
        if not concat or any((not isinstance(c, int)) or not 2 <= c < 2 + nodes for c in concat):
            raise JaxnasError(f"genotype {cell}_concat {list(concat)!r} must name nodes in 2..{1 + nodes}")
    if len(g.normal) != len(g.reduce):
        raise JaxnasError(
            f"genotype normal and reduce cells have different node counts ({len(g.normal) // 2} vs {len(g.reduce) // 2})")
    return g


def from_dict(d) -> Genotype:
    if not isinstance(d, dict):
        raise JaxnasError(f"a genotype must be a JSON object, got {type(d).__name__}")
    missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in d]
    if missing:
        raise JaxnasError(f"genotype is missing field(s) {', '.join(missing)}")
    concat = {}
    for k in ("normal_concat", "reduce_concat"):
        v = d[k]
        if not isinstance(v, (list, tuple)) or not all(isinstance(c, int) and not isinstance(c, bool) for c in v):
            raise JaxnasError(f"genotype field {k!r} must be a list of node indices, got {v!r}")
        concat[k] = tuple(v)
    return validate(Genotype(_edges(d["normal"], "normal"), concat["normal_concat"],
                             _edges(d["reduce"], "reduce"), concat["reduce_concat"]))


def save(g: Genotype, path: str) -> None:
    rundir.write_text(path, g.to_json() + "\n")


def load(name_or_path: str) -> Genotype:
    """A published genotype by name (see ``PUBLISHED``) or a JSON file written by ``save``."""
    if name_or_path in PUBLISHED:
        return PUBLISHED[name_or_path]
    if not os.path.isfile(name_or_path):
        raise JaxnasError(f"genotype {name_or_path!r} is neither a file nor a published name "
                          f"({', '.join(PUBLISHED)})")
    try:
        with open(name_or_path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JaxnasError(f"genotype file {name_or_path!r} is not valid JSON: {e}") from None
    return from_dict(d)


def derive_cell(weights: np.ndarray, op_names: Sequence[str], nodes: int, k: int = 2,
                distributions: bool = True, threshold: float = 0.0) -> tuple[Edge, ...]:
    """DARTS's discretization of one cell (model_search.py ``genotype()``).

    ``weights``: softmax(alpha), shape (n_edges, n_ops), edges node-major. For each
    node, edge strength is its largest non-``none`` weight; the top-k edges are kept
    by a stable descending sort (ties -> lower source index) and listed in that
    order; each kept edge takes its strongest non-``none`` op by a strict '>' scan
    (ties -> lower op index). ``distributions=False`` accepts any non-negative strengths
    (sigmoid(alpha) for FairDARTS, softmax(alpha) * beta for PC-DARTS). ``threshold``: a kept
    edge whose best strength is below it gets ``none`` (FairDARTS's ``threshold_sparse`` parse,
    ``fairdarts/utils.py::parse``: the node then has fewer inputs).
    """
    w = np.asarray(weights, np.float32)
    n_edges = sum(2 + i for i in range(nodes))
    if w.shape != (n_edges, len(op_names)):
        raise JaxnasError(f"alpha weights have shape {w.shape}, expected ({n_edges}, {len(op_names)}) "
                          f"for {nodes} nodes and {len(op_names)} ops")
    if distributions and ((w < 0).any() or not np.allclose(w.sum(-1), 1.0, atol=1e-3)):
        raise JaxnasError("the edge weights are not distributions over the ops (rows >= 0 summing to 1): "
                          "raw alphas? derive from them with genotype.derive_from_alphas")
    candidates = [j for j, name in enumerate(op_names) if name != "none"]
    if not candidates:
        raise JaxnasError("the op set has no op besides 'none'")
    gene: list[Edge] = []
    start = 0
    for i in range(nodes):
        rows = w[start:start + i + 2]
        strength = [max(rows[src][j] for j in candidates) for src in range(i + 2)]
        kept = sorted(range(i + 2), key=lambda src: -strength[src])[:k]
        for src in kept:
            best = None
            for j in candidates:
                if best is None or rows[src][j] > rows[src][best]:
                    best = j
            gene.append((op_names[best] if rows[src][best] >= threshold else "none", src))
        start += i + 2
    return tuple(gene)


def derive_from_weights(weights_normal: np.ndarray, weights_reduce: np.ndarray, op_names: Sequence[str],
                        nodes: int) -> Genotype:
    """Genotype of a DARTS supernet from the edge weights softmax(alpha) of both cell types
    (rows that are not distributions are an error: raw alphas go to ``derive_from_alphas``)."""
    concat = tuple(range(2, 2 + nodes))
    return Genotype(derive_cell(weights_normal, op_names, nodes), concat,
                    derive_cell(weights_reduce, op_names, nodes), concat)


def derive_from_alphas(alphas_normal: np.ndarray, alphas_reduce: np.ndarray, op_names: Sequence[str],
                       nodes: int) -> Genotype:
    """Genotype of a DARTS supernet from its raw alphas: DARTS's rule on softmax(alpha) per edge."""
    return derive_from_weights(softmax_np(alphas_normal), softmax_np(alphas_reduce), op_names, nodes)


def _g(normal, reduce) -> Genotype:
    return Genotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))


# The genotypes published with DARTS (quark0/darts cnn/genotypes.py). DARTS = DARTS_V2.
DARTS_V1 = _g(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)])
DARTS_V2 = _g(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])

PUBLISHED: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}
