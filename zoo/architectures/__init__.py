"""Architecture registry: each entry declares constructor, options and symmetry table."""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import ACTIVATIONS, ArchDef, Architecture, Option
from .convnet import CNN_L, CNN_S, SMALLCNN
from .mlp import MLP_DEF
from .resnet import RESNET, RESNET18
from .siren import SIREN

ARCHITECTURES: Registry[ArchDef] = Registry("architecture")
for _arch in (CNN_S, CNN_L, SMALLCNN, MLP_DEF, RESNET, RESNET18, SIREN):
    ARCHITECTURES.register(_arch.name, _arch)


def list_architectures() -> list[str]:
    """Names a manifest's ``architecture.name`` accepts, sorted."""
    return ARCHITECTURES.names()


def get_architecture(name: str, in_shape: tuple[int, int, int], num_classes: int = 10,
                     **options: Any) -> Architecture:
    """Resolve a registered architecture for an input shape, class count and options. ``in_shape`` is the image
    shape (C, H, W), also for a neural field (siren), whose module reads ``Architecture.input_shape`` instead."""
    return ARCHITECTURES.get(name).resolve(in_shape, num_classes, options)


__all__ = ["ACTIVATIONS", "ARCHITECTURES", "ArchDef", "Architecture", "Option", "get_architecture",
           "list_architectures"]
