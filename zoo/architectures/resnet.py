"""ResNet-18 with the CIFAR stem (Model Zoos' ResNet-18 zoos).

torchvision's ResNet-18 with conv1 replaced by a 3x3 stride-1 conv without
bias and no max-pool: 11,173,962 parameters for 10 classes. The symmetry
table ties one permutation per residual stream (the stem's and each stage's
downsampled stream) across every tensor that writes into or reads from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from ..layout import Layout
from ..symmetry import conv, dense, norm
from .base import ArchDef


def build_resnet18(in_shape: Sequence[int], num_classes: int) -> nn.Module:
    from torchvision.models import resnet18  # imported here: torchvision costs seconds at start-up

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    axes: dict[str, tuple] = {}
    nonlinearity: dict[str, str] = {}
    stream = "S0"
    axes.update(conv("conv1", None, stream, bias=False))
    axes.update(norm("bn1", stream))
    nonlinearity[stream] = "relu"
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            inner = f"P{stage}.{block}"
            out = stream
            if f"{prefix}.downsample.0.weight" in layout:
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
    axes.update(dense("fc", stream, None))
    return axes, nonlinearity


RESNET18 = ArchDef("resnet18", {}, lambda in_shape, num_classes: build_resnet18(in_shape, num_classes),
                   _symmetry, "torchvision ResNet-18 with the CIFAR stem (3x3 conv1, no max-pool).")
