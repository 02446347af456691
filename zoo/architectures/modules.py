"""The torch modules behind the registered architectures.

Kept apart from the declarations (``convnet.py``, ``mlp.py``, ``resnet.py``) so that reading a manifest, a plan or a
store's description never imports torch: a declaration's ``build`` imports this module when a module is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import make_activation


class ConvNet(nn.Module):
    """The network behind cnn-s, cnn-l and smallcnn; its module names (``conv{i}``, ``fc`` or ``fc1``/``fc2``) are
    the ones their symmetry tables name, so renaming one breaks the spec."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, channels: Sequence[int],
                 kernels: Sequence[int], pools: Sequence[bool], stride: int = 1, padding: int = 0,
                 hidden: int | None, global_pool: bool, activation: str, dropout: float) -> None:
        super().__init__()
        self.pools = list(pools)
        self.global_pool = global_pool
        self.act = make_activation(activation)
        self.convs = []
        c_in = in_shape[0]
        for i, (c, k) in enumerate(zip(channels, kernels), start=1):
            layer = nn.Conv2d(c_in, c, k, stride=stride, padding=padding)
            setattr(self, f"conv{i}", layer)
            self.convs.append(f"conv{i}")
            c_in = c
        # one dropout module per application (after each conv, and after the hidden dense), so a population
        # trainer can give each its own random stream
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity()
                                      for _ in range(len(self.convs) + (1 if hidden else 0)))
        with torch.no_grad():
            features = self._features(torch.zeros(1, *in_shape)).shape[1]
        if hidden:
            self.fc1 = nn.Linear(features, hidden)
            self.fc2 = nn.Linear(hidden, num_classes)
        else:
            self.fc = nn.Linear(features, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        for i, (name, pool) in enumerate(zip(self.convs, self.pools)):
            x = getattr(self, name)(x)
            if pool:
                x = nn.functional.max_pool2d(x, 2, 2)
            x = self.dropouts[i](self.act(x))
        return x.mean(dim=(2, 3)) if self.global_pool else x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images (N, C, H, W) of the shape the net was built for."""
        x = self._features(x)
        if hasattr(self, "fc1"):
            return self.fc2(self.dropouts[-1](self.act(self.fc1(x))))
        return self.fc(x)


class MLP(nn.Module):
    """Dense layers ``fc1``..``fc{depth}`` on the flattened input; the names are the ones its symmetry table uses."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int],
                 activation: str, dropout: float) -> None:
        super().__init__()
        self.act = make_activation(activation)
        sizes = [math.prod(in_shape), *hidden, num_classes]
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        # one module per application, so a population trainer can give each its own random stream
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity()
                                      for _ in range(self.depth - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for inputs (N, *in_shape); it flattens, so only the values per example count."""
        x = x.flatten(1)
        for i in range(1, self.depth):
            x = self.dropouts[i - 1](self.act(getattr(self, f"fc{i}")(x)))
        return getattr(self, f"fc{self.depth}")(x)


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: the same numbers, and vmap has a batching rule for it (for
    channels-last inputs ``adaptive_avg_pool2d`` falls back to a per-model loop under vmap)."""

    def forward(self, x):
        """(N, C, H, W) -> (N, C, 1, 1)."""
        return x.mean(dim=(2, 3), keepdim=True)


def build_resnet18(in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a CIFAR stem (3x3 conv, no max-pool), so small images keep their resolution."""
    from torchvision.models import resnet18  # imported here: torchvision costs seconds at start-up

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.avgpool = GlobalAvgPool()
    return model


class ResNet(nn.Module):
    """CIFAR-stem ResNet of BasicBlocks with torchvision's module names (conv1, bn1, layerN.M..., fc)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int, blocks: Sequence[int]) -> None:
        from torchvision.models.resnet import BasicBlock  # torchvision costs seconds: only when a ResNet is made

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
        """Logits (N, classes) for images (N, C, H, W)."""
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(self.avgpool(x).flatten(1))
