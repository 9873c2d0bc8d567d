"""Known corruptions of a dataset's labels or class balance, for honest demonstrations of example
reweighting (``data.corrupt``): applied after the split to the training split (and to the validation
split only where ``data.corrupt.val`` asks), never to the test split; seeded; recorded in split.json.

* ``symmetric`` at rate r: each example's label is, with probability r, replaced by one of the other
  K - 1 classes drawn uniformly, so a fraction r of the labels is wrong (the common convention,
  e.g. Han et al. 2018).
* ``uniform_mix`` at rate r: as Meta-Weight-Net's ``unif`` corruption (Shu et al. 2019,
  ``load_corrupted_data.py``, ``uniform_mix_C``): with probability r the label is redrawn uniformly
  over all K classes, itself included, so r (K - 1) / K of the labels are wrong (36% at r = 0.4 on
  10 classes).
* ``longtail`` with imbalance factor f: class c keeps a seeded random ``floor(n_max * f^(-c / (K - 1)))``
  of its training examples (at least one), n_max the largest class's count: class 0 keeps all, the
  last class 1/f of n_max (Cui et al. 2019, as MW-Net's long-tailed CIFAR). The validation split
  stays as drawn (balanced for a balanced dataset): the clean meta data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxnas.errors import JaxnasError

KINDS = ("none", "symmetric", "uniform_mix", "longtail")


@dataclasses.dataclass
class Corruption:
    """What was done: the labels to train on (``y``, a copy), the training indices kept, which
    examples' labels are still correct (``clean``, over the whole pool), and the record for split.json."""

    y: np.ndarray
    train: np.ndarray
    val: np.ndarray
    clean: np.ndarray
    record: dict


def check(c, num_classes: int | None = None) -> None:
    """``data.corrupt``'s fields: a known kind, a noise rate in [0, 1), a factor >= 1."""
    if c.kind not in KINDS:
        raise JaxnasError(f"data.corrupt.kind={c.kind!r} unknown; allowed: {', '.join(KINDS)}")
    rate, factor = float(c.rate), float(c.factor)
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise JaxnasError(f"data.corrupt.rate must be in [0, 1), got {c.rate!r}")
    if not (math.isfinite(factor) and factor >= 1.0):
        raise JaxnasError(f"data.corrupt.factor must be a finite number >= 1, got {c.factor!r}")
    if c.kind in ("symmetric", "uniform_mix") and rate == 0.0:
        raise JaxnasError(f"data.corrupt.kind={c.kind} needs data.corrupt.rate in (0, 1), got 0")
    if c.kind == "longtail" and factor == 1.0:
        raise JaxnasError("data.corrupt.kind=longtail needs data.corrupt.factor > 1 (1 is no imbalance)")
    if c.kind == "longtail" and c.val:
        raise JaxnasError("data.corrupt.val applies to label noise; longtail leaves the validation split as drawn")
    if num_classes is not None and num_classes < 2 and c.kind != "none":
        raise JaxnasError("data.corrupt needs at least 2 classes")


def _noise(y: np.ndarray, idx: np.ndarray, kind: str, rate: float, k: int, rng: np.random.Generator) -> np.ndarray:
    out = y.copy()
    hit = rng.random(len(idx)) < rate
    if kind == "symmetric":
        shift = rng.integers(1, k, size=len(idx))  # one of the other K - 1 classes
        new = (y[idx] + shift) % k
    else:
        new = rng.integers(0, k, size=len(idx))
    out[idx[hit]] = new[hit]
    return out


def apply(c, y: np.ndarray, train: np.ndarray, val: np.ndarray, num_classes: int, seed: int) -> Corruption:
    """Corrupt ``y`` on ``train`` (and ``val`` when ``c.val``) as ``c`` says, seeded by ``seed``."""
    check(c, num_classes)
    k, kind = num_classes, c.kind
    record = {"kind": kind}
    y_new, keep = y.copy(), train
    if kind in ("symmetric", "uniform_mix"):
        rate = float(c.rate)
        y_new = _noise(y, train, kind, rate, k, np.random.default_rng([seed, 7919, 0]))
        if c.val:
            y_new = _noise(y_new, val, kind, rate, k, np.random.default_rng([seed, 7919, 1]))
        wrong = np.flatnonzero(y_new != y)
        record.update(rate=rate, val=bool(c.val), wrong_labels=len(wrong),
                      wrong_fraction_train=float(np.mean(y_new[train] != y[train])),
                      wrong_indices=wrong.tolist(), original_labels=y[wrong].tolist())
    elif kind == "longtail":
        factor = float(c.factor)
        counts = np.bincount(y[train], minlength=k)
        n_max = int(counts.max())
        kept = []
        for cls in range(k):
            members = np.random.default_rng([seed, 7919, 2, cls]).permutation(train[y[train] == cls])
            n = max(1, int(n_max * factor ** (-cls / (k - 1))))
            kept.append(members[:n])
        keep = np.sort(np.concatenate(kept))
        record.update(factor=factor, train_class_counts=np.bincount(y[keep], minlength=k).tolist(),
                      removed=int(len(train) - len(keep)))
    return Corruption(y_new, keep, val, y_new == y, record)
