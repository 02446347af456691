"""ResNets with the CIFAR stem.

``resnet18`` is torchvision's ResNet-18 with conv1 replaced by a 3x3 stride-1
conv without bias and no max-pool (Model Zoos' ResNet-18 zoos): 11,173,962
parameters for 10 classes. ``resnet`` is the same family at a chosen width
and depth (torchvision's BasicBlock and state_dict names), small enough to
train many on a CPU. Their derived spec ties one permutation per residual
stream (the stem's and each stage's downsampled stream) across every tensor
that writes into or reads from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ArchDef, Option


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
    "CIFAR-stem ResNet of BasicBlocks at a chosen width and depth (torchvision's names).",
    activation="relu")

RESNET18 = ArchDef("resnet18", {}, _build_resnet18,
                   "torchvision ResNet-18 with the CIFAR stem (3x3 conv1, no max-pool).", activation="relu")
