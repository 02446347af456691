"""Split files, and the split by model the loaders use.

``split_models`` (a pure function of model ids, fractions and seed) lives in ``zoo.splits``, where the Hugging
Face export uses it too; it is re-exported here so ``loaders.split_models`` stays the loaders' spelling.
A split file (``save_split`` / ``load_split``) pins a split chosen elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from zoo.errors import ZooError
from zoo.splits import DEFAULT_FRACTIONS, split_models

__all__ = ["DEFAULT_FRACTIONS", "load_split", "save_split", "split_models"]


def save_split(path: str | Path, parts: Mapping[str, Iterable[int]]) -> None:
    """Write a split file: JSON ``{"train": [model ids], "val": [...], "test": [...]}`` (sorted ids)."""
    Path(path).write_text(json.dumps({k: sorted(int(m) for m in v) for k, v in parts.items()}, indent=1))


def load_split(path: str | Path, model_ids: Iterable[int] | None = None) -> dict[str, set[int]]:
    """Read a split file; every model in at most one split, and (given ``model_ids``) only known models."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ZooError(f"split file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ZooError(f"split file {path}: expected a JSON object of split name -> list of model ids")
    parts: dict[str, set[int]] = {}
    seen: dict[int, str] = {}
    for name, ids in data.items():
        if not all(isinstance(m, int) and not isinstance(m, bool) for m in ids):
            raise ZooError(f"split file {path}: split {name!r} must list integer model ids")
        for m in ids:
            if m in seen:
                raise ZooError(f"split file {path}: model {m} is in both {seen[m]!r} and {name!r}")
            seen[m] = name
        parts[name] = set(ids)
    if model_ids is not None:
        unknown = sorted(set(seen) - set(int(m) for m in model_ids))
        if unknown:
            raise ZooError(f"split file {path}: model ids not in the store: {unknown[:5]}"
                           f"{' ...' if len(unknown) > 5 else ''}")
    return parts
