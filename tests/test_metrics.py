import numpy as np
import pytest

from jaxnas import metrics


def test_metrics_on_a_hand_worked_confusion():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 2, 2])
    cm = metrics.confusion_matrix(labels, preds, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    m = metrics.from_confusion(cm)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P = 2/2, R = 2/3; class 1: P = 1/2, R = 1/2; class 2: P = 1/2, R = 1; class 3: undefined -> 0
    np.testing.assert_allclose(m["precision"], [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(m["recall"], [2 / 3, 0.5, 1.0, 0.0])
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5, 0.0]
    np.testing.assert_allclose(m["f1"], f1)
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert "macro-F1" in metrics.table(m)
