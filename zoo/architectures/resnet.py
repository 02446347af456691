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

from torch import nn
from torchvision.models.resnet import BasicBlock
from ..layout import Layout
from ..symmetry import conv, dense, norm
from .base import ArchDef, Option


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: the same numbers, and vmap has a batching rule for it (for
    channels-last inputs ``adaptive_avg_pool2d`` falls back to a per-model loop under vmap)."""

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


def build_resnet18(in_shape: Sequence[int], num_classes: int) -> nn.Module:
    from torchvision.models import resnet18  # imported here: torchvision costs seconds at start-up

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.avgpool = GlobalAvgPool()
    return model


class ResNet(nn.Module):
    """CIFAR-stem ResNet of BasicBlocks with torchvision's module names (conv1, bn1, layerN.M..., fc)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes_in = width
        for stage, n in enumerate(blocks, start=1):
            planes = width * 2 ** (stage - 1)
            stride = 1 if stage == 1 else 2
            layers = []
            for i in range(n):
                down = None
                if i == 0 and (stride != 1 or planes_in != planes):
                    down = nn.Sequential(nn.Conv2d(planes_in, planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes))
                layers.append(BasicBlock(planes_in, planes, stride if i == 0 else 1, down))
                planes_in = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(self.avgpool(x).flatten(1))


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


RESNET = ArchDef(
    "resnet",
    {"width": Option(int, 16, shape=True, doc="channels of the stem and first stage (doubling per stage)"),
     "blocks": Option(list, [1, 1, 1, 1], shape=True, doc="BasicBlocks per stage")},
    lambda in_shape, num_classes, width, blocks: ResNet(in_shape, num_classes, width=width, blocks=blocks),
    _symmetry, "CIFAR-stem ResNet of BasicBlocks at a chosen width and depth (torchvision's names).")

RESNET18 = ArchDef("resnet18", {}, lambda in_shape, num_classes: build_resnet18(in_shape, num_classes),
                   _symmetry, "torchvision ResNet-18 with the CIFAR stem (3x3 conv1, no max-pool).")
