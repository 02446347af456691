"""Splits by model: all checkpoints of one model land in one split.

A pure function of (model ids, fractions, seed), so every process (DataLoader
worker, DDP rank) computes the same split without talking to the others.
A split file (``save_split`` / ``load_split``) pins a split chosen elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from zoo.errors import ZooError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def split_models(model_ids: Sequence[int], fractions: Mapping[str, float] | None = None, seed: int = 0
                 ) -> dict[str, set[int]]:
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ZooError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    ids = sorted(set(int(m) for m in model_ids))
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    out, start, acc = {}, 0, 0.0
    names = list(fractions)
    for i, name in enumerate(names):
        acc += fractions[name]
        stop = len(ids) if i == len(names) - 1 else round(acc * len(ids))
        out[name] = {ids[j] for j in order[start:stop]}
        start = stop
    return out


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
