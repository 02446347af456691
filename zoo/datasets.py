"""Image-dataset registry: what each dataset is (classes, channels, native size).

The manifest validates dataset names against this registry, and the
architecture's input shape and class count are filled in from it, so a
manifest never repeats (or contradicts) facts the dataset already implies.
Loading the pixels belongs to the builder; the facts live here so that both
the builder and the loaders can read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """Facts a manifest may not restate: class count, channels and native side fix the network's input and output."""

    name: str
    num_classes: int
    channels: int
    size: int  # native square side in pixels
    source: str  # where the pixels come from (torchvision class, folder, sklearn)
    train_size: int = 0  # images in the train split (before a manifest's val_size hold-out)
    test_size: int = 0  # images in the test split

    def split_size(self, split: str) -> int:
        """Images in the source's ``train`` or ``test`` split."""
        return self.train_size if split == "train" else self.test_size


DATASETS: Registry[DatasetInfo] = Registry("dataset")

for _info in (
    DatasetInfo("mnist", 10, 1, 28, "torchvision.datasets.MNIST", 60000, 10000),
    DatasetInfo("fashion-mnist", 10, 1, 28, "torchvision.datasets.FashionMNIST", 60000, 10000),
    DatasetInfo("cifar10", 10, 3, 32, "torchvision.datasets.CIFAR10", 50000, 10000),
    DatasetInfo("cifar100", 100, 3, 32, "torchvision.datasets.CIFAR100", 50000, 10000),
    DatasetInfo("svhn", 10, 3, 32, "torchvision.datasets.SVHN", 73257, 26032),
    DatasetInfo("usps", 10, 1, 16, "torchvision.datasets.USPS", 7291, 2007),
    DatasetInfo("stl10", 10, 3, 96, "torchvision.datasets.STL10", 5000, 8000),
    DatasetInfo("tiny-imagenet", 200, 3, 64, "image folder (Tiny-ImageNet layout)", 100000, 10000),
    DatasetInfo("digits", 10, 1, 8, "sklearn.datasets.load_digits (bundled, offline)", 1438, 359),
):
    DATASETS.register(_info.name, _info)


def dataset_info(name: str) -> DatasetInfo:
    """The registered facts (case-insensitive name); an unknown name raises ``UnknownNameError`` listing the known."""
    return DATASETS.get(name)


def input_shape(name: str, *, grayscale: bool = False, resize: int | None = None,
                center_crop: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) the network sees after the manifest's preprocessing."""
    info = dataset_info(name)
    channels = 1 if grayscale else info.channels
    side = resize or info.size
    if center_crop:
        side = min(side, center_crop)
    return channels, side, side
