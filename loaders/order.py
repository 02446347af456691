"""The stream's order: pure functions of (shards, seed, epoch, rank, world, worker, workers).

``ZooStream`` reads a zoo in an order that costs no random I/O (docs/design.md §6): shards are shuffled with
the rows of a shard kept together (``epoch_order``), the shard-ordered positions are cut into disjoint
contiguous parts, first per DDP rank, then per DataLoader worker (``part``), and each part is shuffled inside
windows of a bounded number of rows (``buffer_windows``). Every process computes its own share from the same
arguments, without talking to the others, so the functions take everything they depend on as arguments.
"""

from __future__ import annotations

import math

import numpy as np

#: Mixed into the shard shuffle's seed, so that it differs from the buffer shuffle's stream.
SHARD_SALT = 0x5EED


def epoch_order(shards: np.ndarray, rows: np.ndarray, *, seed: int, epoch: int, shuffle: bool = True
                ) -> np.ndarray:
    """Every position of ``rows`` (each in shard ``shards[i]``) once, ordered by shard then row; with
    ``shuffle`` the shards are permuted by (``seed``, ``epoch``), each shard's rows staying contiguous."""
    order = np.lexsort((rows, shards))  # by shard, then by row
    if not shuffle:
        return order
    ordered = shards[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    runs = np.split(order, starts[1:])
    rng = np.random.default_rng([seed, epoch, SHARD_SALT])
    return np.concatenate([runs[i] for i in rng.permutation(len(runs))]) if runs else order


def part(order: np.ndarray, rank: int = 0, world: int = 1, worker: int = 0, workers: int = 1) -> np.ndarray:
    """The contiguous slice of ``order`` that ``worker`` of ``workers`` on ``rank`` of ``world`` streams: the
    parts of all ranks and workers are disjoint and cover ``order``, and differ by at most one position
    between ranks (and between the workers of a rank)."""
    mine = np.array_split(order, world)[rank]
    return np.array_split(mine, workers)[worker]


def part_size(n: int, rank: int = 0, world: int = 1) -> int:
    """How many of ``n`` positions ``rank`` of ``world`` streams (over all its workers)."""
    return len(np.array_split(np.arange(n), world)[rank])


def buffer_windows(positions: np.ndarray, buffer_size: int, *, seed: int, epoch: int, rank: int = 0,
                   worker: int = 0, shuffle: bool = True) -> list[np.ndarray]:
    """``positions`` cut into consecutive windows of ``buffer_size``, each shuffled within itself by (``seed``,
    ``epoch``, ``rank``, ``worker``) when ``shuffle``: random order with one window of rows in memory. Their
    concatenation is the order a worker yields."""
    rng = np.random.default_rng([seed, epoch, rank, worker])
    windows = [positions[i:i + buffer_size] for i in range(0, len(positions), buffer_size)]
    if shuffle:
        windows = [w[rng.permutation(len(w))] for w in windows]
    return windows


def batch_count(samples: int, batch_size: int, workers: int = 1, drop_last: bool = False) -> int:
    """Batches a rank with ``samples`` positions yields over ``workers`` workers: each worker batches its own
    part, ending on a partial batch unless ``drop_last``."""
    sizes = [len(p) for p in np.array_split(np.arange(samples), workers)]
    return sum(n // batch_size if drop_last else math.ceil(n / batch_size) for n in sizes)
