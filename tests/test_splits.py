"""Splits by model are a pure function in ``zoo`` (no torch), giving exactly the split earlier versions drew with
``torch.randperm``, so a zoo split once keeps its split; ``loaders.split_models`` is the same function."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import loaders
from zoo.errors import ZooError
from zoo.splits import DEFAULT_FRACTIONS, permutation, split_models


def _torch_split(model_ids, fractions, seed):
    """The split as loaders.splits computed it with torch before it moved to zoo."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
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


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**31 - 1, 2**32 + 3, -2])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 20, 333, 4000])
def test_permutation_is_torch_randperm(n, seed):
    assert permutation(n, seed) == torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("fractions", [None, {"train": 0.5, "val": 0.25, "test": 0.25}, {"a": 0.9, "b": 0.1}])
def test_split_models_is_the_former_torch_split(fractions):
    ids = [3, 3, 10, 11, 57, *range(100, 180)]  # repeated ids: one model, several checkpoints
    for seed in (0, 1, 42):
        parts = split_models(ids, fractions, seed)
        assert parts == _torch_split(ids, fractions, seed)
        assert sum(len(p) for p in parts.values()) == len(set(ids))
    assert loaders.split_models is split_models


def test_split_fractions_are_checked():
    with pytest.raises(ZooError, match=r"split fractions must be >= 0 and sum to 1, got \{'train': 0.5\}"):
        split_models([1, 2], {"train": 0.5})


def test_zoo_splits_imports_no_torch():
    code = "import sys, zoo.splits; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
