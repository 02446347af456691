"""Model Zoos (Schürholt et al. 2022): a folder of Ray Tune trials -> a store.

The published layout (github.com/ModelZoos/ModelZooDataset, code/model_definitions)::

    DIR/<trial>/params.json     the trial's config: "model::type" (CNN = CNN-s, CNN3 = CNN-l, Resnet18),
                                "model::nlin", "model::dropout", "model::init_type", "model::channels_in",
                                "optim::optimizer", "optim::lr", "optim::wd", "optim::momentum",
                                "optim::scheduler", "training::batchsize", "training::epochs_train", "seed", ...
    DIR/<trial>/result.json     one JSON object per line and epoch: "training_iteration" (= the epoch; 0 is
                                the untrained model), "train_loss", "train_acc", "test_loss", "test_acc" and,
                                in later zoos, "val_loss", "val_acc"; the first zoos write -999 for the train
                                metrics of epoch 0 (not measured), imported as null
    DIR/<trial>/checkpoint_NNNNNN/checkpoints   the model's state dict (torch.save) at epoch NNNNNN

The CNNs keep their layers in one ``nn.ModuleList`` (``module_list``) with max-pool, activation and, when the
dropout rate is > 0 (always, in CNN-l), dropout modules in between, so ``module_list.N`` of the second
convolution is 3 or 4 depending on the trial. Tensors are therefore mapped by position among the modules
that hold parameters, and every shape is checked against the registered architecture. ResNet-18 is
torchvision's ResNet with the CIFAR stem, whose state dict names are the registered ``resnet18``'s.

Where the zoo sits: ``SRC`` is either the zoo folder itself (the folder of trial folders) or any folder above
it, such as the root of a ``wsl-modelzoo`` download, which nests each zoo as
``core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform/``; every ``tune_zoo_*`` folder below ``SRC`` (at any
depth) is a zoo. One store holds one zoo, so a ``SRC`` holding several is refused with their list.

Beside the trial folders, the zoo folder may hold ``config.json`` (the experiment's config, as the zoo
generators wrote it) and ``index_dict.json`` (the layer structure of the published vectorized weights, also
found in the folder above). Read from them: ``config.json`` ``"dataset::dump"`` (the path of the dataset file
the zoo was trained on, whose folder names the dataset, e.g. ``zoos/F_MNIST/...``) and ``index_dict.json``
``"layer"``, ``"kernel_no"``, ``"channels_in"`` and ``"kernel_size"`` (checked against the registered
architecture's layers, CNNs only). Nothing else in them is used.

The image dataset's preprocessing is not recorded: pass the zoo's published manifest
(``manifests/modelzoo/*.toml``), which also supplies recipe fields the trials leave out (augmentation), or
just the dataset name. Without either, the dataset is taken from (first found) ``config.json``'s
``"dataset::dump"``, the zoo folder's name (``tune_zoo_<dataset>_...``) or the name of the folder above it
(``wsl-modelzoo``'s ``<arch>_<dataset>``); the spellings the published zoos use (``fmnist``, ``F_MNIST``,
``stl-10``, ``tinyimagenet``, ...) map to the registry's names through ``DATASET_SPELLINGS``. When the
published manifest expands to exactly the imported models, the store keeps it unchanged (the same zoo as a
``zoo build`` of it would make); otherwise the store's manifest lists the imported models explicitly.

A failed download leaves checkpoint files missing, empty or cut short. Such a file is an error naming it;
with ``skip_incomplete`` (``--skip-incomplete``) the models holding one are left out instead, as are models
lacking some of the zoo's checkpoint epochs, each named with its reason in ``ImportReport.skipped_reasons``.
Which files those are is known before anything is written, without reading them twice: the scan of the trial
folders takes each file's size and its last bytes (a zip archive cut short lacks the end records that say where
its directory lies), then its directory and ``data.pkl`` (``torchfile.scan_check``: a pickle naming a global that
could run code, a memo index or storage its bytes do not back, a tensor outside its storage, a damaged zip64
field), a few hundred bytes; links and special files (a FIFO would block) are refused without being opened.
The files are then read once, unit by unit, in worker processes
(``statedicts.read_rows``; ``workers``), and everything else (a damaged record, a tensor of the wrong name,
shape or dtype) is checked there, before the unit is committed: an error naming the file, with or without
``skip_incomplete``. A legacy (pre-1.6, not zip) ``torch.save`` file has no such end: it is read whole during the
scan as well.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.datasets import DATASETS
from zoo.errors import ZooError, allowed_text
from zoo.manifest import SECTIONS, Manifest
from zoo.text import epochs_text

from . import safepaths, torchfile
from .protocol import (
    ImportReport,
    ImportSource,
    is_number,
    metrics_record,
    population_manifest,
    read_base_manifest,
    slug,
)
from .statedicts import MISSING, IncompleteCheckpoint, RowSpec, load_state_dict, map_state_dict, read_rows
from .workers import Workers, worker_count

__all__ = ["IncompleteCheckpoint", "ModelZooSource", "import_modelzoo", "load_state_dict", "map_state_dict"]

#: params.json "model::type" -> (registered architecture, input side the published zoos resized images to).
MODEL_TYPES: dict[str, tuple[str, int | None]] = {"CNN": ("cnn-s", 28), "CNN3": ("cnn-l", 32),
                                                  "Resnet18": ("resnet18", None)}
#: Model Zoos' names -> the manifest's (architecture activation, optimizer, init, schedule).
ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid", "gelu": "gelu", "leakyrelu": "leaky_relu"}
OPTIMIZERS = {"adam": "adam", "sgd": "sgd", "rms_prop": "rmsprop"}
INITS = {name: name for name in ("uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier_uniform",
                                 "xavier_normal")}
SCHEDULERS = {"OneCycleLR": "onecycle"}
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
#: What the first zoos report for metrics they did not measure (the train metrics of epoch 0).
NOT_MEASURED = -999
CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
CHECKPOINT_FILE = "checkpoints"
#: Folders named so below SRC are zoos (Ray Tune experiment folders of the zoo generators and wsl-modelzoo).
ZOO_PREFIX = "tune_zoo_"
#: Dataset spellings of the published zoos' folders and configs -> the dataset registry's names (the registry's
#: own names, in any case, are accepted as they are).
DATASET_SPELLINGS: dict[str, str] = {
    "fmnist": "fashion-mnist",  # wsl-modelzoo: core-modelzoo/cnn-small_fmnist
    "f_mnist": "fashion-mnist",  # zoo generators: zoos/F_MNIST/tune_zoo_f_mnist_uniform
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",  # torchvision's class name
    "stl-10": "stl10",  # zoo generators: tune_zoo_stl-10_small_uniform
    "stl_10": "stl10",
    "tinyimagenet": "tiny-imagenet",  # wsl-modelzoo
    "tiny_imagenet": "tiny-imagenet",
}
INCOMPLETE_HINT = ("pass --skip-incomplete to leave out the models with missing, empty or truncated checkpoint "
                   "files")
LICENSE = "CC-BY-4.0"
CITATION = ("Schürholt, K., Taskiran, D., Knyazev, B., Giró-i-Nieto, X., Borth, D. Model Zoos: A Dataset of "
            "Diverse Populations of Neural Network Models. NeurIPS 2022 Datasets and Benchmarks Track.")
_REQUIRED = object()


@dataclass
class Trial:
    """One trial folder, validated: its model's configuration, checkpoint files and per-epoch metrics."""

    path: Path
    arch: str
    config: dict[str, Any]  # 'section.field' -> value, and 'seed'
    epochs: int | None  # training::epochs_train
    channels_in: int | None
    checkpoints: dict[int, Path] = field(default_factory=dict)
    results: dict[int, dict[str, float]] = field(default_factory=dict)
    broken: dict[Path, str] = field(default_factory=dict)  # checkpoint file -> why it is unusable (a failed download)
    legacy: list[Path] = field(default_factory=list)  # not zip archives: read whole before writing to know
    refused: str | None = None  # why the folder is not read at all (a link, a link or FIFO for params.json, ...)


def _refused_trial(path: Path, why: str) -> Trial:
    """A trial folder that is not read (``Trial.refused``): left out with ``skip_incomplete``, else an error."""
    return Trial(path, "", {}, None, None, refused=why)


def _is_regular(file: Path) -> bool:
    """Whether ``file`` is a regular file; a link or special file there is ``safepaths.Refused`` (never opened)."""
    try:
        safepaths.check_regular(file)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _read_params(trial: Path, defaults: Mapping[str, Any]) -> Trial:
    file = trial / "params.json"
    if not _is_regular(file):
        raise ZooError(f"{file}: missing (every trial folder holds params.json, result.json and "
                       "checkpoint_NNNNNN/checkpoints)")
    try:
        params = json.loads(safepaths.read_text(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(params, dict):
        raise ZooError(f"{file}: expected a JSON object of config keys, got {type(params).__name__}")

    def get(key: str, kind: str, default: Any = _REQUIRED) -> Any:
        value = params.get(key)
        if value is None:
            if default is _REQUIRED:
                raise ZooError(f"{file}: field {key!r} is missing")
            return default
        ok = {"int": isinstance(value, int) and not isinstance(value, bool), "number": is_number(value),
              "str": isinstance(value, str)}[kind]
        if not ok or (kind == "number" and not math.isfinite(value)):
            raise ZooError(f"{file}: field {key!r}: expected {'an integer' if kind == 'int' else 'a ' + kind}, "
                           f"got {value!r}")
        return value

    def choose(key: str, table: Mapping[str, Any], default: Any = _REQUIRED) -> Any:
        value = get(key, "str", None if default is not _REQUIRED else _REQUIRED)
        if value is None:
            return default
        if value not in table:
            raise ZooError(f"{file}: field {key!r}: {allowed_text(value, table)}")
        return table[value]

    def at_least(key: str, value: float, low: float, strict: bool = False) -> float:
        if value < low or (strict and value == low):
            raise ZooError(f"{file}: field {key!r}: expected a value {'>' if strict else '>='} {low}, got {value!r}")
        return value

    arch, _ = choose("model::type", MODEL_TYPES)
    seed = int(at_least("seed", get("seed", "int"), 0))
    config: dict[str, Any] = {
        "architecture.name": arch,
        "seed": seed,
        "training.init": choose("model::init_type", INITS),
        "training.optimizer": choose("optim::optimizer", OPTIMIZERS),
        "training.lr": float(at_least("optim::lr", get("optim::lr", "number"), 0.0, strict=True)),
        "training.weight_decay": float(at_least("optim::wd", get("optim::wd", "number", 0.0), 0.0)),
        "training.momentum": float(at_least("optim::momentum", get("optim::momentum", "number", 0.0), 0.0)),
        "training.schedule": choose("optim::scheduler", SCHEDULERS, defaults["schedule"]),
        "training.batch_size": int(at_least("training::batchsize",
                                            get("training::batchsize", "int", defaults["batch_size"]), 1)),
    }
    if arch != "resnet18":  # the ResNet-18 class takes nlin and dropout but ignores them
        config["architecture.activation"] = choose("model::nlin", ACTIVATIONS)
        dropout = float(at_least("model::dropout", get("model::dropout", "number", 0.0), 0.0))
        if dropout >= 1:
            raise ZooError(f"{file}: field 'model::dropout': expected a probability < 1, got {dropout!r}")
        config["architecture.dropout"] = dropout
    epochs = get("training::epochs_train", "int", None)
    if epochs is not None:
        at_least("training::epochs_train", epochs, 1)
    return Trial(trial, arch, config, epochs, get("model::channels_in", "int", None))


def _scan_trial(folder: Path, defaults: Mapping[str, Any]) -> Trial:
    """One trial folder: params.json, result.json, and which checkpoint files it holds (and whether whole). A folder
    that is a link, or whose params.json or result.json is one (or a FIFO, ...), is not read (``Trial.refused``)."""
    try:
        safepaths.check_folder(folder)
        trial = _read_params(folder, defaults)
        _read_results(trial)
    except safepaths.Refused as e:
        return _refused_trial(folder, f"{e.path.relative_to(folder) if e.path != folder else '.'}: {e.why}")
    _find_checkpoints(trial)
    return trial


def _read_results(trial: Trial) -> None:
    file = trial.path / "result.json"
    if not _is_regular(file):
        raise ZooError(f"{file}: missing (one JSON line per epoch with train/val/test loss and accuracy)")
    try:
        text = safepaths.read_text(file)
    except UnicodeDecodeError as e:
        raise ZooError(f"{file}: not UTF-8 text ({e})") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ZooError(f"{file}: line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ZooError(f"{file}: line {n}: expected a JSON object, got {type(obj).__name__}")
        epoch = obj.get("training_iteration")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ZooError(f"{file}: line {n}: field 'training_iteration': expected the epoch, an integer >= 0, "
                           f"got {epoch!r}")
        rec: dict[str, float] = {}
        for key in METRICS:
            value = obj.get(key)
            if value is None or value == NOT_MEASURED:
                continue
            if not is_number(value):
                raise ZooError(f"{file}: line {n}: field {key!r}: expected a number or null, got {value!r}")
            rec[key] = float(value)
        if is_number(obj.get("time_total_s")):
            rec["wall_time_s"] = float(obj["time_total_s"])
        trial.results[epoch] = rec  # a restored trial repeats iterations: the last report wins


def _find_checkpoints(trial: Trial) -> None:
    """Each checkpoint file of the trial, and which are missing, empty, cut short or refused
    (``torchfile.scan_check``: a link, a FIFO, a hostile pickle, a tensor outside its storage, ...)."""
    with os.scandir(trial.path) as entries:  # a link to a folder is no folder here: it is refused, not followed
        found = [(e.name, CHECKPOINT_DIR.match(e.name), e.is_symlink()) for e in entries
                 if e.is_dir(follow_symlinks=False) or (e.is_symlink() and CHECKPOINT_DIR.match(e.name))]
    for name, m, link in sorted(found):
        if m is None:
            continue
        file = Path(os.path.join(trial.path, name, CHECKPOINT_FILE))  # one Path, not two: thousands of files
        epoch = int(m[1])
        if epoch in trial.checkpoints:
            raise ZooError(f"{file.parent}: a second checkpoint folder for epoch {epoch} "
                           f"(beside {trial.checkpoints[epoch].parent.name})")
        trial.checkpoints[epoch] = file
        try:
            if link:
                safepaths.check_folder(file.parent)
            _, why = torchfile.scan_check(file)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            why = MISSING
        except safepaths.Refused as e:
            why = e.why if e.path == file else f"{e.path.name}: {e.why}"
        if why == torchfile.NOT_ZIP:
            trial.legacy.append(file)
        elif why is not None:
            trial.broken[file] = why


class ModelZooSource(ImportSource):
    """A Model Zoos zoo (``src`` or the one ``tune_zoo_*`` folder below it): its trial folders scanned and
    validated before anything is written, its checkpoint files read once each, unit by unit (``rows_job``)."""

    format = "modelzoo"
    parallel = True  # rows_job's calls read files: worker processes run them
    LICENSE, CITATION = LICENSE, CITATION

    def __init__(self, src: str | Path, *, manifest: str | Path | Manifest | None = None, dataset: str | None = None,
                 name: str | None = None, skip_incomplete: bool = False, workers: Workers | None = None) -> None:
        self.root = Path(src)
        if not self.root.is_dir():
            raise ZooError(f"{self.root}: not a directory (expected a Model Zoos folder of trial folders, or a "
                           "folder above one, such as a wsl-modelzoo download)")
        self.src = find_zoo(self.root)
        self.base = read_base_manifest(manifest)
        training = dict(self.base.training) if self.base else {k: f.default for k, f in SECTIONS["training"].items()}
        training_defaults = {k: training[k] for k in ("schedule", "batch_size")}  # what trials may leave out
        # a link to a folder is not followed (it could point anywhere): its trial is refused, named
        linked = sorted(p for p in self.src.iterdir() if p.is_symlink() and p.is_dir())
        folders = sorted(p for p in self.src.iterdir() if not p.is_symlink() and p.is_dir() and _looks_like_trial(p))
        if not folders and not linked:
            raise ZooError(f"{self.src}: no trial folders (folders holding params.json, result.json and "
                           f"checkpoint_NNNNNN/checkpoints), and no {ZOO_PREFIX}* zoo folder below it")
        # each trial folder's files, read and checked; by the worker processes when there are many
        scanned = (workers or Workers(1)).map(functools.partial(_scan_trial, defaults=training_defaults), folders)
        scanned += [_refused_trial(p, '.: ' + safepaths.why_not_read(p, 'a folder')) for p in linked]
        self.skipped_reasons: dict[str, str] = {}
        for t in sorted(scanned, key=lambda t: t.path):
            if t.refused is not None:
                if not skip_incomplete:
                    raise ZooError(f"{t.path}: trial folder not read ({t.refused}); pass --skip-incomplete to leave "
                                   "it out")
                self.skipped_reasons[t.path.name] = t.refused
        trials = [t for t in scanned if t.refused is None]
        if not trials:
            raise ZooError(f"{self.src}: every trial folder is refused ({len(scanned)} of them)")
        archs = {t.arch for t in trials}
        if len(archs) > 1:
            first = {a: next(t.path.name for t in trials if t.arch == a) for a in sorted(archs)}
            raise ZooError(f"{self.src}: trial folders hold different model types ("
                           + ", ".join(f"{a} in {p}" for a, p in first.items()) + "); import one zoo at a time")
        self.arch = archs.pop()

        # every checkpoint epoch of the zoo, and the trials that lack some of them or hold broken files
        self.epochs = sorted(set().union(*(t.checkpoints for t in trials)))
        if not self.epochs:
            raise ZooError(f"{self.src}: no checkpoint_NNNNNN/checkpoints in any trial folder")
        for t in trials:
            missing = sorted(set(self.epochs) - set(t.checkpoints))
            if t.broken:
                file, why = min(t.broken.items())
                if not skip_incomplete:
                    raise ZooError(f"{file}: {why}; {INCOMPLETE_HINT}")
                self.skipped_reasons[t.path.name] = f"{file.relative_to(t.path)}: {why}"
            elif missing:
                why = f"no checkpoint for epoch(s) {epochs_text(missing)} of the zoo's {epochs_text(self.epochs)}"
                if not skip_incomplete:
                    n = sum(sorted(u.checkpoints) != self.epochs for u in trials)
                    raise ZooError(f"{t.path}: {why} ({n} trial folder(s) incomplete); pass --skip-incomplete to "
                                   "leave them out")
                self.skipped_reasons[t.path.name] = why
        self.trials = [t for t in trials if t.path.name not in self.skipped_reasons]
        self._dataset, self._name = self._choose_dataset(dataset), name
        self._describe()
        self._check_channels()
        self._check_index_dict()
        # legacy files have no end records to check: reading them finds those cut short (the manifest is
        # described again when their models are left out)
        truncated = self._check_legacy(skip_incomplete)
        if truncated:
            self.skipped_reasons.update(truncated)
            self.trials = [t for t in self.trials if t.path.name not in truncated]
            self._describe()
        self.skipped = sorted(name for name in {t.path.name for t in scanned} if name in self.skipped_reasons)
        self.skipped_reasons = {n: self.skipped_reasons[n] for n in self.skipped}

    # --- the store's description -------------------------------------------------------------------------
    def _choose_dataset(self, dataset: str | None) -> tuple[str, str] | None:
        """(dataset, where it was found) when no manifest is given: ``--dataset``, else the zoo's own record."""
        if dataset is not None:
            return dataset_name(dataset) or dataset, ""
        if self.base is not None:
            return None
        hints = dataset_hints(self.src)
        return hints[0] if hints else None

    def _describe(self) -> None:
        """The manifest of ``self.trials`` (again, after more were left out)."""
        if not self.trials:
            raise ZooError(f"{self.src}: every trial folder is incomplete")
        declared = {t.epochs for t in self.trials if t.epochs is not None}
        if len(declared) > 1:
            raise ZooError(f"{self.src}: trials train for different numbers of epochs "
                           f"('training::epochs_train' {sorted(declared)}); one zoo has one")
        n_epochs = declared.pop() if declared else max(self.epochs)
        if max(self.epochs) > n_epochs:
            raise ZooError(f"{self.src}: checkpoint for epoch {max(self.epochs)} beyond 'training::epochs_train' = "
                           f"{n_epochs}")
        self.choose(population_manifest(self._sections(n_epochs), [t.config for t in self.trials], self.epochs,
                                        source=f"zoo import modelzoo {self.src}"))

    def _sections(self, epochs: int) -> dict[str, dict[str, Any]]:
        dataset, found_in = self._dataset or (None, "")
        if self.base is not None:
            if dataset is not None and dataset != self.base.dataset["name"]:
                raise ZooError(f"--dataset {dataset!r} contradicts the manifest {self.base.source} "
                               f"(dataset {self.base.dataset['name']!r}); give one of them")
            if self.base.architecture["name"] != self.arch:
                raise ZooError(f"{self.base.source}: declares architecture {self.base.architecture['name']!r}, but "
                               f"the trial folders in {self.src} hold {self.arch!r} models")
            data: dict[str, Any] = {}  # the manifest's
        elif dataset is not None:
            info = DATASETS.get(dataset)
            data = {"name": info.name}
            size = MODEL_TYPES[next(k for k, (a, _) in MODEL_TYPES.items() if a == self.arch)][1]
            if size is not None and size != info.size:
                data["resize"] = size  # the published CNNs assume 28x28 (CNN-s) and 32x32 (CNN-l) inputs
        else:
            raise ZooError(f"{self.src}: neither the trial folders, config.json nor the folder names record the "
                           "image dataset; pass the zoo's published manifest (--manifest "
                           "manifests/modelzoo/NAME.toml) or --dataset NAME")
        note = f" (dataset {data['name']} from {found_in})" if found_in else ""
        return self.sections(name=self._name, default_name=slug(self.src.name), dataset=data,
                             description=f"{len(self.trials)} models imported from the Model Zoos trial folders "
                                         f"in", note=note, architecture={"name": self.arch}, training={},
                             epochs=epochs)

    def _check_channels(self) -> None:
        channels = self.explicit.architectures[self.explicit.models[0].arch_id].in_shape[0]
        for t in self.trials:
            if t.channels_in is not None and t.channels_in != channels:
                found_in = self._dataset[1] if self._dataset else ""
                raise ZooError(f"{t.path / 'params.json'}: field 'model::channels_in' = {t.channels_in}, but "
                               f"dataset {self.explicit.dataset['name']!r}"
                               + (f" (read from {found_in}; pass --dataset NAME)" if found_in else " as configured")
                               + f" gives {channels}-channel images")

    def _check_index_dict(self) -> None:
        """``index_dict.json`` (in the zoo folder or the one above), where present: its layers are the registered
        CNN's (number, output and input channels, kernel size)."""
        file = next((d / "index_dict.json" for d in (self.src, self.src.parent) if _is_regular(d / "index_dict.json")),
                    None)
        if file is None or self.arch == "resnet18":
            return
        index = _read_json(file)
        if not isinstance(index, dict) or not isinstance(index.get("layer"), list):
            return  # not the layout described in the module docstring: nothing to check against
        layout = self.explicit.architectures[self.explicit.models[0].arch_id].layout
        weights = [next(t for t in tensors if t.name.endswith(".weight")) for _, tensors in layout.modules()]
        if len(index["layer"]) != len(weights):
            raise ZooError(f"{file}: {len(index['layer'])} layers; the trial folders' {self.arch} has {len(weights)} "
                           f"({', '.join(w.name for w in weights)})")
        for key, of_shape in (("kernel_no", lambda s: s[0]), ("channels_in", lambda s: s[1]),
                              ("kernel_size", lambda s: math.prod(s[2:]))):
            values = index.get(key)
            if not isinstance(values, list) or len(values) != len(weights):
                continue
            for n, (value, w) in enumerate(zip(values, weights)):
                if value != of_shape(w.shape):
                    raise ZooError(f"{file}: field {key!r}: layer {n} has {value!r}; {self.arch}'s {w.name} has shape "
                                   f"{w.shape}: is this the index of another zoo?")

    def _check_legacy(self, skip_incomplete: bool) -> dict[str, str]:
        """Legacy (not zip) checkpoint files, read whole: readable, and every tensor present with the registered
        shape. Returns the trials holding one that cannot be read (cut short), with the reason, when
        ``skip_incomplete``."""
        unreadable: dict[str, str] = {}
        for i, t in enumerate(self.trials):
            spec = self._spec(i)
            for file in sorted(t.legacy):
                try:
                    state = load_state_dict(file)
                except IncompleteCheckpoint as e:
                    if not skip_incomplete:
                        raise ZooError(f"{e}; {INCOMPLETE_HINT}") from None
                    unreadable[t.path.name] = f"{file.relative_to(t.path)}: {e.why}"
                    break
                map_state_dict(file, state, spec)
        return unreadable

    # --- what the writer asks for ------------------------------------------------------------------------
    def _spec(self, source: int) -> RowSpec:
        arch = self.explicit.architectures[self.explicit.models[source].arch_id]
        return RowSpec(self.arch, arch.layout, tuple(arch.in_shape))

    def rows_job(self, sources: Sequence[int], epoch: int) -> Callable[[], np.ndarray]:
        """Reads each model's checkpoint file at ``epoch`` once (``statedicts.read_rows``), in whichever process
        runs the call (a picklable call: worker processes run it)."""
        if len({self.explicit.models[s].arch_id for s in sources}) != 1:
            raise ZooError(f"{self.src}: one unit holds models of several layouts")  # units group one layout
        files = [self.trials[s].checkpoints[epoch] for s in sources]
        return functools.partial(read_rows, self._spec(sources[0]), files)

    def rows(self, sources: Sequence[int], epoch: int) -> np.ndarray:
        """Reads each model's checkpoint file at ``epoch`` whole, mapped onto its architecture's layout."""
        return self.rows_job(sources, epoch)()

    def record(self, source: int, epoch: int) -> dict[str, Any]:
        """From the trial's ``result.json``: an epoch it never reported gives all metrics null."""
        return metrics_record(**self.trials[source].results.get(epoch, {}))

    def model_names(self) -> list[str]:
        """The trial folders' names."""
        return [t.path.name for t in self.trials]


def find_zoo(root: Path) -> Path:
    """The one zoo at or below ``root``: ``root`` itself when it holds trial folders, else the one ``tune_zoo_*``
    folder below it (at any depth); several are refused with their list (one store holds one zoo)."""
    if any(p.is_dir() and _looks_like_trial(p) for p in root.iterdir()):
        return root
    found = []
    for here, folders, _ in os.walk(root):
        below = []
        for folder in sorted(folders):
            if folder.startswith(ZOO_PREFIX):
                found.append(Path(here) / folder)  # a zoo: its trial folders are not searched
            elif not CHECKPOINT_DIR.match(folder):
                below.append(folder)
        folders[:] = below
    if len(found) > 1:
        listed = "".join(f"\n  {p.relative_to(root).as_posix()}" for p in sorted(found))
        raise ZooError(f"{root}: holds {len(found)} zoos ({ZOO_PREFIX}* folders), and one store holds one zoo; "
                       f"point SRC at one of them (e.g. {sorted(found)[0]}):{listed}")
    return found[0] if found else root


def dataset_name(spelling: str) -> str | None:
    """The registry's name of a dataset as the published zoos spell it (``DATASET_SPELLINGS``, any case), or None."""
    key = spelling.strip().lower()
    key = DATASET_SPELLINGS.get(key, key)
    return key if key in DATASETS.names() else None


def _dataset_in(name: str) -> str | None:
    """The dataset a folder name spells: ``tune_zoo_<dataset>_<rest>`` (the longest leading match), else the
    name itself or its longest ``_``-separated tail (``cnn-small_fmnist``, ``F_MNIST``)."""
    if name.lower().startswith(ZOO_PREFIX):
        parts = name[len(ZOO_PREFIX):].split("_")
        return next((d for k in range(len(parts), 0, -1) if (d := dataset_name("_".join(parts[:k])))), None)
    parts = name.split("_")
    return next((d for k in range(len(parts)) if (d := dataset_name("_".join(parts[k:])))), None)


def dataset_hints(zoo: Path) -> list[tuple[str, str]]:
    """(dataset, where it was read) from the zoo's own record, most reliable first: ``config.json``'s
    ``"dataset::dump"``, the zoo folder's name, the name of the folder above it."""
    hints = []
    config = zoo / "config.json"
    if _is_regular(config):
        data = _read_json(config)
        dump = data.get("dataset::dump") if isinstance(data, dict) else None
        if isinstance(dump, str):
            for part in reversed(re.split(r"[\\/]", dump)[:-1]):  # the folders holding the dataset file
                if found := _dataset_in(part):
                    hints.append((found, f"{config} 'dataset::dump' = {dump!r}"))
                    break
    for folder in (zoo, zoo.parent):
        if found := _dataset_in(folder.name):
            hints.append((found, f"the folder name {folder.name!r}"))
    return hints


def _read_json(file: Path) -> Any:
    try:
        return json.loads(safepaths.read_text(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{file}: not valid JSON ({e}); an interrupted download? Remove or fetch it again") from None


def _looks_like_trial(folder: Path) -> bool:
    return ((folder / "params.json").exists() or (folder / "result.json").exists()
            or any(CHECKPOINT_DIR.match(p.name) for p in folder.iterdir()))


def import_modelzoo(src: str | Path, store: str | Path, *, manifest: str | Path | Manifest | None = None,
                    dataset: str | None = None, name: str | None = None, group_size: int | None = None,
                    skip_incomplete: bool = False, quiet: bool = True, workers: int | None = None) -> ImportReport:
    """Import a Model Zoos zoo into a new store (or resume that import).

    Args:
        src: the zoo's folder of Ray Tune trial folders, or a folder above exactly one ``tune_zoo_*`` zoo folder
            (such as a ``wsl-modelzoo`` download root).
        store: the store to create (a path or fsspec URL).
        manifest: the zoo's published manifest (dataset preprocessing, license, citation, recipe fields the
            trials do not record); kept as the store's manifest when it describes exactly the imported models.
        dataset: the image dataset, when no manifest is given (registry names or the zoos' spellings,
            ``DATASET_SPELLINGS``); default: what the zoo's ``config.json`` or folder names say.
        name: the zoo's name (default: the manifest's, else the zoo folder's).
        skip_incomplete: leave out trials lacking some of the zoo's checkpoint epochs or holding a missing, empty
            or truncated checkpoint file, each named in ``ImportReport.skipped_reasons`` (else an error).
        workers: processes reading the checkpoint files (default: one per CPU; 0 or 1: this process alone).
    """
    with Workers(worker_count(workers)) as started:  # before anything runs a thread: see workers.py
        source = ModelZooSource(src, manifest=manifest, dataset=dataset, name=name, skip_incomplete=skip_incomplete,
                                workers=started)
        return source.write(store, group_size=group_size, quiet=quiet, workers=started)
