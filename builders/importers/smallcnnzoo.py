"""The Small CNN Zoo (Unterthiner et al. 2020): ``weights.npy`` + ``metrics.csv.gz`` + ``layout.csv`` -> a store.

The published layout (google-research/dnn_predict_accuracy, README and train_network.py)::

    DIR/weights.npy       float32 (checkpoints, 4970): one flattened checkpoint per row
    DIR/metrics.csv.gz    one row per checkpoint, in the same order: "modeldir" (the run), "step" (the
                          checkpoint's epoch: 0, 1, 2, 3, 20, 40, 60, 80, 86), "test_accuracy", "test_loss",
                          "train_accuracy", "train_loss", and the run's flags "config.activation",
                          "config.dropout", "config.learning_rate", "config.optimizer", "config.l2reg",
                          "config.w_init", "config.init_std", "config.train_fraction", "config.dataset",
                          "config.epochs", "config.random_seed", "config.dnn_architecture", "config.num_layers",
                          "config.num_units", "config.b_init", ...
    DIR/layout.csv        "varname", "start_idx", "end_idx", "shape": where each Keras variable lies in a row

The networks are Keras models: 3 conv layers of 16 channels (3x3, stride 2, valid padding) with the
activation and dropout after each, global average pooling, a dense layer. Keras stores a conv kernel as
(kh, kw, in, out) and a dense kernel as (in, out), and each layer's bias comes before its kernel in a row;
the registered ``smallcnn`` holds the same function in PyTorch's layout. One precomputed gather index maps a
source row to the registered layout, so a unit's rows convert in one numpy indexing step.

A few runs crashed (the published MNIST matrix has 269,973 of 270,000 rows); they lack late checkpoints and
are left out with ``skip_incomplete``. ``config.l2reg`` is recorded as ``weight_decay`` (as in
``manifests/smallcnnzoo/``), ``config.w_init`` as the matching ``init`` name.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from zoo.errors import ZooError, allowed_text
from zoo.layout import Layout
from zoo.manifest import Manifest

from . import safepaths
from .protocol import ImportReport, ImportSource, is_number, metrics_record, population_manifest, read_base_manifest

FILES = ("weights.npy", "metrics.csv.gz", "layout.csv")
#: TensorFlow Datasets names -> this library's dataset registry.
DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar10", "svhn_cropped": "svhn"}
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
OPTIMIZERS = {"adam": "adam", "sgd": "sgd", "rmsprop": "rmsprop"}
#: Keras initializer identifiers (lowercase, without '_') -> the manifest's init names.
INITS = {"randomnormal": "normal", "normal": "normal", "truncatednormal": "truncated_normal",
         "orthogonal": "orthogonal", "glorotnormal": "xavier_normal", "glorotuniform": "xavier_uniform",
         "henormal": "kaiming_normal", "heuniform": "kaiming_uniform", "randomuniform": "uniform",
         "uniform": "uniform"}
METRIC_COLUMNS = {"train_loss": "train_loss", "train_accuracy": "train_acc", "test_loss": "test_loss",
                  "test_accuracy": "test_acc"}
CONFIG_COLUMNS = ("config.activation", "config.dropout", "config.learning_rate", "config.optimizer", "config.l2reg",
                  "config.w_init", "config.init_std", "config.train_fraction", "config.dataset", "config.epochs")
#: Flags that must describe the registered architecture when present.
ARCHITECTURE_FLAGS = {"config.dnn_architecture": "cnn", "config.num_layers": 3, "config.num_units": 16}
DEFAULT_SEED = 42  # train_network.py's --random_seed default; the published runs all used it
LICENSE = "CC-BY-4.0"
CITATION = ("Unterthiner, T., Keysers, D., Gelly, S., Bousquet, O., Tolstikhin, I. Predicting Neural Network "
            "Accuracy from Weights. arXiv:2002.11448, 2020.")
#: What the published runs share and the metrics do not record (train_network.py, manifests/smallcnnzoo/).
DATASET_DEFAULTS = {"grayscale": True, "normalize": True, "mean": [0.5], "std": [0.5]}
TRAINING_DEFAULTS = {"batch_size": 512, "schedule": "constant", "momentum": 0.0, "augmentation": "none"}


def _integral(v: Any) -> Any:
    """An integer read as a float (a CSV column with a null elsewhere) back to int; anything else unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _float(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


#: A layout.csv shape: a tuple (or list) of up to 8 integers, as Keras writes it, e.g. ``(3, 3, 1, 16)``.
_SHAPE = re.compile(r"\s*[(\[]\s*((?:\d{1,12}\s*,\s*){0,7}\d{1,12})?\s*,?\s*[)\]]\s*")
#: The longest field of layout.csv read (Keras variable names and shapes are short).
MAX_FIELD = 1024


def _short(value: Any) -> str:
    """A field as error messages show it: its repr, cut to 60 characters and its length said."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}... ({len(str(value))} characters)"


def _read_csv_rows(file: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a small CSV file read as a regular file (no link, no FIFO); a field longer than
    ``MAX_FIELD`` characters, or a file that is not CSV, is a ``ZooError`` naming the line."""
    text = safepaths.read_text(file)
    for n, line in enumerate(text.splitlines(), start=1):  # before csv, whose own limit is a field of 128 KB
        if len(line) > 4 * MAX_FIELD:
            raise ZooError(f"{file}: line {n}: {_short(line)}: longer than {4 * MAX_FIELD} characters (a layout.csv "
                           "line names a variable, two indices and a shape)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = list(reader.fieldnames or [])
        for row in reader:
            rows.append(row)
    except csv.Error as e:
        raise ZooError(f"{file}: line {reader.line_num}: not readable CSV ({e})") from None
    for n, row in enumerate(rows, start=2):
        for key, value in row.items():
            if key is None or value is None:
                raise ZooError(f"{file}: line {n}: {len(row) - (key is None)} columns; the header has {len(header)}")
            if len(value) > MAX_FIELD:
                raise ZooError(f"{file}: line {n}: field {key!r} = {_short(value)}: longer than {MAX_FIELD} "
                               "characters")
    return header, rows


def _shape(text: str) -> tuple[int, ...] | None:
    """A Keras shape (``(3, 3, 1, 16)``) as a tuple, or None when ``text`` is not one."""
    m = _SHAPE.fullmatch(text)
    if m is None:
        return None
    return tuple(int(v) for v in re.findall(r"\d+", m[1] or ""))


def read_layout(file: Path, layout: Layout, width: int) -> np.ndarray:
    """Gather index: registered row position -> source row position, from Keras variable placements."""
    if not file.is_file() and not safepaths.is_link_or_special(file):
        raise ZooError(f"{file}: missing (layout.csv places each Keras variable in a row of weights.npy)")
    try:
        fieldnames, rows = _read_csv_rows(file)
    except UnicodeDecodeError as err:
        raise ZooError(f"{file}: not UTF-8 text ({err})") from None
    missing = [c for c in ("varname", "start_idx", "end_idx", "shape") if c not in fieldnames]
    if missing:
        raise ZooError(f"{file}: column {missing[0]!r} is missing; layout.csv has varname, start_idx, end_idx, "
                       f"shape (got {', '.join(fieldnames) or 'no header'})")
    entries = []
    for n, row in enumerate(rows, start=2):
        shape = _shape(row["shape"])
        try:
            start, end = int(row["start_idx"]), int(row["end_idx"])
            if shape is None:
                raise ValueError(row["shape"])
        except ValueError:
            raise ZooError(f"{file}: line {n}: start_idx {_short(row['start_idx'])}, end_idx "
                           f"{_short(row['end_idx'])}, shape {_short(row['shape'])}: expected two integers and a "
                           "tuple of up to 8 integers") from None
        if not all(isinstance(s, int) and s > 0 for s in shape) or end - start != math.prod(shape):
            raise ZooError(f"{file}: line {n}: {row['varname']}: range [{start}, {end}) does not hold shape "
                           f"{shape}")
        leaf = row["varname"].rpartition("/")[2]
        kind = "kernel" if leaf.startswith("kernel") else "bias" if leaf.startswith("bias") else None
        if kind is None:
            raise ZooError(f"{file}: line {n}: varname {row['varname']!r}: expected a '.../kernel:0' or "
                           "'.../bias:0' variable")
        entries.append((start, end, shape, kind, row["varname"].rpartition("/")[0], n))
    entries.sort()
    position = 0
    for start, end, _, _, _, n in entries:
        if start != position:
            raise ZooError(f"{file}: line {n}: starts at {start}; the previous variable ends at {position} "
                           "(variables must tile the row without gaps or overlaps)")
        position = end
    if position != width:
        raise ZooError(f"{file}: the variables cover {position} values; weights.npy rows have {width}")
    layers: dict[str, dict[str, tuple]] = {}
    for e in entries:
        parts = layers.setdefault(e[4], {})
        if e[3] in parts:
            raise ZooError(f"{file}: line {e[5]}: a second {e[3]} for layer {e[4]!r}")
        parts[e[3]] = e
    ours = [name for name, _ in layout.modules()]
    if len(layers) != len(ours) or any(set(p) != {"kernel", "bias"} for p in layers.values()):
        raise ZooError(f"{file}: {len(layers)} layers ({', '.join(layers)}); smallcnn has {len(ours)} layers with "
                       f"a kernel and a bias each ({', '.join(ours)})")
    index = np.empty(layout.size, dtype=np.int64)
    for (layer, parts), prefix in zip(layers.items(), ours):  # layers in row order = the network's order
        for kind, attr in (("kernel", "weight"), ("bias", "bias")):
            start, end, shape, _, _, n = parts[kind]
            target = layout[f"{prefix}.{attr}"]
            perm = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}.get(len(shape))  # Keras -> PyTorch axis order
            source = None if perm is None else np.arange(start, end).reshape(shape).transpose(perm)
            if source is None or source.shape != target.shape:
                raise ZooError(f"{file}: line {n}: {layer}/{kind} of shape {shape} does not fit {target.name} "
                               f"{target.shape} of smallcnn")
            index[target.offset:target.stop] = source.reshape(-1)
    return index


class SmallCNNZooSource(ImportSource):
    """A Small CNN Zoo directory, read and validated completely before anything is written."""

    format = "smallcnnzoo"
    LICENSE, CITATION = LICENSE, CITATION

    def __init__(self, src: str | Path, *, manifest: str | Path | Manifest | None = None, name: str | None = None,
                 skip_incomplete: bool = False) -> None:
        self.src = Path(src)
        if not self.src.is_dir():
            raise ZooError(f"{self.src}: not a directory (expected the Small CNN Zoo files {', '.join(FILES)})")
        for f in FILES:
            if safepaths.is_link_or_special(self.src / f):  # a link could point anywhere; a FIFO would block
                safepaths.check_regular(self.src / f)
            if not (self.src / f).is_file():
                raise ZooError(f"{self.src / f}: missing; a Small CNN Zoo directory holds {', '.join(FILES)}")
        self.skip_incomplete = skip_incomplete
        self.base = read_base_manifest(manifest)
        columns, n_rows = self._read_metrics()
        self.weights = self._read_weights(n_rows)
        self._group_models(columns)
        self.choose(population_manifest(self._sections(name), [m["config"] for m in self.models], self.epochs,
                                        source=f"zoo import smallcnnzoo {self.src}"))
        arch = next(iter(self.explicit.architectures.values()))
        if arch.name != "smallcnn":
            raise ZooError(f"{self.base.source if self.base else self.src}: declares architecture {arch.name!r}; "
                           "the Small CNN Zoo holds smallcnn models")
        self.layout = arch.layout
        self.index = read_layout(self.src / "layout.csv", self.layout, self.weights.shape[1])

    # --- reading -------------------------------------------------------------------------------------------
    def _read_metrics(self) -> tuple[dict[str, list], int]:
        file = self.src / "metrics.csv.gz"
        try:
            table = pacsv.read_csv(file)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unreadable CSV
            raise ZooError(f"{file}: not a readable gzip-compressed CSV ({type(e).__name__}: {e})") from None
        required = ("modeldir", "step", *METRIC_COLUMNS, *CONFIG_COLUMNS)
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise ZooError(f"{file}: column {missing[0]!r} is missing; required: {', '.join(required)}")
        for column in METRIC_COLUMNS:
            kind = table.schema.field(column).type
            if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)):
                values = table.column(column).to_pylist()
                bad = next((i for i, v in enumerate(values) if v is not None and not is_number(_float(v))), 0)
                raise ZooError(f"{file}: row {bad + 1}: field {column!r}: expected a number, got {values[bad]!r} "
                               f"(column type {kind})")
        optional = ("config.random_seed", *ARCHITECTURE_FLAGS)
        names = [*required, *(c for c in optional if c in table.column_names)]
        self.metrics_file = file
        return {c: table.column(c).to_pylist() for c in names}, table.num_rows

    def _read_weights(self, n_rows: int) -> np.ndarray:
        file = self.src / "weights.npy"
        try:
            weights = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad .npy header
            raise ZooError(f"{file}: not a readable .npy array ({type(e).__name__}: {e})") from None
        if weights.ndim != 2 or weights.dtype.kind != "f":
            raise ZooError(f"{file}: array of shape {weights.shape} and dtype {weights.dtype}; expected a 2-D float "
                           "array (checkpoints, parameters)")
        if weights.shape[0] != n_rows:
            raise ZooError(f"{file}: {weights.shape[0]} rows, but {self.metrics_file.name} describes {n_rows} "
                           "checkpoints (one row each, in the same order)")
        return weights

    def _group_models(self, columns: dict[str, list]) -> None:
        """Rows -> runs (by modeldir, in order of first appearance), each with its config and epoch -> row."""
        file = self.metrics_file
        flags = [c for c in columns if c.startswith("config.")]
        runs: dict[str, dict[str, Any]] = {}
        for i, (run, step) in enumerate(zip(columns["modeldir"], columns["step"])):
            line = f"{file}: row {i + 1}"
            if not isinstance(run, str) or not run:
                raise ZooError(f"{line}: field 'modeldir': expected the run's directory, got {run!r}")
            if not is_number(step) or step != int(step) or step < 0:
                raise ZooError(f"{line}: field 'step': expected the checkpoint epoch, an integer >= 0, got {step!r}")
            entry = runs.get(run)
            if entry is None:
                runs[run] = {"rows": {int(step): i}, "first": i}
                continue
            if int(step) in entry["rows"]:
                raise ZooError(f"{line}: a second row for run {run!r} at step {int(step)}")
            entry["rows"][int(step)] = i
            first = entry["first"]
            for c in flags:
                a, b = columns[c][first], columns[c][i]
                if a != b and not (is_number(a) and is_number(b) and math.isnan(a) and math.isnan(b)):
                    raise ZooError(f"{line}: field {c!r} = {b!r}, but run {run!r} has {a!r} in row {first + 1}")
        self.columns = columns
        epochs = sorted(set().union(*(r["rows"] for r in runs.values())))
        incomplete = [name for name, r in runs.items() if sorted(r["rows"]) != epochs]
        if incomplete and not self.skip_incomplete:
            r = runs[incomplete[0]]
            missing = sorted(set(epochs) - set(r["rows"]))
            raise ZooError(f"{file}: run {incomplete[0]!r} has no checkpoint at step(s) {', '.join(map(str, missing))} "
                           f"of the zoo's {', '.join(map(str, epochs))} ({len(incomplete)} run(s) incomplete); pass "
                           "--skip-incomplete to leave them out")
        self.skipped = incomplete
        self.skipped_reasons = {name: "no checkpoint at step(s) "
                                + ", ".join(map(str, sorted(set(epochs) - set(runs[name]["rows"]))))
                                for name in incomplete}
        skip = set(incomplete)
        self.models = [{"name": name, "rows": r["rows"], "config": self._config(name, r["first"])}
                       for name, r in runs.items() if name not in skip]
        if not self.models:
            raise ZooError(f"{file}: every run is incomplete")
        self.epochs = epochs
        for c in ("config.dataset", "config.epochs"):
            values = {columns[c][m["rows"][epochs[0]]] for m in self.models}
            if len(values) > 1:
                raise ZooError(f"{file}: field {c!r} takes several values {sorted(values, key=str)}; one zoo has one")
        self.dataset = self._dataset(columns["config.dataset"][self.models[0]["rows"][epochs[0]]])
        self.n_epochs = _integral(columns["config.epochs"][self.models[0]["rows"][epochs[0]]])
        if not isinstance(self.n_epochs, int) or self.n_epochs < max(epochs):
            raise ZooError(f"{file}: field 'config.epochs' = {self.n_epochs!r}; expected an integer >= the last "
                           f"step ({max(epochs)})")

    def _dataset(self, value: Any) -> str:
        if value not in DATASETS:
            raise ZooError(f"{self.metrics_file}: field 'config.dataset': {allowed_text(value, DATASETS)}")
        return DATASETS[value]

    def _config(self, run: str, i: int) -> dict[str, Any]:
        """One run's hyperparameters in the manifest's terms."""
        c = self.columns
        where = f"{self.metrics_file}: row {i + 1} (run {run!r})"

        def number(col: str, low: float, high: float | None = None, *, strict_low: bool = False,
                   strict_high: bool = False, nullable: bool = False) -> float | None:
            value = c[col][i]
            if nullable and (value is None or (is_number(value) and math.isnan(value))):
                return None
            bad = (not is_number(value) or not math.isfinite(value) or value < low or (strict_low and value == low)
                   or (high is not None and (value > high or (strict_high and value == high))))
            if bad:
                interval = f"{'(' if strict_low else '['}{low}, {high if high is not None else 'inf'}" \
                           f"{')' if strict_high or high is None else ']'}"
                raise ZooError(f"{where}: field {col!r}: expected a number in {interval}, got {value!r}")
            return float(value)

        def choose(col: str, table: Mapping[str, str], key=lambda v: v) -> str:
            value = c[col][i]
            if not isinstance(value, str) or key(value) not in table:
                raise ZooError(f"{where}: field {col!r}: {allowed_text(value, table)}")
            return table[key(value)]

        for col, expected in ARCHITECTURE_FLAGS.items():
            if col in c and c[col][i] != expected:
                raise ZooError(f"{where}: field {col!r} = {c[col][i]!r}; the registered smallcnn is "
                               f"{', '.join(f'{k} = {v!r}' for k, v in ARCHITECTURE_FLAGS.items())}")
        seed = _integral(c["config.random_seed"][i]) if "config.random_seed" in c else DEFAULT_SEED
        if not isinstance(seed, int) or seed < 0:
            raise ZooError(f"{where}: field 'config.random_seed': expected an integer >= 0, got {seed!r}")
        config = {
            "seed": seed,
            "architecture.name": "smallcnn",
            "architecture.activation": choose("config.activation", ACTIVATIONS, str.lower),
            "architecture.dropout": number("config.dropout", 0.0, 1.0, strict_high=True),
            "training.optimizer": choose("config.optimizer", OPTIMIZERS, str.lower),
            "training.lr": number("config.learning_rate", 0.0, strict_low=True),
            "training.weight_decay": number("config.l2reg", 0.0),
            "training.init": choose("config.w_init", INITS, lambda v: v.lower().replace("_", "")),
            "training.train_fraction": number("config.train_fraction", 0.0, 1.0, strict_low=True),
        }
        init_std = number("config.init_std", 0.0, strict_low=True, nullable=True)
        if init_std is not None:
            config["training.init_std"] = init_std
        return config

    # --- the store's description -------------------------------------------------------------------------
    def _sections(self, name: str | None) -> dict[str, dict[str, Any]]:
        if self.base is not None and self.base.dataset["name"] != self.dataset:
            raise ZooError(f"{self.base.source}: declares dataset {self.base.dataset['name']!r}, but "
                           f"{self.metrics_file} holds runs on {self.dataset!r}")
        if any("training.init_std" not in m["config"] for m in self.models):
            for m in self.models:  # an init without a std: keep the column, null where the source has none
                m["config"].setdefault("training.init_std", None)
        return self.sections(name=name, default_name=f"smallcnnzoo-{self.dataset}",
                             description=f"{len(self.models)} Small CNN Zoo models imported from",
                             dataset={"name": self.dataset, **DATASET_DEFAULTS}, architecture={"name": "smallcnn"},
                             training=TRAINING_DEFAULTS, epochs=self.n_epochs)

    # --- what the writer asks for ------------------------------------------------------------------------
    def rows(self, sources: Sequence[int], epoch: int) -> np.ndarray:
        """Rows of ``weights.npy`` (memory-mapped), columns reordered from Keras placement to the layout."""
        rows = [self.models[s]["rows"][epoch] for s in sources]
        return np.asarray(self.weights[rows], dtype=np.float32)[:, self.index]

    def record(self, source: int, epoch: int) -> dict[str, Any]:
        """From the checkpoint's row of ``metrics.csv.gz`` (the same row index as in ``weights.npy``)."""
        i = self.models[source]["rows"][epoch]
        return metrics_record(**{key: self.columns[column][i] for column, key in METRIC_COLUMNS.items()})

    def model_names(self) -> list[str]:
        """Each run's ``modeldir`` in ``metrics.csv.gz``."""
        return [m["name"] for m in self.models]


def import_smallcnnzoo(src: str | Path, store: str | Path, *, manifest: str | Path | Manifest | None = None,
                       name: str | None = None, group_size: int | None = None, skip_incomplete: bool = False,
                       quiet: bool = True) -> ImportReport:
    """Import a Small CNN Zoo directory (weights.npy, metrics.csv.gz, layout.csv) into a new store.

    Args:
        src: the directory of one dataset's collection.
        store: the store to create (a path or fsspec URL).
        manifest: the zoo's published manifest (``manifests/smallcnnzoo/NAME.toml``) for the dataset
            preprocessing and recipe fields the metrics do not record; by default the published facts.
        name: the zoo's name (default: the manifest's, else ``smallcnnzoo-DATASET``).
        skip_incomplete: leave out runs lacking some of the zoo's checkpoint epochs (else an error).
    """
    source = SmallCNNZooSource(src, manifest=manifest, name=name, skip_incomplete=skip_incomplete)
    return source.write(store, group_size=group_size, quiet=quiet)
