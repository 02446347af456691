"""Learners for weight-space tasks, under one small protocol, and the ``statnn`` baseline.

The protocol (``Learner``): a learner has a ``name`` and ``settings()`` (every hyperparameter, JSON-ready: the
result file records them), ``fit(train, val, seed)`` and ``predict(data)``. ``train``, ``val`` and ``data`` are
``TaskData``: one split's flat weight rows (``rows``, float32, (n, layout.size)), the ``layout`` they follow,
the task's ``targets`` (n,) and each row's ``model_ids`` and ``epochs``; ``val`` may be None (a split without
one). ``predict`` returns (n,) predictions: numbers for a regression, class values for a classification.
``fit`` is called once per seed on a fresh learner (``make_learner``), so a learner keeps no state between
seeds. A user's learner is any object with these members, passed to ``tasks.run`` in place of a name.

``statnn`` (Unterthiner et al. 2020): the StatNN features of ``tasks/features.py`` fed to gradient-boosted trees
(``model="gbt"``: scikit-learn's HistGradientBoostingRegressor / Classifier) or a linear model
(``model="linear"``: standardized features into Ridge / LogisticRegression). Every hyperparameter is fixed
below, stated in ``settings()``, and the seed is the estimator's ``random_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from zoo.errors import ZooError
from zoo.layout import Layout

from .features import STATNN_ROLES, STATNN_STATS, statnn_features


@dataclass(frozen=True)
class TaskData:
    """One split of a task: weight rows, their layout, targets, and which checkpoint each row is."""

    rows: np.ndarray
    layout: Layout
    targets: np.ndarray
    model_ids: np.ndarray
    epochs: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@runtime_checkable
class Learner(Protocol):
    """What ``tasks.run`` needs of a learner (see the module docstring)."""

    name: str

    def settings(self) -> dict[str, Any]:
        """Every hyperparameter, JSON-ready."""

    def fit(self, train: TaskData, val: TaskData | None, seed: int) -> None:
        """Train on ``train`` (``val`` for early stopping or selection, if the learner uses it)."""

    def predict(self, data: TaskData) -> np.ndarray:
        """(n,) predictions for ``data``'s rows."""


#: statnn's fixed hyperparameters per model and task kind (what ``settings()`` reports).
STATNN_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "gbt": {
        "regression": {"estimator": "sklearn.ensemble.HistGradientBoostingRegressor", "loss": "squared_error",
                       "learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "max_depth": None,
                       "min_samples_leaf": 20, "l2_regularization": 0.0, "max_bins": 255,
                       "early_stopping": False},
        "classification": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "loss": "log_loss",
                           "learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "max_depth": None,
                           "min_samples_leaf": 20, "l2_regularization": 0.0, "max_bins": 255,
                           "early_stopping": False},
    },
    "linear": {
        "regression": {"estimator": "sklearn.linear_model.Ridge", "standardize": True, "alpha": 1.0,
                       "fit_intercept": True},
        "classification": {"estimator": "sklearn.linear_model.LogisticRegression", "standardize": True,
                           "C": 1.0, "max_iter": 1000, "solver": "lbfgs", "fit_intercept": True},
    },
}


class StatNN:
    """The ``statnn`` baseline: StatNN features, then gradient-boosted trees or a linear model."""

    name = "statnn"

    def __init__(self, kind: str, model: str = "gbt") -> None:
        if model not in STATNN_SETTINGS:
            raise ZooError(f"statnn: model {model!r}; allowed: {', '.join(STATNN_SETTINGS)}")
        if kind not in STATNN_SETTINGS[model]:
            raise ZooError(f"statnn: task kind {kind!r}; allowed: {', '.join(STATNN_SETTINGS[model])}")
        self.kind, self.model = kind, model
        self._estimator: Any = None

    def settings(self) -> dict[str, Any]:
        """The model, its estimator's every hyperparameter, and the features."""
        return {"model": self.model, **STATNN_SETTINGS[self.model][self.kind],
                "features": {"roles": list(STATNN_ROLES), "stats": list(STATNN_STATS),
                             "quantile_method": "linear", "variance_ddof": 0}}

    def _make(self, seed: int) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        s = {k: v for k, v in STATNN_SETTINGS[self.model][self.kind].items() if k not in ("estimator",
                                                                                          "standardize")}
        if self.model == "gbt":
            cls = HistGradientBoostingRegressor if self.kind == "regression" else HistGradientBoostingClassifier
            return cls(**s, random_state=seed)
        if self.kind == "regression":
            return make_pipeline(StandardScaler(), Ridge(**s, random_state=seed))
        return make_pipeline(StandardScaler(), LogisticRegression(**s, random_state=seed))

    def fit(self, train: TaskData, val: TaskData | None, seed: int) -> None:
        """Fit on ``train``'s features (``val`` unused: the hyperparameters are fixed)."""
        if len(train) == 0:
            raise ZooError("statnn: the train split has no rows")
        self._estimator = self._make(seed)
        y = train.targets.astype(np.float64) if self.kind == "regression" else train.targets
        self._estimator.fit(statnn_features(train.rows, train.layout), y)

    def predict(self, data: TaskData) -> np.ndarray:
        """Predictions for ``data``'s rows."""
        if self._estimator is None:
            raise ZooError("statnn: predict before fit")
        if len(data) == 0:
            return np.zeros(0, dtype=data.targets.dtype)
        return np.asarray(self._estimator.predict(statnn_features(data.rows, data.layout)))


#: Learner name -> how to make a fresh one from (task kind, options).
LEARNERS: Mapping[str, Any] = {"statnn": StatNN}


def make_learner(name: str, kind: str, **options: Any) -> Learner:
    """A fresh learner called ``name`` for a task of ``kind``; ``options`` are its own (statnn: ``model``)."""
    if name not in LEARNERS:
        raise ZooError(f"unknown learner {name!r}; allowed: {', '.join(LEARNERS)}")
    learner: Learner = LEARNERS[name](kind, **options)
    return learner
