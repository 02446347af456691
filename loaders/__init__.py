"""Everything that consumes a store: a batch-wise PyTorch dataset, views, symmetry augmentation, splits.

Names load on first use (PEP 562), like ``zoo`` and ``builders``: ``import loaders`` costs no torch, and every
view is known to ``VIEWS`` without importing the modules that define them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.lazy import lazy_names

_LAZY = {"ZooDataset": "dataset", "ZooStream": "dataset", "Normalizer": "normalize", "load_split": "splits",
         "save_split": "splits", "split_models": "splits", "BatchSymmetry": "symmetry", "VIEWS": "views",
         "make_view": "views"}

if TYPE_CHECKING:
    from .dataset import ZooDataset, ZooStream
    from .normalize import Normalizer
    from .splits import load_split, save_split, split_models
    from .symmetry import BatchSymmetry
    from .views import VIEWS, make_view


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["VIEWS", "BatchSymmetry", "Normalizer", "ZooDataset", "ZooStream", "load_split", "make_view",
           "save_split", "split_models"]
