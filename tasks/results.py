"""Result files: what one run of a learner on a task measured, with everything needed to compare it.

A result file is JSON::

    {"format": "weightzoo-result", "version": 1,
     "task": {"name": "accuracy", "version": 1, ...the declaration},
     "store": {name, format_version, rows_sha256, rows}, "split": {"hash": ..., "file": ... or null},
     "seeds": [0, 1, 2], "learner": {"name": "statnn", "settings": {...every hyperparameter}},
     "metrics": {"test": {"r2": {"mean": ..., "std": ..., "values": [one per seed]}, ...}, ...},
     "rows": {"train": n, ...}, "versions": {"weightzoo": ..., "torch": ...}}

``std`` is the population standard deviation over seeds (0 for one seed). Two results are comparable exactly
when their task (name and version), store hash and split hash agree (``comparable``); the learner, seeds and
versions may differ, since comparing those is the point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

from .jsonfile import read_json

RESULT_FORMAT = "weightzoo-result"
RESULT_VERSION = 1
MAX_RESULT_BYTES = 64 * 2**20


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{mean, std, values}: NaN values (an undefined metric) make mean and std NaN, written as JSON null."""
    vals = [float(v) for v in values]
    if not vals or any(math.isnan(v) for v in vals):
        return {"mean": None, "std": None, "values": [None if math.isnan(v) else v for v in vals]}
    mean = sum(vals) / len(vals)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)), "values": vals}


@dataclass(frozen=True)
class Result:
    """One run's result (see the module docstring for the file it writes)."""

    task: Mapping[str, Any]
    store: Mapping[str, Any]
    split: Mapping[str, Any]
    seeds: tuple[int, ...]
    learner: Mapping[str, Any]
    metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]
    rows: Mapping[str, int] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result file's JSON object."""
        return {"format": RESULT_FORMAT, "version": RESULT_VERSION, "task": dict(self.task),
                "store": dict(self.store), "split": dict(self.split), "seeds": list(self.seeds),
                "learner": dict(self.learner), "metrics": {k: dict(v) for k, v in self.metrics.items()},
                "rows": dict(self.rows), "versions": dict(self.versions)}

    def save(self, path: str | Path) -> Path:
        """Write the result file; returns its path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "result") -> Result:
        """A result from its JSON object, each field checked (a ``ZooError`` naming the first wrong one)."""
        if not isinstance(data, dict):
            raise ZooError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != RESULT_FORMAT:
            raise ZooError(f"{where}: field 'format' must be {RESULT_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != RESULT_VERSION or isinstance(data.get("version"), bool):
            raise ZooError(f"{where}: field 'version' must be {RESULT_VERSION}, got {data.get('version')!r}")
        for key in ("task", "store", "split", "learner", "metrics"):
            if not isinstance(data.get(key), dict):
                raise ZooError(f"{where}: field {key!r} must be an object")
        task, store, split = data["task"], data["store"], data["split"]
        if not isinstance(task.get("name"), str) or not isinstance(task.get("version"), int):
            raise ZooError(f"{where}: field 'task' must have a string 'name' and an integer 'version'")
        if not isinstance(store.get("rows_sha256"), str) or not isinstance(store.get("name"), str):
            raise ZooError(f"{where}: field 'store' must have a string 'name' and 'rows_sha256'")
        if not isinstance(split.get("hash"), str):
            raise ZooError(f"{where}: field 'split.hash' must be a string")
        if not isinstance(data["learner"].get("name"), str):
            raise ZooError(f"{where}: field 'learner.name' must be a string")
        seeds = data.get("seeds")
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ZooError(f"{where}: field 'seeds' must be a list of integers")
        for name, per_split in data["metrics"].items():
            if not isinstance(per_split, dict) or not all(
                    isinstance(v, dict) and all(isinstance(v.get(k), int | float | None) for k in ("mean", "std"))
                    for v in per_split.values()):
                raise ZooError(f"{where}: field 'metrics.{name}' must map metric -> {{mean, std, values}}")
        rows = data.get("rows", {})
        versions = data.get("versions", {})
        if not isinstance(rows, dict) or not isinstance(versions, dict):
            raise ZooError(f"{where}: fields 'rows' and 'versions' must be objects")
        return cls(task, store, split, tuple(seeds), data["learner"], data["metrics"], rows, versions)

    @property
    def label(self) -> str:
        """A short name for tables: learner (and its model) on task."""
        model = self.learner.get("settings", {}).get("model") if isinstance(self.learner.get("settings"), dict) \
            else None
        return f"{self.learner['name']}{'/' + str(model) if model else ''}"


def load_result(path: str | Path) -> Result:
    """Read and check a result file (untrusted: every problem is a ``ZooError`` naming the file)."""
    where = f"result file {path}"
    return Result.from_dict(read_json(path, where, MAX_RESULT_BYTES), where)


def incomparable(a: Result, b: Result) -> list[str]:
    """Why ``a`` and ``b`` are not comparable, one reason each; empty when they are (same task name and version,
    same store hash, same split hash)."""
    reasons = []
    ta, tb = (a.task.get("name"), a.task.get("version")), (b.task.get("name"), b.task.get("version"))
    if ta != tb:
        reasons.append(f"task {ta[0]} v{ta[1]} vs {tb[0]} v{tb[1]}")
    if a.store.get("rows_sha256") != b.store.get("rows_sha256"):
        reasons.append(f"store {a.store.get('name')} ({str(a.store.get('rows_sha256'))[:12]}) vs "
                       f"{b.store.get('name')} ({str(b.store.get('rows_sha256'))[:12]})")
    if a.split.get("hash") != b.split.get("hash"):
        reasons.append(f"split {str(a.split.get('hash'))[:12]} vs {str(b.split.get('hash'))[:12]}")
    return reasons


def comparable(a: Result, b: Result) -> bool:
    """True exactly when task (name and version), store hash and split hash agree."""
    return not incomparable(a, b)
