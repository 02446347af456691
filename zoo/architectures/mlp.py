"""A multilayer perceptron over the flattened image: the simplest weight space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..layout import Layout
from ..symmetry import dense
from .base import ACTIVATION_OPTION, DROPOUT_OPTION, MAX_WIDTH, ArchDef, Option


def _symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    hidden = options["hidden"]
    perms = [None] + [f"H{i}" for i in range(1, len(hidden) + 1)] + [None]
    axes: dict[str, tuple] = {}
    for i in range(len(perms) - 1):
        axes.update(dense(f"fc{i + 1}", perms[i], perms[i + 1]))
    return axes, {p: "act" for p in perms if p}


def _build(in_shape: Sequence[int], num_classes: int, **options: Any):
    from .modules import MLP

    return MLP(in_shape, num_classes, **options)


MLP_DEF = ArchDef(
    "mlp",
    {"hidden": Option(list, [32, 32], maximum=MAX_WIDTH, shape=True, doc="hidden layer widths"),
     "activation": ACTIVATION_OPTION, "dropout": DROPOUT_OPTION},
    _build,
    _symmetry,
    "MLP on the flattened input: dense hidden layers with an activation, dense classes.",
)
