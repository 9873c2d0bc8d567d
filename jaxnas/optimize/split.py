"""The train / validation / test split of dataset optimization: checked, stratified, seeded, recorded.

A dataset that ships a test split (a TFDS dataset, an ``.npz`` with ``x_test``/``y_test``) keeps it
as the test split and only train/val are drawn from its training examples; otherwise all three are
drawn. Every class is split on its own (stratification): class ``c``'s indices are permuted with
``default_rng([seed, c])`` and cut by the fractions, at least one example per split. The indices go
to ``split.json`` in the run directory with their SHA-256 and that of the data, so anyone can
check that no test row was used for training or for any choice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from jaxnas import rundir
from jaxnas.data import Dataset, check_arrays, load_dataset
from jaxnas.errors import JaxnasError


@dataclasses.dataclass
class Split:
    """Index arrays into the pool: ``train`` and ``val`` into ``x_train``; ``test`` into ``x_test`` when the
    dataset has its own test split (``test_source = "dataset"``), else into ``x_train``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_source: str
    seed: int

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.asarray(part, np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()


def data_digest(pool: Dataset) -> str:
    """SHA-256 of the pool's arrays (both splits), to tie a recorded split to its data."""
    h = hashlib.sha256()
    for a in (pool.x_train, pool.y_train, pool.x_test, pool.y_test):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def load_pool(name: str, data_dir: str = "", num_classes: int = 0) -> Dataset:
    """The dataset ``name`` (digits, a ``.npz``, a TFDS name) as a pool, checked."""
    ds: Dataset = load_dataset(name, data_dir, holdout=False)
    return pool_from_arrays(ds.name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes)


def pool_from_arrays(name, x, y, x_test=None, y_test=None, num_classes: int = 0) -> Dataset:
    """A pool of in-memory arrays (images (N, H, W[, C]) uint8 or floats in 0..1, integer labels), checked
    by the validator a ``.npz`` file goes through (``jaxnas.data.check_arrays``)."""
    x, y, x_test, y_test, k = check_arrays(name, x, y, x_test, y_test, num_classes)
    return Dataset(name, x, y, x_test, y_test, k)


def stratified_split(pool: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Per class: permute its indices with ``default_rng([seed, c])``, then test (only when the dataset
    has no test split of its own), val, and the rest train; each at least one example."""
    if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise JaxnasError(f"data.val_fraction and data.test_fraction must be in (0, 1) with a sum below 1, got "
                          f"{val_fraction} and {test_fraction}")
    draw_test = not pool.has_test
    need = 3 if draw_test else 2
    counts = np.bincount(pool.y_train, minlength=pool.num_classes)
    for c, n in enumerate(counts):
        if n < need:
            raise JaxnasError(f"dataset {pool.name!r}: class {c} has {n} training example(s); a stratified "
                              f"train/val{'/test' if draw_test else ''} split needs at least {need} per class")
    train, val, test = [], [], []
    for c in range(pool.num_classes):
        idx = np.random.default_rng([seed, c]).permutation(np.flatnonzero(pool.y_train == c))
        n = len(idx)
        n_test = min(max(1, round(n * test_fraction)), n - 2) if draw_test else 0
        n_val = min(max(1, round(n * val_fraction)), n - n_test - 1)
        test.append(idx[:n_test])
        val.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    test_idx = np.sort(np.concatenate(test)) if draw_test else np.arange(len(pool.x_test))
    return Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(val)), test_idx,
                 "drawn" if draw_test else "dataset", seed)


def save(split: Split, pool: Dataset, path: str, fractions: tuple[float, float], corruption: dict | None = None) -> None:
    """``split.json``: the indices, their digest, the data's digest, the seed and the class counts, and
    the corruption applied to train/val (``data.corrupt``; the data digest is of the corrupted labels)."""
    y_test = pool.y_test if split.test_source == "dataset" else pool.y_train
    rundir.write_json(path, {"corruption": corruption or {"kind": "none"},
        "dataset": pool.name, "data_sha256": data_digest(pool), "seed": split.seed,
        "val_fraction": fractions[0], "test_fraction": fractions[1], "test_source": split.test_source,
        "sizes": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "class_counts": {"train": np.bincount(pool.y_train[split.train], minlength=pool.num_classes).tolist(),
                         "val": np.bincount(pool.y_train[split.val], minlength=pool.num_classes).tolist(),
                         "test": np.bincount(y_test[split.test], minlength=pool.num_classes).tolist()},
        "split_sha256": split.digest(),
        "indices": {"train": split.train.tolist(), "val": split.val.tolist(), "test": split.test.tolist(),
                    "note": "train and val index x; test indexes x_test when test_source is 'dataset', else x"},
    })


def check_saved(split: Split, pool: Dataset, path: str) -> None:
    """A resumed run's split must be the one it recorded, on the same data."""
    if not os.path.exists(path):
        return
    saved = rundir.read_json(path, "split file")
    if saved.get("data_sha256") != data_digest(pool) or saved.get("split_sha256") != split.digest():
        raise JaxnasError(f"{path!r} records another split or other data than this run would use; "
                          f"the data changed since the run started")
