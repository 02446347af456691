"""Load a manifest's image dataset as whole-split tensors on the training device.

The builder trains a population with batches gathered from tensors that sit on
the device (docs/design.md §5), so a split is read once into one array, not
iterated item by item. Pixels come from torchvision's own dataset classes so
their file readers run unchanged (tests write tiny files in the real formats).

Preprocessing follows the Model Zoos order: to float in [0, 1], grayscale,
resize, center crop, normalize. It runs batch by batch on the target device,
starting from uint8, so host memory and transfers stay small.

Splits: the test split is the dataset's own (digits: see ``_load_digits``).
``val_size`` training images are held out by a permutation seeded with
``split_seed``; ``train_fraction`` < 1 then keeps a subset of the remaining
train split picked by a second permutation seeded ``split_seed + 1``. Index
sets are sorted ascending, so the order of the data comes only from the trainer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from builders.importers import safepaths
from zoo.datasets import dataset_info
from zoo.errors import ZooError
from zoo.manifest import SECTIONS

#: ITU-R 601-2 luma weights, as PIL's ``convert("L")`` (we keep the float result, PIL rounds to uint8).
LUMA = (0.299, 0.587, 0.114)
#: Floats per preprocessing batch (about 256 MiB), which bounds peak memory on the device.
_BATCH_FLOATS = 1 << 26
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
#: Fraction of scikit-learn's digits held out as the fixed test split (floor of 20%: 359 of 1797).
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """One split as two aligned tensors, ready to index batches from (no per-item loading)."""

    x: torch.Tensor  # (N, C, H, W) float32, preprocessed and normalized
    y: torch.Tensor  # (N,) int64

    def to(self, device) -> Split:
        """A copy on ``device`` (the same object's tensors when they are already there)."""
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class ImageData:
    """A dataset's splits, preprocessed on one device, with the per-channel statistics they were normalized by."""

    train: Split
    val: Split | None  # None when val_size is 0 or None
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # per channel, subtracted (0 when normalize is false)
    std: tuple[float, ...]  # per channel, divided by (1 when normalize is false)

    def to(self, device) -> ImageData:
        """Every split moved to ``device``; the class count and statistics are unchanged."""
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device),
                                   val=self.val.to(device) if self.val is not None else None)


# --- raw readers: (train_x, train_y, test_x, test_y), x as (N, C, H, W) uint8 (or float in [0, 1]) ------------
Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _labels(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


def _images(values, layout: str) -> torch.Tensor:
    """uint8 images in ``layout`` ('NHW', 'NHWC' or 'NCHW') as an (N, C, H, W) tensor (a view where possible)."""
    x = torch.as_tensor(np.asarray(values)) if not isinstance(values, torch.Tensor) else values
    return {"NHW": lambda t: t.unsqueeze(1), "NHWC": lambda t: t.permute(0, 3, 1, 2), "NCHW": lambda t: t}[layout](x)


def _torchvision(cls_name: str, layout: str, split_kw: Callable[[bool], dict]) -> Callable[[Path, bool], Raw]:
    def load(root: Path, download: bool) -> Raw:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        out = []
        for train in (True, False):
            ds = cls(str(root), download=download, **split_kw(train))
            labels = ds.labels if hasattr(ds, "labels") else ds.targets
            out += [_images(ds.data, layout), _labels(labels)]
        return out[0], out[1], out[2], out[3]
    return load


def _read_rgb(paths: list[Path]) -> torch.Tensor:
    from PIL import Image

    if not paths:
        raise FileNotFoundError("no *.JPEG images found")

    def read(p: Path) -> np.ndarray:  # a regular file, never a link or a FIFO (safepaths)
        with os.fdopen(safepaths.open_regular(p), "rb") as f, Image.open(f) as im:
            return np.asarray(im.convert("RGB"))  # a few Tiny-ImageNet images are grayscale
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(read, paths, chunksize=256))
    if len({a.shape for a in arrays}) > 1:
        raise ZooError(f"images under {paths[0].parent.parent} differ in size; expected one size")
    return _images(np.stack(arrays), "NHWC")


def _load_tiny_imagenet(root: Path, download: bool) -> Raw:
    base = root / "tiny-imagenet-200"
    annotations = base / "val" / "val_annotations.txt"
    if download and not annotations.is_file():
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(_TINY_URL, str(root), md5=_TINY_MD5)
    if not (base / "train").is_dir() or not annotations.is_file():
        raise FileNotFoundError(f"{base / 'train'} or {annotations} is missing")
    # the folder is data: a link in it could point anywhere, an annotation entry could name any path
    linked = next((d for d in (base / "train").iterdir() if d.is_symlink()), None)
    if linked is not None:
        safepaths.check_folder(linked)
    wnids = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())  # class index = ImageFolder's
    index = {w: i for i, w in enumerate(wnids)}
    for w in wnids:
        safepaths.check_folder(base / "train" / w / "images")
    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    test = []
    images = base / "val" / "images"
    for n, line in enumerate(safepaths.read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{annotations}: line {n}"
        if len(fields) < 2 or fields[1] not in index:
            wnid = fields[1] if len(fields) > 1 else None
            raise ZooError(f"{where}: class {wnid!r} is not one of the {len(wnids)} folders of {base / 'train'}")
        test.append((safepaths.inside(images, fields[0], where), index[fields[1]]))
    return (_read_rgb([p for p, _ in train]), _labels([c for _, c in train]),
            _read_rgb([p for p, _ in test]), _labels([c for _, c in test]))


def _load_digits(root: Path, download: bool, split_seed: int) -> Raw:
    """scikit-learn's bundled 8x8 digits (values 0..16, scaled to [0, 1]).

    It has no test split of its own: a permutation seeded with ``split_seed`` puts its last
    floor(20% of 1797) = 359 images in test; the other 1438 (ascending) are the training set.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ZooError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = _labels(d.target)
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test = int(n * DIGITS_TEST_FRACTION)
    train, test = perm[:n - n_test].sort().values, perm[n - n_test:].sort().values
    return x[train], y[train], x[test], y[test]


_LOADERS: dict[str, Callable[[Path, bool], Raw]] = {
    "mnist": _torchvision("MNIST", "NHW", lambda t: {"train": t}),
    "fashion-mnist": _torchvision("FashionMNIST", "NHW", lambda t: {"train": t}),
    "cifar10": _torchvision("CIFAR10", "NHWC", lambda t: {"train": t}),
    "cifar100": _torchvision("CIFAR100", "NHWC", lambda t: {"train": t}),
    "svhn": _torchvision("SVHN", "NCHW", lambda t: {"split": "train" if t else "test"}),
    "usps": _torchvision("USPS", "NHW", lambda t: {"train": t}),
    "stl10": _torchvision("STL10", "NCHW", lambda t: {"split": "train" if t else "test"}),
    "tiny-imagenet": _load_tiny_imagenet,
}


def _read_raw(cfg: Mapping[str, Any]) -> Raw:
    name, root = cfg["name"], Path(os.path.expanduser(cfg["root"]))
    if name == "digits":
        return _load_digits(root, cfg["download"], cfg["split_seed"])
    try:
        return _LOADERS[name](root, cfg["download"])
    except (RuntimeError, OSError) as e:  # torchvision: RuntimeError; a missing file: OSError; no network: URLError
        raise ZooError(
            f"dataset {name!r}: files not found or unreadable under {root} ({e}); set `download = true` in the "
            f"manifest's [dataset] table to fetch them, or put the files there") from e


# --- preprocessing --------------------------------------------------------------------------------------------
def _preprocess(raw: torch.Tensor, cfg: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    """float [0, 1] -> grayscale -> resize -> center crop, in batches, on ``device``."""
    n, c, h, w = raw.shape
    channels = 1 if cfg["grayscale"] else c
    side = cfg["resize"] or h
    crop = cfg["center_crop"] if cfg["center_crop"] and cfg["center_crop"] < side else None
    out_side = crop or side
    out = torch.empty((n, channels, out_side, out_side), dtype=torch.float32, device=device)
    batch = max(1, _BATCH_FLOATS // (c * max(h * w, side * side)))
    luma = torch.tensor(LUMA, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    for lo in range(0, n, batch):
        x = raw[lo:lo + batch].to(device, non_blocking=True)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if cfg["grayscale"] and x.shape[1] == 3:
            x = (x * luma).sum(1, keepdim=True)
        if side != x.shape[-1] or side != x.shape[-2]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        if crop:  # torchvision's center_crop offsets: round((side - crop) / 2)
            top = int(round((side - crop) / 2.0))
            x = x[..., top:top + crop, top:top + crop]
        out[lo:lo + batch] = x
    return out


def _train_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std over all train pixels, accumulated in float64."""
    c = x.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s1)
    batch = max(1, _BATCH_FLOATS // max(1, x[0].numel()))
    for lo in range(0, x.shape[0], batch):
        b = x[lo:lo + batch].double()
        s1 += b.sum((0, 2, 3))
        s2 += (b * b).sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _fixed_stats(cfg: Mapping[str, Any], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for key in ("mean", "std"):
        if cfg[key] is None:
            other = "std" if key == "mean" else "mean"
            raise ZooError(f"dataset.{key} is missing: give dataset.mean and dataset.std together "
                           f"(dataset.{other} = {cfg[other]!r})")
        values = cfg[key]
        if len(values) != channels or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in values):
            raise ZooError(f"dataset.{key} = {values!r}: expected {channels} number(s), one per channel of "
                           f"{cfg['name']!r} after preprocessing (grayscale = {cfg['grayscale']})")
    if not all(s > 0 for s in cfg["std"]):
        raise ZooError(f"dataset.std = {cfg['std']!r}: every value must be > 0")
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


def _normalize_(x: torch.Tensor, mean, std) -> None:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x.sub_(m).div_(s)


# --- public ---------------------------------------------------------------------------------------------------
def load_image_data(dataset: Mapping[str, Any], *, device="cpu", train_fraction: float = 1.0) -> ImageData:
    """The train / val / test splits of a manifest's ``[dataset]`` table, preprocessed, on ``device``.

    Missing keys take the manifest's defaults. Normalization statistics (when no fixed mean/std are
    given) come from the train split after the val hold-out and *before* ``train_fraction``, so every
    model of a zoo sees identically normalized inputs whatever fraction it trains on.
    """
    cfg = {key: spec.default for key, spec in SECTIONS["dataset"].items()} | dict(dataset)
    info = dataset_info(cfg["name"])
    device = torch.device(device)
    if not 0 < train_fraction <= 1:
        raise ZooError(f"training.train_fraction = {train_fraction!r}: expected a value in (0, 1]")
    fixed = None  # checked before any file is read
    if cfg["normalize"] and (cfg["mean"] is not None or cfg["std"] is not None):
        fixed = _fixed_stats(cfg, 1 if cfg["grayscale"] else info.channels)

    train_x, train_y, test_x, test_y = _read_raw(cfg)
    n = train_x.shape[0]
    val_size = cfg["val_size"] or 0
    if val_size >= n:
        raise ZooError(f"dataset.val_size = {val_size} must be smaller than the {n} training images "
                       f"of {cfg['name']!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["split_seed"]))
    train_idx, val_idx = perm[:n - val_size].sort().values, perm[n - val_size:].sort().values

    train = Split(_preprocess(train_x[train_idx], cfg, device), train_y[train_idx].to(device))
    val = Split(_preprocess(train_x[val_idx], cfg, device), train_y[val_idx].to(device)) if val_size else None
    test = Split(_preprocess(test_x, cfg, device), test_y.to(device))
    channels = train.x.shape[1]

    if cfg["normalize"]:
        if fixed is None:
            mean, std = _train_stats(train.x)
            std = tuple(s if s > 0 else 1.0 for s in std)  # a constant channel stays finite
        else:
            mean, std = fixed
        for split in (train, val, test):
            if split is not None:
                _normalize_(split.x, mean, std)
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels

    if train_fraction < 1:
        keep = round(train_fraction * len(train))
        if keep < 1:
            raise ZooError(f"training.train_fraction = {train_fraction!r} keeps no image of the {len(train)} "
                           f"in the train split")
        sub = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg["split_seed"] + 1))
        sub = sub[:keep].sort().values.to(device)
        train = Split(train.x[sub], train.y[sub])
    return ImageData(train, val, test, info.num_classes, mean, std)


def load_images(dataset: Mapping[str, Any], split: str, indices: Sequence[int], *, device="cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``indices`` of the source's ``split`` ("train" or "test", before any val hold-out), as pixel
    values in [0, 1] after grayscale / resize / crop (never normalized: a neural field fits the pixels), with
    their labels: ((N, C, H, W) float32, (N,) int64) on ``device``. What an inr zoo fits."""
    cfg = {key: spec.default for key, spec in SECTIONS["dataset"].items()} | dict(dataset)
    train_x, train_y, test_x, test_y = _read_raw(cfg)
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    index = torch.as_tensor(list(indices), dtype=torch.int64)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= x.shape[0]):
        raise ZooError(f"images: indices {int(index.min())}..{int(index.max())} leave the {split} split of "
                       f"{cfg['name']!r} ({x.shape[0]} images)")
    return _preprocess(x[index], cfg, torch.device(device)), y[index].to(device)
