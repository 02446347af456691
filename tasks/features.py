"""Unterthiner et al.'s (2020) StatNN features: statistics of each weight and bias tensor, read from the layout.

For every tensor of the layout whose role is ``weight`` or ``bias`` (``zoo.layout.ROLES``), in layout order:
its mean, variance (population, ddof 0) and quantiles 0, 25, 50, 75 and 100 (numpy's linear interpolation), so
``7 * k`` features for ``k`` such tensors. No layer name is read: the same code serves any architecture, and two
zoos of one layout give features in the same order. Computed vectorized over a batch of rows, in float64.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ZooError
from zoo.layout import Layout, TensorSpec

#: The roles whose tensors give features.
STATNN_ROLES = ("weight", "bias")
#: The statistics per tensor, in feature order.
STATNN_STATS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def statnn_tensors(layout: Layout) -> list[TensorSpec]:
    """The tensors whose statistics are features: role weight or bias, in layout order."""
    return [t for t in layout.tensors if t.role in STATNN_ROLES]


def statnn_feature_names(layout: Layout) -> list[str]:
    """One name per feature: ``<index among the feature tensors>.<role>.<statistic>`` (no layer names)."""
    return [f"{i}.{t.role}.{s}" for i, t in enumerate(statnn_tensors(layout)) for s in STATNN_STATS]


def statnn_features(rows: np.ndarray, layout: Layout) -> np.ndarray:
    """(n, 7 * k) float64 features of ``rows`` ((n, layout.size) flat weights)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != layout.size:
        raise ZooError(f"statnn: rows of shape {rows.shape}; expected (n, {layout.size}) for this layout")
    tensors = statnn_tensors(layout)
    if not tensors:
        raise ZooError("statnn: the layout has no weight or bias tensor")
    out = np.empty((rows.shape[0], len(tensors), len(STATNN_STATS)), dtype=np.float64)
    for i, t in enumerate(tensors):
        values = rows[:, t.offset:t.stop].astype(np.float64)
        out[:, i, 0] = values.mean(axis=1)
        out[:, i, 1] = values.var(axis=1)
        out[:, i, 2:] = np.quantile(values, _QUANTILES, axis=1).T
    return out.reshape(rows.shape[0], -1)
