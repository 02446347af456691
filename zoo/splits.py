"""Splits by model: every checkpoint of a model lands in one split.

A pure function of (model ids, fractions, seed), so every process (DataLoader worker, DDP rank, the Hugging
Face export) computes the same split without talking to the others. It is part of the domain, so it lives in
``zoo``: anything that reads a store (the loaders, the export that records the split beside the data, a
command) can compute it without torch and without importing the loaders.

The order is the one ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` gives (Fisher-Yates
over MT19937 outputs), reproduced with numpy so that splits need no torch and stay what earlier versions of
this library computed: a zoo split once keeps its split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import ZooError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
#: torch.randperm switches to another algorithm from this size on (models per zoo never get near it).
_MAX_MODELS = (2**32 - 1) // 20


def permutation(n: int, seed: int) -> list[int]:
    """The permutation of ``range(n)`` that ``torch.randperm`` draws from a generator seeded with ``seed``."""
    if n >= _MAX_MODELS:
        raise ZooError(f"split: {n:,} models; splits are defined for fewer than {_MAX_MODELS:,}")
    # torch seeds its MT19937 with the low 32 bits of the seed, as numpy's RandomState does with a 32-bit seed
    state = np.random.RandomState(int(seed) % 2**32).get_state(legacy=False)
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937", "state": {"key": state["state"]["key"], "pos": 624}}
    draws = bits.random_raw(max(n - 1, 0)).tolist()
    order = list(range(n))
    for i in range(n - 1):
        j = i + draws[i] % (n - i)
        order[i], order[j] = order[j], order[i]
    return order


def split_models(model_ids: Sequence[int], fractions: Mapping[str, float] | None = None, seed: int = 0
                 ) -> dict[str, set[int]]:
    """{split name: model ids}: the distinct ids shuffled by ``seed`` and cut at the cumulative ``fractions``
    (default train 0.7 / val 0.15 / test 0.15); the last split takes the rounding remainder."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ZooError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    ids = sorted(set(int(m) for m in model_ids))
    order = permutation(len(ids), seed)
    out, start, acc = {}, 0, 0.0
    names = list(fractions)
    for i, name in enumerate(names):
        acc += fractions[name]
        stop = len(ids) if i == len(names) - 1 else round(acc * len(ids))
        out[name] = {ids[j] for j in order[start:stop]}
        start = stop
    return out
