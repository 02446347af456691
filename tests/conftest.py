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


@pytest.fixture(autouse=True, scope="session")
def _architecture_cache(tmp_path_factory):
    """Architecture facts (layouts, activation sizes) are memoized on disk: keep the suite's memo to itself."""
    import os

    from zoo.paths import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("weightzoo-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


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


#: Metadata columns that differ between two builds of the same zoo (the clock).
TIMING = frozenset({"wall_time_s"})


def assert_same_zoo(a: zoo.Zoo | str | Path, b: zoo.Zoo | str | Path) -> None:
    """Every metadata value (timing aside; NaN, a diverged model's loss, equals NaN) and every weight bit."""
    a = a if isinstance(a, zoo.Zoo) else zoo.open(a)
    b = b if isinstance(b, zoo.Zoo) else zoo.open(b)
    ma, mb = a.metadata, b.metadata
    assert ma.num_rows == mb.num_rows == a.plan.checkpoints
    assert ma.column_names == mb.column_names
    for name in ma.column_names:
        if name not in TIMING:
            va, vb = ma.column(name).to_pylist(), mb.column(name).to_pylist()
            assert all(x == y or (x != x and y != y) for x, y in zip(va, vb, strict=True)), name
    for arch in a.arch_ids:
        rows = [r for r, x in zip(ma.column("row").to_pylist(), ma.column("arch").to_pylist()) if x == arch]
        assert np.array_equal(a.read_rows(arch, rows).view(np.uint32), b.read_rows(arch, rows).view(np.uint32))

