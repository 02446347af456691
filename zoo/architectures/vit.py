"""A small Vision Transformer for the small images of model zoos (8x8 to 32x32).

torchvision's ``VisionTransformer`` (its state_dict names, class token, learned position embedding, pre-norm
encoder blocks of ``nn.MultiheadAttention`` and a GELU MLP), with the patch embedding rebuilt for the dataset's
channels. Its symmetries are derived like every other's: the residual stream's permutation (shared by the patch
embedding, class token, position embedding, every LayerNorm and every block's input and output), and per block a
head permutation, a query/key permutation within the heads, a value permutation within the heads, and the MLP's
hidden units. LayerNorm and GELU allow nothing beyond permutations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import MAX_WIDTH, ArchDef, Option


def _build(in_shape: Sequence[int], num_classes: int, **options: Any):
    from .modules import build_vit

    return build_vit(in_shape, num_classes, **options)


def _min_side(options: Mapping[str, Any]) -> int:
    return max(1, options["patch"])


VIT = ArchDef(
    "vit",
    {"patch": Option(int, 0, minimum=0, maximum=4096, shape=True,
                     doc="patch side (it must divide the image side); 0: a quarter of the side (4x4 patches)"),
     "layers": Option(int, 4, positive=True, maximum=64, shape=True, doc="encoder blocks"),
     "heads": Option(int, 4, positive=True, maximum=256, shape=True, doc="attention heads (they divide width)"),
     "width": Option(int, 64, positive=True, maximum=MAX_WIDTH, shape=True, doc="hidden size of the stream"),
     "mlp": Option(int, 128, positive=True, maximum=MAX_WIDTH, shape=True, doc="hidden units of each block's MLP")},
    _build,
    "torchvision VisionTransformer for small square images: patch embedding for the dataset's channels, class "
    "token, learned positions, pre-norm blocks of multi-head attention and a GELU MLP (4 blocks of width 64 and "
    "4 heads by default).",
    _min_side,
    activation="gelu",
)
