"""Progressive search in stages (DrNAS, Chen et al., ICLR 2021, Sec. 3.3; DARTS-space/train_search.py).

``method.stages = "25:6:8,25:4:4"``: stages of ``epochs:K:ops``. Each stage trains the supernet with
partial channels K (``space.partial_channels``); at a stage's start each edge keeps only its ``ops``
strongest ops (the others masked out of the relaxation and the discretization) and the ops are
widened from C/K_old to C/K_new channels by copying channels (net2wider, Chen et al. 2016): every new
channel copies an old one, the same old channel wherever the same widening happens, so chained
layers stay consistent; the weights' optimizer state is widened alike. One learning-rate schedule
runs over all stages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxnas.errors import JaxnasError


class Stage(NamedTuple):
    start: int     # its first epoch
    epochs: int
    partial: int   # partial-channel K
    keep: int      # ops kept per edge from this stage on


def parse_stages(text: str, epochs: int) -> list[Stage]:
    """``"25:6:8,25:4:4"`` -> stages; ``""`` -> [] (one stage, no pruning). Their epochs must add up to
    ``search.epochs``; K never grows (the ops only widen) and pruned ops never come back."""
    if not text.strip():
        return []
    stages, start = [], 0
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 3 or not all(f.strip().isdigit() and int(f) > 0 for f in fields):
            raise JaxnasError(f"method.stages entry {part.strip()!r} must be epochs:K:ops with positive integers, "
                              f"e.g. 25:6:8")
        n, k, keep = (int(f) for f in fields)
        stages.append(Stage(start, n, k, keep))
        start += n
    if start != epochs:
        raise JaxnasError(f"method.stages {text!r} adds up to {start} epochs, search.epochs is {epochs}")
    for a, b in zip(stages, stages[1:]):
        if b.partial > a.partial:
            raise JaxnasError(f"method.stages {text!r}: K goes from {a.partial} to {b.partial}; stages can only "
                              f"widen the ops (K stays or decreases)")
        if b.keep > a.keep:
            raise JaxnasError(f"method.stages {text!r}: ops per edge go from {a.keep} up to {b.keep}; pruned ops "
                              f"do not come back")
    return stages


def stage_of(stages: list[Stage], epoch: int) -> int:
    """Index of the stage that trains epoch ``epoch``."""
    return max(i for i, s in enumerate(stages) if s.start <= epoch) if stages else 0


def prune(alphas: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None, keep: int
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """DrNAS's ``utils.prune(reset=False)``: per edge the ``keep`` largest alphas among the ops not yet
    pruned keep their values, the others become 0 and are masked out. Returns (alphas, masks)."""
    out_a, out_m = {}, {}
    for name, a in alphas.items():
        a = np.asarray(a, np.float32)
        score = a if masks is None else np.where(masks[name], a, a - 1e6)
        if keep > a.shape[-1]:
            raise JaxnasError(f"method.stages keeps {keep} ops per edge, the space has {a.shape[-1]}")
        top = np.argsort(-score, axis=-1, kind="stable")[:, :keep]
        m = np.zeros(a.shape, bool)
        np.put_along_axis(m, top, True, axis=-1)
        out_a[name], out_m[name] = np.where(m, a, 0.0).astype(np.float32), m
    return out_a, out_m


def widen(old: np.ndarray, shape: tuple[int, ...], index_for) -> np.ndarray:
    """``old`` grown to ``shape`` along every axis whose size differs, new entries copying old ones at
    ``index_for(old_size, new_size)`` (net2wider's random channel copies)."""
    out = np.asarray(old)
    if out.shape == tuple(shape):
        return out
    if out.ndim != len(shape) or any(n < o for o, n in zip(out.shape, shape)):
        raise JaxnasError(f"cannot widen an array of shape {out.shape} to {tuple(shape)}")
    for axis, (o, n) in enumerate(zip(out.shape, shape)):
        if n != o:
            out = np.concatenate([out, np.take(out, index_for(o, n), axis=axis)], axis=axis)
    return out


def widen_tree(old: Any, new: Any, seed: int) -> Any:
    """Every leaf of ``old`` widened to the shape of the matching leaf of ``new`` (same tree structure);
    one random channel map per (old width, new width), shared by all leaves."""
    rng, maps = np.random.default_rng(seed), {}

    def index_for(o: int, n: int) -> np.ndarray:
        if (o, n) not in maps:
            maps[(o, n)] = rng.integers(0, o, n - o)
        return maps[(o, n)]

    return jax.tree.map(lambda a, b: widen(np.asarray(a), np.shape(b), index_for).astype(np.asarray(b).dtype),
                        old, new)
