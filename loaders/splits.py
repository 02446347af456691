"""Splits by model: all checkpoints of one model land in one split.

A pure function of (model ids, fractions, seed), so every process (DataLoader
worker, DDP rank) computes the same split without talking to the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
