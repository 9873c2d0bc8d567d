"""Paired comparisons of two classifiers on the same test examples.

* ``paired_bootstrap``: the 95% (``confidence``) percentile interval of a metric's difference
  (B minus A) over test examples resampled with replacement, both models on the same resample
  (Efron & Tibshirani 1993, ch. 13; scipy.stats.bootstrap with ``paired=True``).
* ``mcnemar``: McNemar's exact test (the binomial form, two-sided): of the examples the two models
  disagree on, ``b`` only A gets right and ``c`` only B; under "equally accurate" c ~ Binomial(b + c, 1/2)
  (McNemar 1947; Dietterich 1998 recommends it for comparing two classifiers on one test set).
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


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int,
                     metric: str = "accuracy", resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """``{"difference": m(B) - m(A), "low": .., "high": .., "confidence": ..}`` with the percentile interval."""
    fn = METRICS[metric]
    y, pred_a, pred_b = (np.asarray(v) for v in (y, pred_a, pred_b))
    diff = fn(y, pred_b, num_classes) - fn(y, pred_a, num_classes)
    if metric == "accuracy":  # the mean of per-example differences: vectorized
        data = ((pred_b == y).astype(np.float64) - (pred_a == y),)
        res = scipy.stats.bootstrap(data, np.mean, n_resamples=resamples, confidence_level=confidence,
                                    method="percentile", rng=np.random.default_rng(seed))
    else:
        res = scipy.stats.bootstrap((y, pred_a, pred_b),
                                    lambda t, a, b: fn(t, b, num_classes) - fn(t, a, num_classes),
                                    paired=True, vectorized=False, n_resamples=resamples,
                                    confidence_level=confidence, method="percentile",
                                    rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    return {"difference": float(diff), "low": float(low), "high": float(high), "confidence": confidence,
            "resamples": resamples}


def mcnemar(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test: ``{"only_a": b, "only_b": c, "p_value": ...}`` (1.0 when they never disagree)."""
    y, pred_a, pred_b = (np.asarray(v) for v in (y, pred_a, pred_b))
    a_ok, b_ok = pred_a == y, pred_b == y
    only_a, only_b = int(np.sum(a_ok & ~b_ok)), int(np.sum(~a_ok & b_ok))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(scipy.stats.binomtest(only_b, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": min(p, 1.0)}
