"""Progressive search in stages (DrNAS, Chen et al., ICLR 2021, Sec. 3.3; DARTS-space/train_search.py).

``method.stages = (dict(epochs=25, partial=6, keep=8), dict(epochs=25, partial=4, keep=4))`` (on the
command line ``25:6:8,25:4:4``, stages of ``epochs:K:ops``). Each stage trains the supernet with
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


FIELDS = ("epochs", "partial", "keep")


def parse(text: str, where: str = "method.stages") -> tuple[dict, ...]:
    """The command line's short form ``"25:6:8,25:4:4"`` (``epochs:K:ops`` per stage; ``""``: one
    stage, no pruning) as the config's structure."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = part.split(":")
        if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
            raise JaxnasError(f"{where} entry {part!r} must be epochs:K:ops with positive integers, e.g. 25:6:8")
        out.append(dict(zip(FIELDS, (int(f) for f in fields))))
    return check(tuple(out), where)


def check(value, where: str = "method.stages") -> tuple[dict, ...]:
    """Stages given in a config (a list of ``{epochs, partial, keep}``) as a canonical tuple, each field
    a positive integer, K never growing (the ops only widen) and pruned ops never coming back; else one
    error naming ``where``. Their sum against ``search.epochs`` is ``stages``'s check."""
    if isinstance(value, str):
        return parse(value, where)
    if not isinstance(value, (list, tuple)):
        raise JaxnasError(f"{where} must be a list of {{epochs, partial, keep}} groups, got {value!r}")
    out = []
    for i, st in enumerate(value):
        if not isinstance(st, dict) or set(st) != set(FIELDS):
            raise JaxnasError(f"{where}[{i}] must be a group of exactly {', '.join(FIELDS)}, got {st!r}")
        for k in FIELDS:
            if isinstance(st[k], bool) or not isinstance(st[k], int) or st[k] < 1:
                raise JaxnasError(f"{where}[{i}].{k} must be a positive integer, got {st[k]!r}")
        out.append({k: int(st[k]) for k in FIELDS})
    for i, (a, b) in enumerate(zip(out, out[1:])):
        if b["partial"] > a["partial"]:
            raise JaxnasError(f"{where}[{i + 1}]: K goes from {a['partial']} to {b['partial']}; stages can only "
                              f"widen the ops (K stays or decreases)")
        if b["keep"] > a["keep"]:
            raise JaxnasError(f"{where}[{i + 1}]: ops per edge go from {a['keep']} up to {b['keep']}; pruned ops "
                              f"do not come back")
    return tuple(out)


def stages(value, epochs: int) -> list[Stage]:
    """The config's stages (``check``) with their first epochs; ``()`` -> [] (one stage, no pruning).
    Their epochs must add up to ``search.epochs``."""
    out, start = [], 0
    for st in check(value):
        out.append(Stage(start, st["epochs"], st["partial"], st["keep"]))
        start += st["epochs"]
    if out and start != epochs:
        raise JaxnasError(f"method.stages add up to {start} epochs, search.epochs is {epochs}")
    return out


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
