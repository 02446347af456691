"""Published INR sets (DWSNets, NFN): a folder of per-INR state-dict files -> an inr store.

The sets that DWSNets, NFN, neural graphs and ScaleGMN train on are one ``torch.save`` file per image, whose path
says which image it fits. Layouts (read from the authors' code; ``--convention`` picks one):

``dwsnets`` (AvivNavon/DWSNets)::

    SRC/.../<dataset>_png_<training|testing>_<label>_<index>/checkpoints/model_final.pth   MNIST (mnist-inrs.zip)
    SRC/.../<train|test>/model_<index>.pth                                           Fashion-MNIST (fmnist_inrs.zip)

    keys seq.0.weight, seq.0.bias, ..., seq.N.bias -> net.0.weight, ..., net.N.bias

  The MNIST folder names the split, the class and the image's index in that split (the number of its
  ``mnist_png`` file, the image's position in the split). The Fashion-MNIST file names the split and the image's
  index; its class is the state dict's ``label`` entry (an int or a one-element tensor). Conventions: every
  sine layer sin(30 (W x + b)), zero sine-layer biases at init, a plain linear output plus 0.5, (column, row)
  coordinates, targets in [0, 1].

``nfn`` (AllanYangZhou/nfn, experiments/siren_utils.py and data_utils.py)::

    SRC/.../randinit_smaller_<label>s/net<index>.pth          (siren_mnist_wts, siren_fashion_wts, siren_cifar_wts)

    keys net.0.linear.weight, net.0.linear.bias, ..., net.N.weight, net.N.bias -> net.0.weight, ..., net.N.bias

  The folder names the class; ``index`` counts the train and test images of the dataset concatenated, train
  first (``ConcatDataset([train, test])``), so index ``i`` is train image ``i`` below the train split's size and
  test image ``i - train size`` above it. Conventions: Sitzmann's SIREN (first layer U(+-1/in)), w0 = 30, no
  output offset, (row, column) coordinates, targets in [-1, 1]. The ``randinit_smaller_aug<k>_<label>s``
  folders hold augmented copies (further fits of train images from other random inits); they are left out,
  and counted in the store's description and its ``imported_from`` attribute: one store keeps one INR per
  image (a population of images x seeds has no room for copies of some images only).

The hidden widths come from the first file's shapes, every other file must match them, and the output layer's
width must be the dataset's channel count. The dataset is ``dataset=`` (``--dataset``) or, without it, read from
the folder names (``siren_<name>_wts``, ``<name>-inrs``, ``<name>_inrs``, ``<name>_png_...``; ``fmnist`` and
``fashion`` are Fashion-MNIST, ``cifar`` is CIFAR-10).

The store's manifest is an inr manifest: the images (``[images]``, with ``images.indices`` where the imported
ones are not one consecutive range of one split), the siren's options of the convention, and one seed (0: the
sets do not record their fits' seeds). Every INR is one checkpoint; its step is unknown (the published fits
stop early), so the checkpoint is epoch 1 with a null ``step`` unless ``steps=`` (``--steps``) says how many
steps every fit took (then epoch = step = that). The records hold each image's ``label``; ``mse``, ``psnr`` and
``psnr_2x`` are computed only with ``evaluate=True`` (``--evaluate``), against the dataset's images found under
``data_root`` (never downloaded), exactly as a build records them (``builders.inr_population.InrPopulation``), and then
each file's class is checked against the dataset's label of its image (a wrong index convention shows up as a
mismatch). Without it they are null.

Files are read with ``torchfile`` (no torch), each once, unit by unit, in this process; every error names the
file and what is wrong (a file name outside the layout, a missing or unexpected key, a wrong shape, a class out
of range, two files for one image). Writing is ``common.write_import``'s: resumable, nothing half-written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.datasets import DATASETS
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.manifest import IMAGE_SPLITS, Manifest
from zoo.registry import Registry

from . import safepaths, statedicts, torchfile
from .protocol import ImportReport, ImportSource, slug
from .statedicts import RowSpec, map_state_dict
from .workers import Workers

__all__ = ["CONVENTIONS", "Convention", "InrFile", "InrSource", "import_inr", "read_inr"]

#: The most parameters an imported INR may have (64 MB of float32 per row): the published sets' have a few
#: thousand, and the hidden widths come from a file's shapes, so they are checked before anything is built.
MAX_PARAMS = 2**24
#: Models per unit of an inr import: INRs are a few KB each, so units of 1,024 (about 5 MB shards) keep a
#: 70,000-INR set at 69 units rather than the 1,100 of the default group size.
GROUP_SIZE = 1024
#: Folder-name spellings of the published sets -> the dataset registry's names (registry names pass as they are).
DATASET_SPELLINGS = {"fmnist": "fashion-mnist", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist",
                     "fashion_mnist": "fashion-mnist", "f_mnist": "fashion-mnist", "cifar": "cifar10",
                     "cifar-10": "cifar10", "cifar_10": "cifar10"}
#: Folder names that name the dataset: NFN's siren_<name>_wts, DWSNets' <name>-inrs / <name>_inrs archives.
_DATASET_FOLDER = re.compile(r"^(?:siren_(?P<nfn>[a-z0-9_-]+?)_wts|(?P<dws>[a-z0-9_-]+?)[-_]inrs?)$", re.IGNORECASE)
_DWS_FOLDER = re.compile(r"^(?P<dataset>[a-z0-9_-]+?)_png_(?P<split>training|testing)_(?P<label>\d+)_(?P<index>\d+)$",
                         re.IGNORECASE)
_DWS_SPLITS = {"training": "train", "testing": "test"}
_DWS_FILE = ("checkpoints", "model_final.pth")
_DWS_SPLIT_FILE = re.compile(r"^model_(?P<index>\d+)\.pth$")
_NFN_FOLDER = re.compile(r"^randinit_smaller_(?P<label>\d+)s$")
_NFN_AUGMENTED = re.compile(r"^randinit_smaller_aug\d+_\d+s$")
_NFN_FILE = re.compile(r"^net(?P<index>\d+)\.pth$")


@dataclass(frozen=True)
class InrFile:
    """One INR's file, placed by its path: ``split`` and ``index`` of its image (``index`` may still be NFN's
    index over train and test together until the dataset is known: ``split`` "all"), its class (None: in the
    file, the Fashion-MNIST layout) and a dataset name the path suggests."""

    path: Path
    split: str
    index: int
    label: int | None
    hint: str | None = None


@dataclass
class Scan:
    """What a convention's walk over ``SRC`` found."""

    files: list[InrFile] = field(default_factory=list)
    augmented: int = 0  # NFN's augmented copies, left out


@dataclass(frozen=True)
class Convention:
    """A published set's layout and conventions: how to find its files (``scan``), how its keys name the siren's
    layers (``layer``: key -> (layer index, 'weight' or 'bias', whether the key is the output layer's form, or
    None where either form is), what the siren options and recipe are."""

    name: str
    title: str
    layouts: str  # the accepted file layouts, as error messages name them
    keys: str  # the keys a file holds, as error messages name them
    options: Mapping[str, Any]
    training: Mapping[str, Any]
    note: str  # what the description says of the recipe
    citation: str
    scan: Callable[[Path], Scan]
    layer: Callable[[str], tuple[int, str, bool | None] | None]


CONVENTIONS: Registry[Convention] = Registry("INR convention")


# --- walking the folders -----------------------------------------------------------------------------------
def _walk(src: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` of ``src`` in sorted order (the caller prunes ``dirnames`` in place). A link to a folder, and a
    ``.pth`` that is a link or a special file (a FIFO would block the import), is ``safepaths.Refused``, named:
    an INR folder is data, and a link in it could point anywhere."""
    for dirpath, dirnames, filenames in os.walk(src):  # never follows links
        dirnames.sort()
        filenames.sort()
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                safepaths.check_folder(os.path.join(dirpath, name))
        for name in filenames:
            if name.endswith(".pth"):
                safepaths.check_regular(os.path.join(dirpath, name))
        yield dirpath, dirnames, filenames


def _not_in_layout(path: str, convention: str, layouts: str) -> ZooError:
    return ZooError(f"{path}: file name not in the {convention} layout; its INRs are {layouts}")


def _dataset_hint(name: str) -> str | None:
    m = _DATASET_FOLDER.match(name)
    return (m["nfn"] or m["dws"]).lower() if m else None


def _scan_dwsnets(src: Path) -> Scan:
    scan = Scan()
    for dirpath, dirnames, filenames in _walk(src):
        hint = _dataset_hint(os.path.basename(dirpath))
        kept = []
        for name in dirnames:
            m = _DWS_FOLDER.match(name)
            if m is None:
                kept.append(name)
                continue
            file = Path(dirpath, name, *_DWS_FILE)
            if safepaths.is_link_or_special(file.parent):
                safepaths.check_folder(file.parent)
            if safepaths.is_link_or_special(file):
                safepaths.check_regular(file)
            if not file.is_file():
                raise ZooError(f"{file}: missing (a DWSNets INR folder {name} holds {'/'.join(_DWS_FILE)})")
            scan.files.append(InrFile(file, _DWS_SPLITS[m["split"].lower()], int(m["index"]), int(m["label"]),
                                      m["dataset"].lower()))
        dirnames[:] = kept  # the INR folders are not walked into
        split = os.path.basename(dirpath)
        for name in filenames:
            if not name.endswith(".pth"):
                continue
            m = _DWS_SPLIT_FILE.match(name)
            if m is None or split not in IMAGE_SPLITS:
                raise _not_in_layout(os.path.join(dirpath, name), "dwsnets", CONVENTIONS.get("dwsnets").layouts)
            parent = _dataset_hint(os.path.basename(os.path.dirname(dirpath)))
            scan.files.append(InrFile(Path(dirpath, name), split, int(m["index"]), None, parent or hint))
    return scan


def _scan_nfn(src: Path) -> Scan:
    scan = Scan()
    for dirpath, dirnames, filenames in _walk(src):
        folder = os.path.basename(dirpath)
        m = _NFN_FOLDER.match(folder)
        if _NFN_AUGMENTED.match(folder):
            scan.augmented += sum(name.endswith(".pth") for name in filenames)
            dirnames[:] = []
            continue
        for name in filenames:
            if not name.endswith(".pth"):
                continue
            f = _NFN_FILE.match(name)
            if m is None or f is None:
                raise _not_in_layout(os.path.join(dirpath, name), "nfn", CONVENTIONS.get("nfn").layouts)
            hint = _dataset_hint(os.path.basename(os.path.dirname(dirpath)))
            scan.files.append(InrFile(Path(dirpath, name), "all", int(f["index"]), int(m["label"]), hint))
        if m is not None:
            dirnames[:] = []
    return scan


def _dwsnets_layer(key: str) -> tuple[int, str, bool | None] | None:
    m = re.fullmatch(r"seq\.(\d+)\.(weight|bias)", key)
    return (int(m[1]), m[2], None) if m else None


def _nfn_layer(key: str) -> tuple[int, str, bool | None] | None:
    m = re.fullmatch(r"net\.(\d+)\.(linear\.)?(weight|bias)", key)
    return (int(m[1]), m[3], m[2] is None) if m else None


CONVENTIONS.register("dwsnets", Convention(
    "dwsnets", "DWSNets (Navon et al. 2023)",
    "<dataset>_png_<training|testing>_<label>_<index>/checkpoints/model_final.pth (MNIST) or "
    "<train|test>/model_<index>.pth with a 'label' entry (Fashion-MNIST)",
    "seq.N.weight and seq.N.bias",
    {"w0": 30.0, "first_w0": 30.0, "offset": 0.5, "init_scheme": "dwsnets", "coords": "xy", "pixels": "unit"},
    {"optimizer": "adam", "lr": 5e-4},
    "fitted with Adam, lr 5e-4, for up to 1,000 whole-image steps, stopping early at 40 dB PSNR (DWSNets issue #6)",
    "Navon et al., Equivariant Architectures for Learning in Deep Weight Spaces, ICML 2023",
    _scan_dwsnets, _dwsnets_layer))
CONVENTIONS.register("nfn", Convention(
    "nfn", "NFN (Zhou et al. 2023)",
    "randinit_smaller_<label>s/net<index>.pth (index over the train and test images, train first)",
    "net.N.linear.weight and net.N.linear.bias for the sine layers, net.N.weight and net.N.bias for the output",
    {"w0": 30.0, "first_w0": 30.0, "offset": 0.0, "init_scheme": "sitzmann", "coords": "ij", "pixels": "signed"},
    {"optimizer": "adam", "lr": 1e-4},
    "NFN publishes no fitting recipe: the training fields are Sitzmann et al.'s image-fitting defaults, not a record",
    "Zhou et al., Permutation Equivariant Neural Functionals, NeurIPS 2023",
    _scan_nfn, _nfn_layer))


# --- reading one file -----------------------------------------------------------------------------------------
def read_inr(file: InrFile, convention: Convention
             ) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, dict[str, str]], int]:
    """The file's tensors by layer (index -> 'weight'/'bias' -> array), the keys they came from, and its class
    (the path's, or the state dict's ``label`` entry; the two must agree where both are given)."""
    path = file.path
    try:
        data = torchfile.read_file(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ZooError(f"{path}: missing") from None
    if not data:
        raise ZooError(f"{path}: {torchfile.EMPTY}")
    try:
        obj = torchfile.load(data)
    except torchfile.Unreadable as e:
        raise ZooError(f"{path}: {e.why}") from None
    except torchfile.Unsupported:  # legacy format, bfloat16: torch reads it, from the same bytes
        obj = statedicts._torch_load(path, data)
    if not isinstance(obj, Mapping):
        raise ZooError(f"{path}: expected a state dict (key -> tensor), got {type(obj).__name__}")
    held = sum(v.nbytes for v in obj.values() if isinstance(v, np.ndarray))
    if held > len(data):  # views sharing a storage: more values than the file holds
        raise ZooError(f"{path}: {torchfile.REFUSED} its tensors hold {held} bytes in all, but the file has "
                       f"{len(data)}; every value must be backed by the file's bytes")
    label = file.label
    layers: dict[int, dict[str, np.ndarray]] = {}
    keys: dict[int, dict[str, str]] = {}
    outputs: dict[int, bool | None] = {}
    for key, value in obj.items():
        if key == "label":
            found = _label(path, value)
            if label is not None and found != label:
                raise ZooError(f"{path}: 'label' entry {found}, but the path says class {label}")
            label = found
            continue
        place = convention.layer(key) if isinstance(key, str) else None
        if place is None:
            extra = " (and, in the Fashion-MNIST layout, 'label')" if convention.name == "dwsnets" else ""
            raise ZooError(f"{path}: unexpected key {key!r}; {convention.title} INRs hold {convention.keys}{extra}")
        if not isinstance(value, np.ndarray):
            raise ZooError(f"{path}: {key!r} is a {type(value).__name__}, not a tensor")
        i, attr, output = place
        if attr in layers.get(i, {}):
            raise ZooError(f"{path}: {key!r} and {keys[i][attr]!r} both give layer {i}'s {attr}")
        if outputs.setdefault(i, output) != output:
            raise ZooError(f"{path}: {key!r} and {next(iter(keys[i].values()))!r} name layer {i} in two forms")
        layers.setdefault(i, {})[attr] = value
        keys.setdefault(i, {})[attr] = key
    if label is None:
        raise ZooError(f"{path}: no 'label' entry; in this layout each INR's state dict holds its image's class")
    if not layers:
        raise ZooError(f"{path}: no tensors; {convention.title} INRs hold {convention.keys}")
    n = len(layers)
    if sorted(layers) != list(range(n)):
        raise ZooError(f"{path}: layers {sorted(layers)}; expected layers 0..{n - 1} ({convention.keys})")
    for i in range(n):
        missing = {"weight", "bias"} - set(layers[i])
        if missing:
            raise ZooError(f"{path}: layer {i} has no {missing.pop()} ({convention.keys})")
        if outputs[i] is not None and outputs[i] != (i == n - 1):
            raise ZooError(f"{path}: {keys[i]['weight']!r}: {convention.keys}")
        if layers[i]["weight"].ndim != 2:
            raise ZooError(f"{path}: {keys[i]['weight']!r} has shape {tuple(layers[i]['weight'].shape)}; a "
                           "linear layer's weight is 2-D (out, in)")
    return layers, keys, label


def _check_size(path: Path, hidden: Sequence[int], channels: int) -> None:
    """The siren that ``hidden`` (read from ``path``'s shapes) implies is at most ``MAX_PARAMS`` and backed by the
    file's bytes (2 per parameter at least: float16), checked before the architecture is built or a row allocated."""
    sizes = [2, *hidden, channels]
    params = sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))
    size = os.lstat(path).st_size
    if params > MAX_PARAMS or 2 * params > size:
        raise ZooError(f"{path}: hidden widths {list(hidden)} imply {params} parameters, but the file holds {size} "
                       f"bytes (at least 2 per parameter; at most {MAX_PARAMS} parameters are imported); refused")


def _label(path: Path, value: Any) -> int:
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        return int(value.reshape(-1)[0])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ZooError(f"{path}: 'label' entry {value!r}; expected the image's class, an integer")


# --- the source -------------------------------------------------------------------------------------------------
class InrSource(ImportSource):
    """A folder of per-INR state-dict files in a published layout, scanned and checked (as far as the manifest
    depends on it: names, images, the first file's shapes) before anything is written."""

    format = "inr"
    LICENSE = "unknown"
    CITATION = ""

    def __init__(self, src: str | Path, *, convention: str, dataset: str | None = None, name: str | None = None,
                 steps: int | None = None, evaluate: bool = False, data_root: str | None = None) -> None:
        self.src = Path(src)
        self.convention = CONVENTIONS.get(convention)
        if not self.src.is_dir():
            raise ZooError(f"{self.src}: not a directory (expected a folder of {self.convention.title} INR files: "
                           f"{self.convention.layouts})")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise ZooError(f"steps: expected the fits' number of optimizer steps, an integer >= 1, got {steps!r}")
        self.base, self.skipped, self.skipped_reasons = None, [], {}
        scan = self.convention.scan(self.src)
        self.augmented = scan.augmented
        if not scan.files:
            more = f" ({scan.augmented} augmented copies, which are left out)" if scan.augmented else ""
            raise ZooError(f"{self.src}: no INR files in the {self.convention.name} layout{more}; expected "
                           f"{self.convention.layouts}")
        self.dataset = self._dataset(dataset, scan.files)
        self.files = self._place(scan.files)
        self.steps = steps
        first = self.files[0]
        layers, keys, _ = read_inr(first, self.convention)
        hidden = [int(layers[i]["weight"].shape[0]) for i in range(len(layers) - 1)]
        info = DATASETS.get(self.dataset)
        _check_size(first.path, hidden, info.channels)
        out = layers[len(layers) - 1]["weight"]
        if out.shape[0] != info.channels:
            raise ZooError(f"{first.path}: output layer {keys[len(layers) - 1]['weight']!r} has {out.shape[0]} "
                           f"channel(s), but {self.dataset!r} images have {info.channels}"
                           + ("" if dataset is not None else "; pass --dataset NAME"))
        self.data_root = data_root
        self.choose(self._manifest(name, hidden))
        arch = next(iter(self.explicit.architectures.values()))
        self.layout: Layout = arch.layout
        self.spec = RowSpec("siren", self.layout, tuple(self.explicit.input_shape))
        placed = [(m.hparams["image_split"], m.hparams["image_index"]) for m in self.explicit.models]
        if placed != [(f.split, f.index) for f in self.files]:  # the manifest lists the images in file order
            raise ZooError(f"{self.src}: internal error: the manifest's images are not the files' order")
        self._done: dict[int, dict[str, Any]] = {}  # source -> its record, from reading its unit
        self._images = self._load_images() if evaluate else None

    # --- what the store is ----------------------------------------------------------------------------------
    def _dataset(self, given: str | None, files: Sequence[InrFile]) -> str:
        if given is not None:
            return DATASETS.get(DATASET_SPELLINGS.get(given.lower(), given)).name
        where = self.src.resolve()
        hints = [f.hint for f in files[:1] if f.hint] + [p.name for p in (where, *where.parents)]
        for hint in hints:
            word = (_dataset_hint(hint) or hint).lower()
            name = DATASET_SPELLINGS.get(word, word)
            if name in DATASETS:
                return DATASETS.get(name).name
        raise ZooError(f"{self.src}: the folder names do not say which dataset the INRs fit; pass --dataset NAME "
                       f"(one of {', '.join(DATASETS.names())})")

    def _place(self, files: Sequence[InrFile]) -> list[InrFile]:
        """Each file's image as (split, index in that split), checked, in model order (train, then test, by
        index); NFN's indices over train and test together are split here."""
        info = DATASETS.get(self.dataset)
        placed: list[InrFile] = []
        seen: dict[tuple[str, int], Path] = {}
        for f in files:
            split, index = f.split, f.index
            if split == "all":
                if index >= info.train_size + info.test_size:
                    raise ZooError(f"{f.path}: image {index} of the {info.train_size + info.test_size} train and test "
                                   f"images of {self.dataset!r} (NFN counts them together, train first)")
                split, index = ("train", index) if index < info.train_size else ("test", index - info.train_size)
            elif index >= info.split_size(split):
                raise ZooError(f"{f.path}: image {index}; the {split} split of {self.dataset!r} has "
                               f"{info.split_size(split)} images (0..{info.split_size(split) - 1})")
            if f.label is not None and not 0 <= f.label < info.num_classes:
                raise ZooError(f"{f.path}: class {f.label}; {self.dataset!r} has classes 0..{info.num_classes - 1}")
            key = (split, index)
            if key in seen:
                raise ZooError(f"{seen[key]} and {f.path}: two INRs of image {index} of the {split} split; one store "
                               "holds one INR per image")
            seen[key] = f.path
            placed.append(InrFile(f.path, split, index, f.label, f.hint))
        return sorted(placed, key=lambda f: (IMAGE_SPLITS.index(f.split), f.index))

    def _manifest(self, name: str | None, hidden: list[int]) -> Manifest:
        c = self.convention
        info = DATASETS.get(self.dataset)
        by_split = {s: [f.index for f in self.files if f.split == s] for s in IMAGE_SPLITS}
        by_split = {s: v for s, v in by_split.items() if v}
        if len(by_split) == 1 and (v := next(iter(by_split.values()))) == list(range(v[0], v[-1] + 1)):
            images: dict[str, Any] = {"split": next(iter(by_split)), "start": v[0], "count": len(v)}
        else:
            images = {"indices": by_split}
        epochs = self.steps or 1
        notes = [c.note]
        notes.append(f"each fit's step count is {'given as ' + str(self.steps) if self.steps else 'unknown'}"
                     + ("" if self.steps else " (epoch 1 is the published fit; step is null)"))
        if self.augmented:
            notes.append(f"{self.augmented} augmented copies (randinit_smaller_aug*) left out")
        notes.append("seed 0 stands for the fits' unrecorded seeds")
        dataset: dict[str, Any] = {"name": self.dataset}
        if self.data_root is not None:
            dataset["root"] = str(self.data_root)
        data = {
            "zoo": {"name": name or slug(f"{self.dataset}-inr-{c.name}"), "kind": "inr",
                    "description": f"{len(self.files)} {c.title} INRs of {self.dataset} imported from "
                                   f"{self.src.resolve()}; " + "; ".join(notes) + ".",
                    "license": self.LICENSE, "citation": c.citation},
            "dataset": dataset,
            "images": images,
            "architecture": {"name": "siren", "hidden": hidden, **c.options},
            "training": {**c.training, "epochs": epochs, "batch_size": info.size * info.size},
            "population": {"seeds": [0], "grouping": "architecture"},
            "checkpoints": {"epochs": [epochs]},
        }
        return Manifest.from_dict(data, source=f"zoo import inr {self.src}")

    def _load_images(self) -> dict[str, tuple[Any, Any, dict[int, int]]]:
        """split -> (images, labels, index -> position) of the imported images, from the dataset's files."""
        from builders.data import load_images

        out = {}
        for split in IMAGE_SPLITS:
            indices = [f.index for f in self.files if f.split == split]
            if not indices:
                continue
            try:
                x, y = load_images(self.explicit.dataset, split, indices)
            except ZooError as e:
                raise ZooError(f"--evaluate: {e}; --evaluate never downloads: put the files under --data-root"
                               ) from None
            out[split] = (x, y, {index: i for i, index in enumerate(indices)})
        return out

    # --- what the writer asks for ---------------------------------------------------------------------------------
    def _read_unit(self, sources: Sequence[int]) -> np.ndarray:
        """Read the unit's files into rows, keep each one's record (label, step and, evaluating, the fit)."""
        rows = np.empty((len(sources), self.layout.size), dtype=np.float32)
        labels = []
        for row, s in zip(rows, sources):
            f = self.files[s]
            layers, keys, label = read_inr(f, self.convention)
            info = DATASETS.get(self.dataset)
            if not 0 <= label < info.num_classes:
                raise ZooError(f"{f.path}: class {label}; {self.dataset!r} has classes 0..{info.num_classes - 1}")
            names = {f"net.{i}.{attr}": keys[i][attr] for i in keys for attr in keys[i]}
            sd = {keys[i][attr]: layers[i][attr] for i in layers for attr in layers[i]}
            if set(names) != set(self.layout.names):
                raise ZooError(f"{f.path}: {len(layers)} layers; the INRs of this set have "
                               f"{len(self.layout.modules())} ({self.explicit.architecture['hidden']} hidden)")
            state = map_state_dict(f.path, sd, self.spec, names)
            for t in self.layout.tensors:
                row[t.offset:t.stop] = state[t.name].reshape(-1)
            labels.append(label)
        records: list[dict[str, Any]] = [{"label": label, "step": self.steps} for label in labels]
        if self._images is not None:
            for rec, fit in zip(records, self._evaluate(sources, rows, labels)):
                rec.update(fit)
        self._done.update(zip(sources, records))
        return rows

    def _evaluate(self, sources: Sequence[int], rows: np.ndarray, labels: Sequence[int]) -> list[dict[str, Any]]:
        """The fit of each INR on its image, as a build records it; a file's class must be its image's."""
        import torch

        from builders.inr_population import InrPopulation

        assert self._images is not None
        specs = [self.explicit.models[s] for s in sources]
        picked = []
        for s in sources:
            images, classes, position = self._images[self.files[s].split]
            at = position[self.files[s].index]
            picked.append((images[at], classes[at]))
        x = torch.stack([image for image, _ in picked])
        y = torch.stack([true for _, true in picked])
        for s, label, true in zip(sources, labels, y.tolist()):
            if label != true:
                f = self.files[s]
                raise ZooError(f"{f.path}: class {label}, but image {f.index} of the {f.split} split of "
                               f"{self.dataset!r} is a {true} (is the file's index the image's?)")
        population = InrPopulation(specs, self.layout, x, y)
        with torch.no_grad():
            for name, value in self.layout.unflatten(torch.from_numpy(rows)).items():
                population.params[name].copy_(value)
        fits = population.checkpoint_records()
        return [{k: fit[k] for k in ("mse", "psnr", "psnr_2x")} for fit in fits]

    def rows(self, sources: Sequence[int], epoch: int) -> np.ndarray:
        """The INRs' weights in the siren layout (``net.{i}.weight``, ``net.{i}.bias``)."""
        return self._read_unit(sources)

    def rows_job(self, sources: Sequence[int], epoch: int) -> Callable[[], np.ndarray]:
        """Reads the unit now (its records come from the same reads), returns the rows when called."""
        rows = self._read_unit(sources)
        return lambda: rows

    def record(self, source: int, epoch: int) -> Mapping[str, Any]:
        """``label``, ``step`` and, with ``evaluate``, ``mse``, ``psnr``, ``psnr_2x`` (else null)."""
        if source not in self._done:
            self._read_unit([source])
        return self._done.pop(source)

    def model_names(self) -> list[str]:
        """Each INR's file, relative to ``src``."""
        return [str(f.path.relative_to(self.src)) for f in self.files]

    def imported_from(self) -> dict[str, Any]:
        """The common record, with the convention and the augmented copies left out."""
        return {**super().imported_from(), "convention": self.convention.name,
                "augmented_left_out": self.augmented}

    def write(self, store: str | Path, *, group_size: int | None = None, quiet: bool = True,
              workers: int | Workers | None = None) -> ImportReport:
        """``ImportSource.write`` with ``GROUP_SIZE`` models per unit by default (INRs are small)."""
        return super().write(store, group_size=group_size or GROUP_SIZE, quiet=quiet, workers=workers)


def import_inr(src: str | Path, store: str | Path, *, convention: str, dataset: str | None = None,
               name: str | None = None, steps: int | None = None, evaluate: bool = False,
               data_root: str | None = None, group_size: int | None = None, quiet: bool = True) -> ImportReport:
    """Import a folder of published INR files (``convention``: ``dwsnets`` or ``nfn``) into a new inr store.

    Args:
        src: the folder (or any folder above the INR files; see the module's docstring for the layouts).
        store: the store to create (a path or fsspec URL); rerunning the same import resumes it.
        convention: ``dwsnets`` or ``nfn`` (``CONVENTIONS``): the layout, key names and siren options.
        dataset: the image dataset (default: read from the folder names).
        name: the zoo's name (default ``<dataset>-inr-<convention>``).
        steps: the optimizer steps of every fit, when known (the checkpoint's epoch and ``step``).
        evaluate: compute ``mse``, ``psnr`` and ``psnr_2x`` against the dataset's images under ``data_root``
            (never downloaded), and check each file's class against its image's label.
        data_root: where the dataset's files are (default: the manifest default, ``~/.cache/weightzoo/data``).
        group_size: models per unit (default ``GROUP_SIZE``).
    """
    source = InrSource(src, convention=convention, dataset=dataset, name=name, steps=steps, evaluate=evaluate,
                       data_root=data_root)
    return source.write(store, group_size=group_size, quiet=quiet)
