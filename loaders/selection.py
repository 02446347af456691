"""Which checkpoints a dataset holds, chosen from a store's metadata table alone.

``select`` is the part of ``ZooDataset``/``ZooStream`` that reads nothing but metadata (and, when one is named,
a split file): the architecture's rows, the epochs, the ``where`` filter, the split by model, each row's
activation and the targets. It opens no weights, so it is tested on a hand-made ``pyarrow`` table, and every
process (DDP rank, DataLoader worker) derives the same selection from the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from zoo.errors import ZooError, allowed_text

from .splits import load_split, split_models


@dataclass(frozen=True)
class Selection:
    """The chosen checkpoints, in metadata order, and what the dataset derives from their metadata.

    ``indices`` are positions in the metadata table; ``rows`` their rows in the architecture's weight array.
    ``parts`` is the whole split (name -> model ids), ``split_key`` what identifies it for cached statistics,
    and ``train_rows`` the store rows of the train part of the selection before ``split`` was applied: the
    rows normalization statistics come from, whatever split this dataset serves (None without a train part).
    """

    arch: str
    indices: np.ndarray
    rows: np.ndarray
    model_ids: np.ndarray
    activation_names: list[str]
    activation_codes: np.ndarray
    targets: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    parts: dict[str, set[int]]
    split_key: Any
    train_rows: np.ndarray | None

    def __len__(self) -> int:
        return len(self.indices)


def choose_arch(arch: str | None, arch_ids: Sequence[str], url: str) -> str:
    """``arch``, checked against the store's architectures; the only one when ``arch`` is None."""
    if arch is None:
        if len(arch_ids) > 1:
            raise ZooError(f"{url} holds several architectures; choose one with arch= ({', '.join(arch_ids)})")
        return arch_ids[0]
    if arch not in arch_ids:
        raise ZooError(f"arch: {allowed_text(arch, arch_ids)}")
    return arch


def select(metadata: pa.Table, arch: str, *, activation: str | None, epochs: Sequence[int] | None = None,
           where: Mapping[str, Any] | None = None, split: str = "all",
           split_fractions: Mapping[str, float] | None = None, split_file: str | Path | None = None,
           published: Mapping[str, Sequence[int]] | None = None, seed: int = 0,
           targets: Sequence[str] = ("test_acc",)) -> Selection:
    """The checkpoints of ``arch`` at ``epochs`` (default all) whose metadata matches ``where``, in split
    ``split`` (``"all"``: every split).

    The split is by model, so every checkpoint of a model lands in one split: ``split_file``'s if given, else
    ``published`` (the split a Hugging Face export recorded) unless ``split_fractions`` is given, else
    ``split_models`` of the selected models by ``split_fractions`` and ``seed``. ``activation`` is the
    architecture's declared activation, for rows without an ``activation`` value of their own. String
    targets become class ids (their names in ``classes``), others float32 with None as NaN."""
    model_ids = np.asarray(metadata.column("model_id").to_pylist(), dtype=np.int64)
    keep = np.array([a == arch for a in metadata.column("arch").to_pylist()], dtype=bool)
    if epochs is not None:
        have = np.asarray(metadata.column("epoch").to_pylist(), dtype=np.int64)
        stored = sorted(set(have[keep].tolist()))
        missing = [e for e in epochs if e not in stored]
        if missing:
            raise ZooError(f"epochs: no checkpoints at epoch {missing[0]}; the store has epochs {stored}")
        keep &= np.isin(have, list(epochs))
    for column, allowed in (where or {}).items():
        if column not in metadata.column_names:
            raise ZooError(f"where: unknown metadata column {allowed_text(column, metadata.column_names)}")
        values = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
        keep &= np.isin(np.array(metadata.column(column).to_pylist(), dtype=object), list(values))
    selected = keep.copy()  # before the split: normalization statistics use its train part
    split_key: Any
    if split_file is not None:
        parts = load_split(split_file, model_ids.tolist())
        split_key = {"file": str(split_file), "parts": {k: sorted(v) for k, v in parts.items()}}
    elif published and split_fractions is None:
        parts = {name: set(ids) for name, ids in published.items()}
        split_key = {"published": published}
    else:
        parts = split_models(model_ids[keep].tolist(), split_fractions, seed)
        split_key = {"fractions": split_fractions, "seed": seed}
    if split != "all":
        if split not in parts:
            raise ZooError(f"split: {allowed_text(split, [*parts, 'all'])}")
        keep &= np.isin(model_ids, list(parts[split]))
    indices = np.flatnonzero(keep)
    all_rows = np.asarray(metadata.column("row").to_pylist(), dtype=np.int64)
    train_rows = all_rows[selected & np.isin(model_ids, list(parts["train"]))] if "train" in parts else None
    names, codes = _activations(metadata, indices, activation)
    target_values, classes = _targets(metadata, indices, targets)
    return Selection(arch=arch, indices=indices, rows=all_rows[indices], model_ids=model_ids[indices],
                     activation_names=names, activation_codes=codes, targets=target_values, classes=classes,
                     parts=parts, split_key=split_key, train_rows=train_rows)


def _activations(metadata: pa.Table, indices: np.ndarray, fixed: str | None) -> tuple[list[str], np.ndarray]:
    """(names, each row's code): a row's ``activation`` column where the architecture has the option, else the
    declaration's; symmetry augmentation allows each symmetry per activation."""
    per_row = metadata.column("activation").to_pylist() if "activation" in metadata.column_names else None
    acts = np.array([fixed if per_row is None or per_row[i] is None else per_row[i] for i in indices], dtype=str)
    names, codes = np.unique(acts, return_inverse=True)
    return names.tolist(), codes.astype(np.int64)


def _targets(metadata: pa.Table, indices: np.ndarray, columns: Sequence[str]
             ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Each target column's values at ``indices``: class ids for strings (with the class names), else float32."""
    values: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    for column in columns:
        if column not in metadata.column_names:
            raise ZooError(f"targets: unknown metadata column {allowed_text(column, metadata.column_names)}")
        column_values = metadata.column(column).to_pylist()
        chosen = [column_values[i] for i in indices]
        if any(isinstance(v, str) for v in chosen):
            names, codes = np.unique(np.array(chosen, dtype=str), return_inverse=True)
            classes[column] = names.tolist()
            values[column] = codes.astype(np.int64)
        else:
            values[column] = np.array([float("nan") if v is None else v for v in chosen], dtype=np.float32)
    return values, classes
