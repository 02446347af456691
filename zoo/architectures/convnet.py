"""Small CNNs of the published zoos: Model Zoos' CNN-s and CNN-l, Unterthiner's small CNN.

One ``ConvNet`` serves all three; each public architecture is a table of its
layers. Layer order follows the published models: conv -> (max-pool) ->
activation -> dropout, then either flatten -> hidden dense -> activation ->
dense (Model Zoos) or global average pooling -> dense (Small CNN Zoo).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .base import ACTIVATION_OPTION, DROPOUT_OPTION, ArchDef


def _convnet(name: str, doc: str, default_activation: str, **table: Any) -> ArchDef:
    def build(in_shape, num_classes, activation, dropout):
        from .modules import ConvNet

        return ConvNet(in_shape, num_classes, activation=activation, dropout=dropout, **table)

    def min_side(options: Mapping[str, Any]) -> int:
        return next(side for side in range(1, 4097) if _feature_side(side, table) >= 1)

    options = {"activation": replace(ACTIVATION_OPTION, default=default_activation), "dropout": DROPOUT_OPTION}
    return ArchDef(name, options, build, doc, min_side)


def _feature_side(side: int, table: Mapping[str, Any]) -> int:
    """Side of the last feature map for a square input (< 1: a layer gets an empty input)."""
    stride, padding = table.get("stride", 1), table.get("padding", 0)
    for k, pool in zip(table["kernels"], table["pools"]):
        side = (side + 2 * padding - k) // stride + 1
        if side < 1:
            return side
        side = side // 2 if pool else side
    return side


CNN_S = _convnet(
    "cnn-s", "Model Zoos CNN-s: 3 conv (8, 6, 4 channels; kernels 5, 5, 2), max-pool after the first two, "
    "dense 20, dense classes (2,464 parameters on 1x28x28).", "tanh",
    channels=(8, 6, 4), kernels=(5, 5, 2), pools=(True, True, False), hidden=20, global_pool=False)

CNN_L = _convnet(
    "cnn-l", "Model Zoos CNN-l: 3 conv (16, 32, 15 channels; kernels 3), max-pool after each, dense 20, "
    "dense classes (10,853 parameters on 3x32x32).", "tanh",
    channels=(16, 32, 15), kernels=(3, 3, 3), pools=(True, True, True), hidden=20, global_pool=False)

SMALLCNN = _convnet(
    "smallcnn", "Small CNN Zoo (Unterthiner et al. 2020): 3 conv of 16 channels, 3x3, stride 2, "
    "global average pooling, dense classes (4,970 parameters on 1x28x28).", "relu",
    channels=(16, 16, 16), kernels=(3, 3, 3), pools=(False, False, False), stride=2, padding=0,
    hidden=None, global_pool=True)
