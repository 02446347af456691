"""A multilayer perceptron over the flattened image: the simplest weight space."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..layout import Layout
from ..symmetry import dense
from .base import ACTIVATION_OPTION, ACTIVATIONS, DROPOUT_OPTION, ArchDef, Option


class MLP(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int],
                 activation: str, dropout: float) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        sizes = [math.prod(in_shape), *hidden, num_classes]
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        # one module per application, so a population trainer can give each its own random stream
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity()
                                      for _ in range(self.depth - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth):
            x = self.dropouts[i - 1](self.act(getattr(self, f"fc{i}")(x)))
        return getattr(self, f"fc{self.depth}")(x)


def _symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    hidden = options["hidden"]
    perms = [None] + [f"H{i}" for i in range(1, len(hidden) + 1)] + [None]
    axes: dict[str, tuple] = {}
    for i in range(len(perms) - 1):
        axes.update(dense(f"fc{i + 1}", perms[i], perms[i + 1]))
    return axes, {p: "act" for p in perms if p}


MLP_DEF = ArchDef(
    "mlp",
    {"hidden": Option(list, [32, 32], shape=True, doc="hidden layer widths"),
     "activation": ACTIVATION_OPTION, "dropout": DROPOUT_OPTION},
    lambda in_shape, num_classes, **o: MLP(in_shape, num_classes, **o),
    _symmetry,
    "MLP on the flattened input: dense hidden layers with an activation, dense classes.",
)
