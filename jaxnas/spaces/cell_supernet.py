"""What every cell-based supernet shares (DARTS, NAS-Bench-201, and a cell space of your own).

A cell supernet holds one alpha matrix (edges, ops) per cell type, and with edge normalization
one beta vector per cell type; a relaxation (``jaxnas.relaxations``) turns the alphas into edge
weights (Liu et al. 2019, Eq. 2 for the softmax). ``CellSupernet`` owns those parameters, the
relaxation with its op masks (progressive search), PC-DARTS's edge scales (Xu et al. 2020, Eq. 4),
the forward pass with the method's scheduled values (``hyper``), and the strengths the
discretization ranks. A space's supernet subclasses it and writes only its macro structure
(``forward``: stem, cells, head) and its discretization (``genotype``).

The mixed op of every edge is one value, ``edges.EdgeMix``, passed down to ``edges.SourceEdges``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from jaxnas.errors import JaxnasError
from jaxnas.nn import ArchParam
from jaxnas.relaxations import get_relaxation, relax_all
from jaxnas.spaces.edges import EdgeMix, group_softmax

__all__ = ["CellSupernet", "CellType", "EdgeMix", "onehot_rows"]


@dataclasses.dataclass(frozen=True)
class CellType:
    """One cell type's architecture parameters: the key of its weights in ``relax()`` and the
    attribute names of its alphas and betas."""

    kind: str
    alphas: str
    betas: str


def onehot_rows(rows: Sequence[int], n_ops: int) -> np.ndarray:
    """Alphas whose softmax is exactly one-hot in float32 (exp(-1e9) underflows to 0): row e selects
    op ``rows[e]``. Weight sharing evaluates a discrete architecture in the supernet with these."""
    a = np.full((len(rows), n_ops), -1e9, np.float32)
    a[np.arange(len(rows)), list(rows)] = 0.0
    return a


class CellSupernet(nnx.Module):
    """Base of the cell supernets. A subclass builds its modules, then calls ``init_arch``, and defines
    ``forward(x, weights, scales, skip)`` and ``genotype()`` (``init_arch`` refuses a subclass without them);
    ``__call__`` relaxes the alphas and runs ``forward``."""

    op_names: tuple[str, ...]

    def init_arch(self, cell_types: Sequence[CellType], edges: int, node_sizes: Sequence[int], op_names,
                  relaxation: str, edge_norm: bool, rngs: nnx.Rngs) -> None:
        """The architecture parameters: per cell type an alpha matrix (edges, ops), DARTS's init
        1e-3 * N(0, 1), then with ``edge_norm`` a beta per edge (PC-DARTS's init, the same); edges are
        grouped by their target node, ``node_sizes`` edges each (the groups of the edge softmax)."""
        missing = [name for name in ("forward", "genotype") if not callable(getattr(type(self), name, None))]
        if missing:
            raise JaxnasError(f"{type(self).__name__} subclasses CellSupernet but defines no {' or '.join(missing)} "
                              f"(forward(x, weights, scales, skip) -> logits; genotype() -> the architecture)")
        get_relaxation(relaxation)
        self.op_names, self.relaxation, self.edge_norm = tuple(op_names), relaxation, edge_norm
        self.cell_types, self.node_sizes = tuple(cell_types), tuple(node_sizes)
        for t in self.cell_types:
            setattr(self, t.alphas, ArchParam(1e-3 * jax.random.normal(rngs.params(), (edges, len(self.op_names)))))
        if edge_norm:
            for t in self.cell_types:
                setattr(self, t.betas, ArchParam(1e-3 * jax.random.normal(rngs.params(), (edges,))))
        self.op_mask = None  # static: the ops still searched per edge (progressive search), see set_op_mask

    def set_op_mask(self, masks: Mapping | None) -> None:
        """Restrict each edge to the ops marked True (``{alphas attribute: (edges, ops) bools}``; None: every
        op): their relaxed weights are renormalized over the kept ops (for a Dirichlet this is exactly the
        Dirichlet of the kept concentrations) and the discretization ignores the others."""
        self.op_mask = None if masks is None else tuple(
            (k, tuple(tuple(bool(v) for v in row) for row in np.asarray(masks[k]))) for k in sorted(masks))

    def mask(self, t: CellType) -> np.ndarray | None:
        return None if self.op_mask is None else np.asarray(dict(self.op_mask)[t.alphas], bool)

    def relax(self, key: jax.Array | None = None, hyper: Mapping | None = None) -> dict[str, jax.Array]:
        """The edge weights of each cell type (``{kind: (edges, ops)}``) from the relaxation, renormalized
        over the ops an op mask keeps."""
        w = relax_all(self.relaxation, {t.kind: getattr(self, t.alphas)[...] for t in self.cell_types}, key, hyper)
        if self.op_mask is None:
            return w
        out = {}
        for t in self.cell_types:
            kept = w[t.kind] * self.mask(t)
            out[t.kind] = kept / kept.sum(-1, keepdims=True)
        return out

    def edge_scales(self) -> dict[str, jax.Array] | None:
        """PC-DARTS's normalized edge weights per cell type (softmax of the betas over each node's
        incoming edges), or None without edge normalization."""
        if not self.edge_norm:
            return None
        return {t.kind: group_softmax(getattr(self, t.betas)[...], self.node_sizes) for t in self.cell_types}

    def __call__(self, x: jax.Array, key: jax.Array | None = None, hyper: Mapping | None = None,
                 weights: Mapping | None = None) -> jax.Array:
        """Logits. ``key`` feeds a sampling relaxation (None: its deterministic weights), ``hyper`` holds
        the scheduled values (``tau``, ``skip``, ...), ``weights`` replaces the relaxed weights (SDARTS's
        perturbed ones). The subclass's ``forward(x, weights, scales, skip)`` is the network with these edge
        weights (``{kind: (edges, ops)}``), edge scales (None: off) and the auxiliary skip's weight (DARTS-)."""
        w = self.relax(key, hyper) if weights is None else weights
        return self.forward(x, w, self.edge_scales(), (hyper or {}).get("skip", 1.0))

    def strengths(self, t: CellType) -> np.ndarray:
        """What the discretization ranks for cell type ``t``: the relaxation's strengths of the alphas
        (softmax; sigmoid for FairDARTS), zero where an op mask drops the op, times the normalized
        edge weights under edge normalization (PC-DARTS ranks edges by alpha * beta)."""
        w = get_relaxation(self.relaxation).strengths(np.asarray(getattr(self, t.alphas)[...]))
        if self.op_mask is not None:
            w = w * self.mask(t)
        scales = self.edge_scales()
        if scales is not None:
            w = w * np.asarray(scales[t.kind])[:, None]
        return w
