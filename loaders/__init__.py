"""Everything that consumes a store: a batch-wise PyTorch dataset, views, symmetry augmentation, splits."""

from . import graph_view, nfn_views  # noqa: F401  (register the nfn, dws and graph views)
from .dataset import ZooDataset, ZooStream
from .normalize import Normalizer
from .splits import load_split, save_split, split_models
from .symmetry import BatchSymmetry
from .views import VIEWS, make_view

__all__ = ["VIEWS", "BatchSymmetry", "Normalizer", "ZooDataset", "ZooStream", "load_split", "make_view",
           "save_split", "split_models"]
