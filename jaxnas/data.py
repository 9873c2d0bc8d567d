"""Datasets held in host memory, splits, augmentation and deterministic batching.

Sources: the embedded ``digits`` (scikit-learn's 1,797 real 8x8 handwritten digits,
no network), a user's ``.npz`` (arrays ``x``, ``y`` and optionally ``x_test``,
``y_test``), and TFDS image datasets by name (cifar10, cifar100, mnist,
fashion_mnist, svhn_cropped, ...) read with ``tfds.data_source`` (no TensorFlow).
Batches are a pure function of (seed, epoch, step), so runs are reproducible and
resumable, and every process can cut its own shard of the same global batch.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Iterator

import numpy as np

from jaxnas.errors import JaxnasError

TFDS_IMAGE_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped")
AUGMENTS = ("auto", "none", "crop", "crop_flip")
DEFAULT_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "svhn_cropped": "crop"}


@dataclasses.dataclass
class Dataset:
    """Images (N, H, W, C) as uint8 (0..255) or float32 (0..1), integer labels: the training split and
    the dataset's own test split (empty when it has none). ``jaxnas optimize`` splits the training
    split (its pool) into train/val/test itself (``optimize.split``)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def has_test(self) -> bool:
        """The dataset comes with its own test split."""
        return len(self.x_test) > 0

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the training images on the 0..1 scale."""
        x = to_unit(self.x_train)
        return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def to_unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(to_unit(x) - mean) / std`` in float32, in place on one new array (the same numbers)."""
    out = x.astype(np.float32)
    if x.dtype == np.uint8:
        out /= 255.0
    out -= mean
    out /= std
    return out


def _holdout(x, y, fraction: float = 0.2, seed: int = 0):
    """A fixed, seeded train/test split for sources that ship only one set."""
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


LABEL_MAX = 2 ** 31 - 2  # labels are held as int32; larger ones would wrap


def _as_array(value, name: str, member: str) -> np.ndarray:
    """``value`` as a numeric array; anything else (bytes, text, objects, ragged lists) is refused."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise JaxnasError(f"dataset {name!r}: {member} is not an array ({type(value).__name__}: {e})") from None
    if arr.dtype.kind not in "biuf":
        raise JaxnasError(f"dataset {name!r}: {member} must be an array of numbers, got "
                          f"{type(value).__name__} of dtype {arr.dtype}")
    return arr


def _check_part(name: str, x, y, part: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = ("x", "y") if part == "train" else ("x_test", "y_test")
    x, y = _as_array(x, name, xs), _as_array(y, name, ys)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise JaxnasError(f"dataset {name!r}: images {xs} must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if y.ndim > 1 and y.size == len(y):
        y = y.reshape(-1)
    if y.ndim != 1:
        raise JaxnasError(f"dataset {name!r}: labels {ys} must be one integer per image, got shape {y.shape}")
    if len(x) != len(y):
        raise JaxnasError(f"dataset {name!r}: {len(x)} {'' if part == 'train' else 'test '}images but {len(y)} labels")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > LABEL_MAX)):
        shown = f"dtype {y.dtype}" if y.dtype.kind not in "iu" else f"label {int(y.min() if y.min() < 0 else y.max())}"
        raise JaxnasError(f"dataset {name!r}: labels {ys} must be integers in 0..{LABEL_MAX}, got {shown}")
    if x.dtype == np.bool_:
        raise JaxnasError(f"dataset {name!r}: images {xs} must be real numbers (uint8 0..255 or floats 0..1), "
                          f"got dtype bool")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).argmax())
            raise JaxnasError(f"dataset {name!r}: image {bad} of {xs} holds NaN or Inf values")
    return x, y.astype(np.int32)


def check_arrays(name: str, x, y, x_test=None, y_test=None, num_classes: int = 0, min_classes: int = 2):
    """The one validator of image-classification arrays, for a ``.npz`` file and for arrays given in
    Python alike: images (N, H, W[, C]) of numbers (uint8 kept, else float32, all finite), one integer
    label per image in 0..K-1 (``num_classes`` = 0: K is the largest label + 1), a test split given
    whole (``x_test`` and ``y_test``, or neither) with the training images' shape, at least
    ``min_classes`` classes among the training labels. Returns ``(x, y, x_test, y_test, K)``, the test
    arrays empty when none was given; else one ``JaxnasError`` naming the problem."""
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise JaxnasError(f"dataset {name!r}: {given} is given without {missing}; give both, or neither to have a "
                          f"test split drawn")
    x, y = _check_part(name, x, y, "train")
    if len(x) == 0:
        raise JaxnasError(f"dataset {name!r}: x holds no images")
    if x_test is None:
        xt, yt = x[:0], y[:0]
    else:
        xt, yt = _check_part(name, x_test, y_test, "test")
        if xt.shape[1:] != x.shape[1:]:
            raise JaxnasError(f"dataset {name!r}: x_test images {xt.shape[1:]} differ from x {x.shape[1:]}")
        if xt.dtype != x.dtype:  # uint8 means 0..255, floats 0..1: one scale for both splits
            raise JaxnasError(f"dataset {name!r}: x is {x.dtype} but x_test is {xt.dtype}; give both as uint8 "
                              f"(0..255) or both as floats (0..1)")
    largest = int(max(y.max(initial=0), yt.max(initial=0)))
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 0:
        raise JaxnasError(f"data.num_classes must be an integer >= 0, got {num_classes!r}")
    k = int(num_classes) or largest + 1
    if largest >= k:
        raise JaxnasError(f"dataset {name!r}: label {largest} is outside 0..{k - 1} (data.num_classes={k})")
    present = len(np.unique(y))
    if present < min_classes:
        raise JaxnasError(f"dataset {name!r}: the training labels hold {present} class"
                          f"{'' if present == 1 else 'es'}; classification needs at least {min_classes}")
    return x, y, xt, yt, k


def load_digits(holdout: bool = True) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16), scaled to 0..1, with a fixed 20% test split
    (``holdout=False``: all 1,797 images in ``x_train`` and an empty test split)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    parts = _holdout(x, y) if holdout else (x, y, x[:0], y[:0])
    return Dataset("digits", *parts, num_classes=10)


def load_npz(path: str, holdout: bool = True) -> Dataset:
    """A user's ``.npz``: ``x``, ``y`` and optionally ``x_test``, ``y_test``; without a test split, a fixed
    20% holdout (``holdout=False``: none, the test split is empty)."""
    if not os.path.isfile(path):
        raise JaxnasError(f"dataset file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise JaxnasError(f"dataset file {path!r} is not a readable .npz of plain arrays: {e}") from None
    if "x" not in arrays or "y" not in arrays:
        raise JaxnasError(f"dataset file {path!r} must hold arrays 'x' and 'y' (found {', '.join(arrays) or 'none'})")
    extra = sorted(set(arrays) - {"x", "y", "x_test", "y_test"})
    if extra:
        raise JaxnasError(f"dataset file {path!r} holds unknown member(s) {', '.join(extra)}; allowed: x, y, "
                          f"x_test, y_test")
    x, y, xt, yt, num_classes = check_arrays(path, arrays["x"], arrays["y"], arrays.get("x_test"),
                                             arrays.get("y_test"))
    if len(xt) == 0 and "x_test" not in arrays:
        x, y, xt, yt = _holdout(x, y) if holdout else (x, y, xt, yt)
        check_arrays(path, x, y)  # the holdout left every class it needs in training
    return Dataset(os.path.basename(path), x, y, xt, yt, num_classes=num_classes)


def _read_tfds_split(name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS's warnings about a missing folder: our one line says it
    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises several types for a dataset that is not prepared
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise JaxnasError(
            f"dataset {name!r} (split {split!r}) is not prepared in {where}: prepare it once with "
            f"pip install 'jaxnas[prepare]' && jaxnas prepare {name} --data_dir {where} "
            f"[{type(e).__name__}]") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    xs, ys = [], []
    for i in range(len(src)):
        record = src[i]
        xs.append(np.asarray(record["image"]))
        ys.append(int(record["label"]))
    x = np.stack(xs) if xs else np.zeros((0, 1, 1, 1), np.uint8)
    return x, np.asarray(ys, np.int32), src


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
    x, y, src = _read_tfds_split(name, "train", data_dir)
    xt, yt, _ = _read_tfds_split(name, "test", data_dir)
    x, y, xt, yt, _ = check_arrays(name, x, y, xt, yt)
    try:
        num_classes = int(src.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        num_classes = int(max(y.max(initial=0), yt.max(initial=0))) + 1
    return Dataset(name, x, y, xt, yt, num_classes)


def load_dataset(name: str, data_dir: str = "", holdout: bool = True) -> Dataset:
    """The embedded ``digits``, a ``.npz`` path, or a TFDS image dataset by name. A source without its
    own test split gets a fixed 20% holdout as test split; ``holdout=False`` leaves its test split empty."""
    if name == "digits":
        return load_digits(holdout)
    if name.endswith(".npz"):
        return load_npz(name, holdout)
    if name in TFDS_IMAGE_DATASETS:
        return load_tfds(name, data_dir)
    raise JaxnasError(f"unknown dataset {name!r}; allowed: digits (embedded), a path ending in .npz, "
                      f"or a TFDS image dataset: {', '.join(TFDS_IMAGE_DATASETS)}")


def prepare_tfds(name: str, data_dir: str | None = None) -> None:
    """Download and prepare a TFDS dataset once (needs TensorFlow: ``pip install 'jaxnas[prepare]'``)."""
    if name not in TFDS_IMAGE_DATASETS:
        raise JaxnasError(f"unknown TFDS dataset {name!r}; allowed: {', '.join(TFDS_IMAGE_DATASETS)}")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise JaxnasError("preparing a TFDS dataset needs TensorFlow: pip install 'jaxnas[prepare]'") from None
    import tensorflow_datasets as tfds

    tfds.builder(name, data_dir=data_dir or None).download_and_prepare()


def search_split(n: int, train_portion: float) -> tuple[np.ndarray, np.ndarray]:
    """DARTS's split of the train set: the first ``portion`` for weights, the rest for alphas."""
    if not 0.0 < train_portion < 1.0:
        raise JaxnasError(f"data.train_portion must be strictly between 0 and 1, got {train_portion}")
    split = int(np.floor(train_portion * n))
    return np.arange(split), np.arange(split, n)


def resolve_augment(augment: str, dataset_name: str) -> str:
    if augment not in AUGMENTS:
        raise JaxnasError(f"unknown augmentation {augment!r}; allowed: {', '.join(AUGMENTS)}")
    return DEFAULT_AUGMENT.get(dataset_name, "none") if augment == "auto" else augment


@dataclasses.dataclass(frozen=True)
class SearchData:
    """A search's data, loaded and split once (``search_data``): the dataset, DARTS's search-train and
    search-val rows of its training split (``search_split``), and the resolved augmentation."""

    dataset: Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    augment: str
    mean: np.ndarray  # per channel, of the training split (``Dataset.mean_std``, computed once)
    std: np.ndarray

    def batcher(self, part: str, batch_size: int, seed: int, stream: int, augment: str | None = None) -> "Batcher":
        """Batches of ``part`` ("train": search-train, "val": search-val), normalized by the training split's
        mean and std; ``augment`` None: the search's augmentation."""
        ds = self.dataset
        rows = {"train": self.train_idx, "val": self.val_idx}[part]
        return Batcher(ds.x_train, ds.y_train, rows, batch_size, self.mean, self.std,
                       self.augment if augment is None else augment, seed, stream)


def search_data(data_cfg, dataset: Dataset | None = None) -> SearchData:
    """The data of a search (``cfg.data``): ``dataset`` or the one ``data_cfg.name`` names, its search
    split by ``data_cfg.train_portion`` and its augmentation. Every search path takes its data from here."""
    ds = dataset if dataset is not None else load_dataset(data_cfg.name, data_cfg.data_dir)
    train_idx, val_idx = search_split(len(ds.x_train), data_cfg.train_portion)
    return SearchData(ds, train_idx, val_idx, resolve_augment(data_cfg.augment, ds.name), *ds.mean_std())


def augment_batch(x: np.ndarray, kind: str, rng: np.random.Generator, pad: int = 4,
                  total: int | None = None, part: slice = slice(None)) -> np.ndarray:
    """Random crop of the zero-padded image (torchvision RandomCrop(padding=4)) and random flip.

    ``x`` may be the rows ``part`` of a batch of ``total`` images: the draws are made for the
    whole batch, so every process of a multi-host run augments its rows as one process would.
    """
    if kind == "none":
        return x
    n, h, w, _ = x.shape
    total = total or n
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, total)[part]
    dx = rng.integers(0, 2 * pad + 1, total)[part]
    # image k's h x w window at (dy[k], dx[k]): a view of every window, then one gather of n of them
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))  # (n, 2p+1, 2p+1, c, h, w)
    out = np.ascontiguousarray(windows[np.arange(n), dy, dx].transpose(0, 2, 3, 1))
    if kind == "crop_flip":
        flip = rng.random(total)[part] < 0.5
        out[flip] = out[flip, :, ::-1]
    return out


def cutout(x: np.ndarray, length: int, rng: np.random.Generator, total: int | None = None,
           part: slice = slice(None)) -> np.ndarray:
    """DARTS Cutout: zero one length x length square per image, centred uniformly, clipped at the borders."""
    if length <= 0:
        return x
    n, h, w, _ = x.shape
    total = total or n
    cy, cx = rng.integers(0, h, total)[part], rng.integers(0, w, total)[part]
    out = x.copy()
    for k, (y0, x0) in enumerate(zip(np.clip(cy - length // 2, 0, h), np.clip(cx - length // 2, 0, w))):
        out[k, y0:cy[k] + length // 2, x0:cx[k] + length // 2] = 0
    return out


class Batcher:
    """Deterministic shuffled batches of a subset: batch ``i`` of epoch ``e`` depends only on (seed, e, i).

    Incomplete last batches are dropped so every step has the same shape (one compile).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int,
                 mean: np.ndarray, std: np.ndarray, augment: str, seed: int, stream: int, cutout: int = 0,
                 pad: int = 4):
        if batch_size > len(indices):
            raise JaxnasError(f"batch size {batch_size} is larger than the {len(indices)} examples of the split")
        self.x, self.y, self.indices = x, y, indices
        self.batch_size, self.augment, self.seed, self.stream = batch_size, augment, seed, stream
        self.cutout, self.pad = cutout, pad
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.steps_per_epoch = len(indices) // batch_size

    def batch(self, epoch: int, step: int, part: tuple[int, int] = (0, 1)) -> dict:
        """Batch ``step`` of ``epoch``; steps past the end of an epoch wrap into later permutations.

        ``part = (i, n)`` loads only the i-th of n equal row blocks (one process's share);
        the blocks of all parts together equal the whole batch.
        """
        index, count = part
        if self.batch_size % count:
            raise JaxnasError(f"batch size {self.batch_size} is not divisible by the process count {count}")
        n = self.batch_size // count
        rows = slice(index * n, (index + 1) * n)
        idx = self.rows(epoch, step)[rows]
        cycle, step = divmod(step, self.steps_per_epoch)
        rng = np.random.default_rng([self.seed, self.stream, epoch, cycle, step, 1])
        x = augment_batch(self.x[idx], self.augment, rng, pad=self.pad, total=self.batch_size, part=rows)
        x = cutout(normalize(x, self.mean, self.std), self.cutout, rng, total=self.batch_size, part=rows)
        return {"x": x, "y": self.y[idx]}

    def rows(self, epoch: int, step: int) -> np.ndarray:
        """The indices (into ``x``) of batch ``step`` of ``epoch``."""
        cycle, step = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, self.stream, epoch, cycle]).permutation(self.indices)
        return perm[step * self.batch_size:(step + 1) * self.batch_size]

    def epoch(self, epoch: int) -> Iterator[dict]:
        for step in range(self.steps_per_epoch):
            yield self.batch(epoch, step)


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int, mean: np.ndarray, std: np.ndarray) -> Iterator[dict]:
    """All examples in order, the last batch padded to full size with ``mask`` = 0 on the padding."""
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        n = len(xb)
        mask = np.zeros(batch_size, np.float32)
        mask[:n] = 1.0
        if n < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - n,) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros(batch_size - n, yb.dtype)])
        yield {"x": normalize(xb, mean.astype(np.float32), std.astype(np.float32)), "y": yb, "mask": mask}
