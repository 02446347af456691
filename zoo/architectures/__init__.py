"""Architecture registry: each entry declares a constructor and its options; layouts and symmetry specs are derived
from the modules (``derive.py``). Names outside the registry: ``torchvision:NAME`` and ``package.module:function``
(``external.py``)."""

from __future__ import annotations

from typing import Any

from ..errors import UnknownNameError
from ..registry import Registry
from .base import ACTIVATIONS, ArchDef, Architecture, Option
from .convnet import CNN_L, CNN_S, SMALLCNN
from .external import external_definition, is_external, kwargs_json
from .mlp import MLP_DEF
from .resnet import RESNET, RESNET18
from .siren import SIREN
from .vit import VIT

ARCHITECTURES: Registry[ArchDef] = Registry("architecture")
for _arch in (CNN_S, CNN_L, SMALLCNN, MLP_DEF, RESNET, RESNET18, SIREN, VIT):
    ARCHITECTURES.register(_arch.name, _arch)


def list_architectures() -> list[str]:
    """Names a manifest's ``architecture.name`` accepts, sorted."""
    return ARCHITECTURES.names()


def definition(name: str) -> ArchDef:
    """The declaration behind a name: a registered architecture, ``torchvision:NAME`` or a factory's
    ``package.module:function``; an unknown name raises ``UnknownNameError`` listing the registered ones."""
    if is_external(name):
        return external_definition(name)
    try:
        return ARCHITECTURES.get(name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{e}; or 'torchvision:NAME' (a torchvision.models classification model), or a "
                               "factory 'package.module:function'") from None


def get_architecture(name: str, in_shape: tuple[int, int, int], num_classes: int = 10,
                     **options: Any) -> Architecture:
    """Resolve an architecture for an input shape, class count and options. ``in_shape`` is the image shape
    (C, H, W), also for a neural field (siren), whose module reads ``Architecture.input_shape`` instead.

    ``name`` is a registered architecture (its options as keywords), ``"torchvision:NAME"`` or a factory's
    ``"package.module:function"`` (their constructor's keyword arguments as keywords, e.g.
    ``get_architecture("torchvision:VisionTransformer", (3, 32, 32), 10, patch_size=4, num_layers=4,
    num_heads=4, hidden_dim=64, mlp_dim=128)``). The caller names the architecture, so a factory it names is
    imported and called (``Architecture.trusted``)."""
    if is_external(name):
        options = {"kwargs": kwargs_json(options)}
    return definition(name).resolve(in_shape, num_classes, options, trusted=True)  # the caller named it


__all__ = ["ACTIVATIONS", "ARCHITECTURES", "ArchDef", "Architecture", "Option", "definition", "get_architecture",
           "is_external", "list_architectures"]
