"""A multilayer perceptron over the flattened image: the simplest weight space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import ACTIVATION_OPTION, DROPOUT_OPTION, MAX_WIDTH, ArchDef, Option


def _build(in_shape: Sequence[int], num_classes: int, **options: Any):
    from .modules import MLP

    return MLP(in_shape, num_classes, **options)


MLP_DEF = ArchDef(
    "mlp",
    {"hidden": Option(list, [32, 32], maximum=MAX_WIDTH, shape=True, doc="hidden layer widths"),
     "activation": ACTIVATION_OPTION, "dropout": DROPOUT_OPTION},
    _build,
    "MLP on the flattened input: dense hidden layers with an activation, dense classes.",
)
