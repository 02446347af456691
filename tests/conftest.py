"""Shared fixtures: small manifests and stores filled with random checkpoints (no training, no downloads)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.manifest import Manifest

TINY = {
    "zoo": {"name": "tiny", "description": "test zoo", "license": "CC0-1.0"},
    "dataset": {"name": "digits", "resize": 8},
    "architecture": {"name": "mlp", "hidden": [6, 5], "activation": "relu"},
    "training": {"optimizer": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 16},
    "population": {"seeds": {"start": 0, "stop": 5},
                   "grid": {"architecture.activation": ["relu", "tanh"], "training.lr": [1e-3, 1e-2]}},
    "checkpoints": {"epochs": [0, 1, 3]},
}


def tiny_dict(**overrides) -> dict:
    data = copy.deepcopy(TINY)
    for path, value in overrides.items():
        section, _, key = path.partition("__")
        data[section][key] = value
    return data


def tiny_manifest(**overrides) -> Manifest:
    return Manifest.from_dict(tiny_dict(**overrides), source="tiny.toml")


def fill_units(writer, units, seed: int = 0) -> dict[int, np.ndarray]:
    """Commit random rows for ``units``; returns unit_id -> the rows written."""
    rng = np.random.default_rng(seed)
    written = {}
    for u in units:
        width = writer.layout(u.arch_id).size
        rows = rng.standard_normal((len(u.model_ids), width)).astype(np.float32)
        records = [{"test_acc": float(rng.uniform()), "train_loss": float(rng.uniform()), "status": "ok",
                    "device": "cpu", "wall_time_s": 1.5} for _ in u.model_ids]
        writer.write_unit(u, rows, records)
        written[u.unit_id] = rows
    return written


@pytest.fixture
def manifest() -> Manifest:
    return tiny_manifest()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "tiny.zoo"


@pytest.fixture
def filled(store_path, manifest):
    """A complete store of random checkpoints, group size 3 (so the last group of each bucket is partial)."""
    writer = zoo.create(store_path, manifest, group_size=3)
    written = fill_units(writer, writer.plan.units)
    return writer, written
