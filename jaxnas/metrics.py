"""Classification metrics from a confusion matrix: accuracy, macro-F1, per-class precision/recall."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of examples of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
    return cm


def from_confusion(cm: np.ndarray) -> dict:
    """Top-1 accuracy, macro-F1 and per-class precision/recall/F1 (0 where undefined, as scikit-learn)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def table(m: dict) -> str:
    """A short printable summary."""
    lines = [f"top-1 {m['accuracy']:.4f}" + (f"  top-5 {m['top5']:.4f}" if "top5" in m else "")
             + f"  macro-F1 {m['macro_f1']:.4f}", "class  precision  recall  f1"]
    for i, (p, r, f) in enumerate(zip(m["precision"], m["recall"], m["f1"])):
        lines.append(f"{i:5d}  {p:9.4f}  {r:6.4f}  {f:.4f}")
    return "\n".join(lines)
