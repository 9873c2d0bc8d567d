"""Saving and loading model state as .npz of named arrays: plain data, never pickle."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxnas.errors import JaxnasError


def _flat(tree) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        key = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
        out[key] = np.asarray(leaf)
    return out


def save(path: str, **trees) -> None:
    """Write each named pytree's leaves to one .npz atomically (temp file, then rename)."""
    arrays = {f"{name}:{k}": v for name, tree in trees.items() for k, v in _flat(tree).items()}
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: str, **templates):
    """Fill each template pytree's leaves from ``path``; shapes and names must match exactly."""
    if not os.path.exists(path):
        raise JaxnasError(f"no saved weights at {path!r}")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    out = []
    for name, tree in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        flat = _flat(tree)
        values = []
        for key, (_, leaf) in zip(flat, leaves):
            full = f"{name}:{key}"
            if full not in arrays or arrays[full].shape != np.shape(leaf):
                raise JaxnasError(f"saved weights {path!r} do not match the model at {full!r}")
            values.append(arrays[full])
        out.append(jax.tree_util.tree_unflatten(treedef, values))
    return out
