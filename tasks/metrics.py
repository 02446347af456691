"""The metrics a task declares (``tasks.registry.METRIC_NAMES``), each a function of (targets, predictions).

Regression metrics are scikit-learn's ``r2_score`` and scipy's ``kendalltau`` (tau-b; scipy comes with
scikit-learn). ``accuracy`` and ``macro_f1`` compare classes; a regression task that reports accuracy (``epoch``)
first snaps each prediction to the nearest of ``classes`` (the targets seen in training).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.errors import ZooError

from .registry import METRIC_NAMES


def snap(predictions: np.ndarray, classes: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each prediction replaced by the nearest of ``classes`` (ties: the smaller class)."""
    c = np.sort(np.asarray(classes, dtype=np.float64))
    p = np.asarray(predictions, dtype=np.float64)
    return c[np.abs(p[:, None] - c[None, :]).argmin(axis=1)]


def score(metric: str, targets: np.ndarray, predictions: np.ndarray, *, regression: bool = False,
          classes: Sequence | np.ndarray | None = None) -> float:
    """``metric`` of ``predictions`` against ``targets``; NaN where it is undefined (fewer than two rows, or a
    constant input to R² or τ). ``regression`` with ``classes``: class metrics snap predictions first."""
    from scipy.stats import kendalltau
    from sklearn.metrics import f1_score, r2_score

    y, p = np.asarray(targets), np.asarray(predictions)
    if metric not in METRIC_NAMES:
        raise ZooError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_NAMES)}")
    if len(y) != len(p):
        raise ZooError(f"metric {metric}: {len(y)} targets, {len(p)} predictions")
    if len(y) < 2:
        return float("nan")
    if metric in ("r2", "kendall_tau"):
        y, p = y.astype(np.float64), p.astype(np.float64)
        if np.ptp(y) == 0 or (metric == "kendall_tau" and np.ptp(p) == 0):
            return float("nan")
        if metric == "r2":
            return float(r2_score(y, p))
        return float(kendalltau(y, p).statistic)
    if regression:
        p = snap(p, classes if classes is not None else np.unique(y))
    if metric == "accuracy":
        return float(np.mean(y == p))
    return float(f1_score(y, p, average="macro", zero_division=0))
