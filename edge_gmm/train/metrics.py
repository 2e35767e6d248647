"""Classification figures from predictions: confusion matrix, accuracy, macro-F1 (numpy only)."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted; unlabeled (-1) rows ignored."""
    ok = y_true >= 0
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true[ok], y_pred[ok]), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the truth or the predictions."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    seen = (tp + fp + fn) > 0
    if not seen.any():
        return float("nan")
    f1 = np.where(seen, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)
    return float(f1[seen].mean())
