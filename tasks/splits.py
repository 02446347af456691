"""Frozen splits: a split by model, written as a weightzoo split file, and the identity of the store it splits.

A split file is JSON::

    {"format": "weightzoo-split", "version": 1, "task": "accuracy",
     "store": {"name": ..., "format_version": ..., "rows_sha256": ..., "rows": ...},
     "seed": 0, "fractions": {"train": 0.7, "val": 0.15, "test": 0.15},
     "splits": {"train": [model ids], "val": [...], "test": [...]}, "hash": "<sha256>"}

Every checkpoint of a model lands in the model's split (``zoo.splits.split_models``). ``hash`` is the sha256 of
the canonical JSON of ``splits`` (sorted ids, sorted keys, no spaces): two runs on one split share it, whatever
else the files say. The store's identity is its name, format version and the sha256 of its sorted
(model_id, epoch, crc32) rows, so a store rebuilt bit for bit keeps its identity and any changed weight changes
it.

A split file is untrusted input: ``load_split`` checks every field, and anything wrong is a ``ZooError`` naming
the field, never another exception.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooError
from zoo.splits import DEFAULT_FRACTIONS, split_models

from .jsonfile import read_json

if TYPE_CHECKING:
    from zoo.store import Zoo

SPLIT_FORMAT = "weightzoo-split"
SPLIT_VERSION = 1
#: The split names a split file may use; ``train`` and ``test`` are required.
SPLIT_NAMES = ("train", "val", "test")
#: Model ids are JSON integers in [0, 2**53): exact in every JSON reader.
MAX_MODEL_ID = 2**53 - 1
#: A split file larger than this is refused unread (a published zoo's split is well under a megabyte).
MAX_SPLIT_BYTES = 64 * 2**20


def store_identity(store: Zoo) -> dict[str, Any]:
    """{name, format_version, rows_sha256, rows}: the sha256 is of the sorted (model_id, epoch, crc32) rows as
    little-endian int64 triples."""
    m = store.metadata
    rows = np.stack([np.asarray(m.column(c).to_numpy(zero_copy_only=False), dtype="<i8")
                     for c in ("model_id", "epoch", "crc32")], axis=1) if m.num_rows else np.zeros((0, 3), "<i8")
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    return {"name": store.manifest.name, "format_version": int(store.attrs["format_version"]),
            "rows_sha256": hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest(), "rows": int(len(rows))}


def split_hash(splits: Mapping[str, Any]) -> str:
    """The sha256 of the canonical JSON of ``splits`` (split name -> model ids)."""
    canonical = {str(k): sorted(int(m) for m in v) for k, v in splits.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    """A split by model of one store for one task: ``splits`` maps split name -> sorted model ids."""

    task: str
    store: Mapping[str, Any]
    seed: int | None
    fractions: Mapping[str, float] | None
    splits: Mapping[str, tuple[int, ...]]

    @property
    def hash(self) -> str:
        """``split_hash`` of ``splits``."""
        return split_hash(self.splits)

    def to_dict(self) -> dict[str, Any]:
        """The split file's JSON object."""
        return {"format": SPLIT_FORMAT, "version": SPLIT_VERSION, "task": self.task, "store": dict(self.store),
                "seed": self.seed, "fractions": None if self.fractions is None else dict(self.fractions),
                "splits": {k: list(v) for k, v in self.splits.items()}, "hash": self.hash}

    def save(self, path: str | Path) -> Path:
        """Write the split file; returns its path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def check_store(self, identity: Mapping[str, Any], where: str = "split") -> None:
        """Refuse a split made for another store (another name or other rows)."""
        for key in ("name", "rows_sha256"):
            if self.store.get(key) != identity.get(key):
                raise ZooError(f"{where}: made for a store with {key} {self.store.get(key)!r}; this store has "
                               f"{identity.get(key)!r} (make a split of this store with `zoo task split`)")


def make_split(task: str, store: Zoo, seed: int = 0, fractions: Mapping[str, float] | None = None,
               model_ids: Any = None) -> Split:
    """The split by model of ``store``'s models (or of ``model_ids``: the models a task uses), from ``seed``
    and ``fractions`` (default train 0.7 / val 0.15 / test 0.15)."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    bad = [k for k in fractions if k not in SPLIT_NAMES]
    if bad:
        raise ZooError(f"split fractions: unknown split {bad[0]!r}; allowed: {', '.join(SPLIT_NAMES)}")
    if model_ids is None:
        model_ids = store.metadata.column("model_id").to_pylist()
    parts = split_models(list(model_ids), fractions, seed)
    return Split(task, store_identity(store), int(seed), fractions,
                 {k: tuple(sorted(parts[k])) for k in fractions})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_split(data: Any, where: str = "split file") -> Split:
    """Check a split file's parsed JSON field by field; a ``ZooError`` naming the first wrong field."""
    if not isinstance(data, dict):
        raise ZooError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != SPLIT_FORMAT:
        raise ZooError(f"{where}: field 'format' must be {SPLIT_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != SPLIT_VERSION or not _int(data.get("version")):
        raise ZooError(f"{where}: field 'version' must be {SPLIT_VERSION}, got {data.get('version')!r}")
    task = data.get("task")
    if not isinstance(task, str) or not task or len(task) > 200:
        raise ZooError(f"{where}: field 'task' must be a task name, got {task!r}")
    store = data.get("store")
    if not isinstance(store, dict):
        raise ZooError(f"{where}: field 'store' must be an object (name, format_version, rows_sha256, rows)")
    if not isinstance(store.get("name"), str):
        raise ZooError(f"{where}: field 'store.name' must be a string")
    if not _int(store.get("format_version")):
        raise ZooError(f"{where}: field 'store.format_version' must be an integer")
    digest = store.get("rows_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ZooError(f"{where}: field 'store.rows_sha256' must be 64 lower-case hex digits")
    if not (_int(store.get("rows")) and store["rows"] >= 0):
        raise ZooError(f"{where}: field 'store.rows' must be an integer >= 0")
    seed = data.get("seed")
    if seed is not None and not _int(seed):
        raise ZooError(f"{where}: field 'seed' must be an integer or null, got {seed!r}")
    fractions = data.get("fractions")
    if fractions is not None:
        if not isinstance(fractions, dict) or not all(
                k in SPLIT_NAMES and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and 0 <= v <= 1 for k, v in fractions.items()):
            raise ZooError(f"{where}: field 'fractions' must map split names ({', '.join(SPLIT_NAMES)}) to "
                           "numbers in [0, 1], or be null")
    splits = data.get("splits")
    if not isinstance(splits, dict):
        raise ZooError(f"{where}: field 'splits' must be an object of split name -> list of model ids")
    unknown = [k for k in splits if k not in SPLIT_NAMES]
    if unknown:
        raise ZooError(f"{where}: field 'splits': unknown split {unknown[0]!r}; allowed: {', '.join(SPLIT_NAMES)}")
    missing = [k for k in ("train", "test") if k not in splits]
    if missing:
        raise ZooError(f"{where}: field 'splits' has no {missing[0]!r} split")
    seen: dict[int, str] = {}
    parts: dict[str, tuple[int, ...]] = {}
    for name in SPLIT_NAMES:
        if name not in splits:
            continue
        ids = splits[name]
        if not isinstance(ids, list):
            raise ZooError(f"{where}: field 'splits.{name}' must be a list of model ids")
        for m in ids:
            if not _int(m) or not 0 <= m <= MAX_MODEL_ID:
                raise ZooError(f"{where}: field 'splits.{name}': model id {m!r} is not an integer in "
                               f"[0, {MAX_MODEL_ID}]")
            if m in seen:
                where_else = "twice in" if seen[m] == name else f"in both {seen[m]!r} and"
                raise ZooError(f"{where}: field 'splits.{name}': model {m} is {where_else} {name!r}")
            seen[m] = name
        parts[name] = tuple(sorted(ids))
    split = Split(task, {k: store[k] for k in ("name", "format_version", "rows_sha256", "rows")}, seed,
                  None if fractions is None else dict(fractions), parts)
    if "hash" in data and data["hash"] != split.hash:
        raise ZooError(f"{where}: field 'hash' is {data['hash']!r}, but the splits hash to {split.hash!r} "
                       "(the file was edited)")
    return split


def load_split(path: str | Path, store: Zoo | None = None) -> Split:
    """Read and check a split file; given ``store``, also refuse a split made for another store or naming
    models it does not hold."""
    where = f"split file {path}"
    split = parse_split(read_json(path, where, MAX_SPLIT_BYTES), where)
    if store is not None:
        split.check_store(store_identity(store), where)
        known = set(store.metadata.column("model_id").to_pylist())
        unknown = sorted(m for ids in split.splits.values() for m in ids if m not in known)
        if unknown:
            raise ZooError(f"{where}: model ids not in the store: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return split
