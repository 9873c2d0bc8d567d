"""Paired comparisons of two classifiers on the same test examples, over one or several seeds.

* ``paired_bootstrap``: the mean over seeds of a metric's difference (B minus A, both trained with
  the same seed) and its 95% (``confidence``) percentile interval from a paired hierarchical
  bootstrap: each resample draws the seeds with replacement (the pair of models of a seed stays
  together) and, independently, the test examples with replacement (the same examples for every seed
  and both models), and averages the resampled per-seed differences. The two levels are the two
  sources of variation of the comparison: training randomness and the finite test split (Davison &
  Hinkley 1997, Sec. 3.8; Efron & Tibshirani 1993, ch. 13). With one seed it is the ordinary paired
  bootstrap over test examples.
* ``mcnemar``: McNemar's exact test (the binomial form, two-sided): of the examples the two models
  disagree on, ``b`` only A gets right and ``c`` only B; under "equally accurate" c ~ Binomial(b + c, 1/2)
  (McNemar 1947; Dietterich 1998 recommends it for comparing two classifiers on one test set). It
  compares one pair of models, so it is reported per seed.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from jaxnas import metrics as metrics_lib


def accuracy(y, pred, num_classes: int) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def macro_f1(y, pred, num_classes: int) -> float:
    return metrics_lib.from_confusion(metrics_lib.confusion_matrix(y, pred, num_classes))["macro_f1"]


METRICS = {"accuracy": accuracy, "macro_f1": macro_f1}


def _by_seed(pred) -> np.ndarray:
    pred = np.asarray(pred)
    return pred[None] if pred.ndim == 1 else pred


def _macro_f1_counts(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> float:
    """Macro-F1 of the examples counted ``weights`` times each (a bootstrap resample), as
    ``metrics.from_confusion`` computes it: per-class F1, 0 for a class never predicted nor present."""
    cm = np.bincount(y * k + pred, weights=weights, minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int,
                     metric: str = "accuracy", resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """``{"difference", "low", "high", "confidence", "resamples", "seeds", "per_seed"}``: the mean over
    seeds of m(B) - m(A) and its percentile interval (module docstring). ``pred_a``/``pred_b``: the
    test predictions, ``(n,)`` for one seed or ``(seeds, n)``, row s of both from seed s."""
    fn = METRICS[metric]
    y = np.asarray(y)
    pa, pb = _by_seed(pred_a), _by_seed(pred_b)
    if pa.shape != pb.shape or pa.shape[1] != len(y):
        raise ValueError(f"predictions of shapes {pa.shape} and {pb.shape} for {len(y)} test labels")
    s, n = pa.shape
    per_seed = [fn(y, pb[i], num_classes) - fn(y, pa[i], num_classes) for i in range(s)]
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(s, np.full(s, 1.0 / s), size=resamples)    # (B, S)
    example_counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)  # (B, n)
    if metric == "accuracy":  # the mean of per-example differences: c_s^T D e / (S n), vectorized
        d = (pb == y).astype(np.float64) - (pa == y)                          # (S, n)
        stats = np.einsum("bs,sb->b", seed_counts, d @ example_counts.T) / (s * n)
    else:
        k = num_classes
        per = np.empty((resamples, s))
        for b in range(resamples):
            e = example_counts[b].astype(np.float64)
            per[b] = [_macro_f1_counts(y, pb[i], e, k) - _macro_f1_counts(y, pa[i], e, k) for i in range(s)]
        stats = (seed_counts * per).sum(1) / s
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return {"difference": float(np.mean(per_seed)), "low": float(low), "high": float(high),
            "confidence": confidence, "resamples": resamples, "seeds": s,
            "per_seed": [float(v) for v in per_seed],
            "method": "paired hierarchical percentile bootstrap (seeds, then test examples, with replacement)"
                      if s > 1 else "paired percentile bootstrap over test examples"}


def mcnemar(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test: ``{"only_a": b, "only_b": c, "p_value": ...}`` (1.0 when they never disagree)."""
    y, pred_a, pred_b = (np.asarray(v) for v in (y, pred_a, pred_b))
    a_ok, b_ok = pred_a == y, pred_b == y
    only_a, only_b = int(np.sum(a_ok & ~b_ok)), int(np.sum(~a_ok & b_ok))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(scipy.stats.binomtest(only_b, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": min(p, 1.0)}
