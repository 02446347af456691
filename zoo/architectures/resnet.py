"""ResNets with the CIFAR stem.

``resnet18`` is torchvision's ResNet-18 with conv1 replaced by a 3x3 stride-1
conv without bias and no max-pool (Model Zoos' ResNet-18 zoos): 11,173,962
parameters for 10 classes. ``resnet`` is the same family at a chosen width
and depth (torchvision's BasicBlock and state_dict names), small enough to
train many on a CPU. One symmetry table serves both: it ties one permutation
per residual stream (the stem's and each stage's downsampled stream) across
every tensor that writes into or reads from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..layout import Layout
from ..symmetry import conv, dense, norm
from .base import ArchDef, Option


def _symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    axes: dict[str, tuple] = {}
    nonlinearity: dict[str, str] = {}
    stream = "S0"
    axes.update(conv("conv1", None, stream, bias=False))
    axes.update(norm("bn1", stream))
    nonlinearity[stream] = "relu"
    stage = 1
    while f"layer{stage}.0.conv1.weight" in layout:
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in layout:
            prefix, inner, out = f"layer{stage}.{block}", f"P{stage}.{block}", stream
            if f"{prefix}.downsample.0.weight" in layout:  # a new residual stream starts here
                out = f"S{stage}"
                axes.update(conv(f"{prefix}.downsample.0", stream, out, bias=False))
                axes.update(norm(f"{prefix}.downsample.1", out))
                nonlinearity[out] = "relu"
            axes.update(conv(f"{prefix}.conv1", stream, inner, bias=False))
            axes.update(norm(f"{prefix}.bn1", inner))
            axes.update(conv(f"{prefix}.conv2", inner, out, bias=False))
            axes.update(norm(f"{prefix}.bn2", out))
            nonlinearity[inner] = "relu"
            stream = out
            block += 1
        stage += 1
    axes.update(dense("fc", stream, None))
    return axes, nonlinearity


def _build_resnet(in_shape: Sequence[int], num_classes: int, width: int, blocks: Sequence[int]):
    from .modules import ResNet

    return ResNet(in_shape, num_classes, width=width, blocks=blocks)


def _build_resnet18(in_shape: Sequence[int], num_classes: int):
    from .modules import build_resnet18

    return build_resnet18(in_shape, num_classes)


RESNET = ArchDef(
    "resnet",
    {"width": Option(int, 16, positive=True, maximum=4096, shape=True,
                     doc="channels of the stem and first stage (doubling per stage)"),
     "blocks": Option(list, [1, 1, 1, 1], maximum=64, shape=True, doc="BasicBlocks per stage")},
    _build_resnet,
    _symmetry, "CIFAR-stem ResNet of BasicBlocks at a chosen width and depth (torchvision's names).",
    activation="relu")

RESNET18 = ArchDef("resnet18", {}, _build_resnet18,
                   _symmetry, "torchvision ResNet-18 with the CIFAR stem (3x3 conv1, no max-pool).", activation="relu")
