"""Everything that consumes a store: a batch-wise PyTorch dataset, views, symmetry augmentation, splits."""

from .dataset import ZooDataset
from .splits import split_models
from .symmetry import BatchSymmetry
from .views import VIEWS, make_view

__all__ = ["VIEWS", "BatchSymmetry", "ZooDataset", "make_view", "split_models"]
