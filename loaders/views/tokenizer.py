"""SANE-style tokens, built straight from rows (or from the store's memory maps) with the symmetry applied on
the way, and windows of them that read only their own bytes.

A token is ``tokensize`` consecutive values of one output channel's "channel row" (the channel's incoming
weights, then its bias; for BatchNorm its weight, bias, running mean and variance), zero-padded. Three paths
produce the same tokens bit for bit, given the same draws (tested):

* ``encode(rows, draws)``: a batch of flat rows (any device). Per tensor one block gather
  (``BatchSymmetry.unit_index``), one multiply by the per-unit factor, then the normalization, written straight
  into the token buffer: no full-row copy is made on the way.
* ``encode_views(views, draws)``: the same per sample from 1-D arrays (the store's memory-mapped rows), so a
  45 MB ResNet-18 row is read once, by the gather that places it, with a thread per sample where threads help.
* ``window(read, starts, draws)``: ``windowsize`` consecutive tokens per sample. For every value of the window
  the source position in the *stored* row and its factor are computed from small per-slot tables (one entry per
  value of a channel row, not per parameter) and the batch's draws, so a window reads only its own values
  (``read``: local memory maps or ranged remote reads), and memory and time do not grow with the model.

The ``tokens`` view (its ``owner`` is the ``Tokenizer``) and ``random_window`` are here too: the one view with
fast paths of its own (memory-mapped rows, windows), which the dataset reaches past the view to use.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.layout import Layout

from ..normalize import Normalizer
from ..symmetry import BatchSymmetry, Draws, TensorPlan, empty, gather_units
from .base import View

#: CPU rows of at least this many values are encoded sample by sample (``encode_views``: a block gather per
#: tensor and sample beats one batched advanced-indexing gather), smaller ones as one batch (fewer calls).
PER_SAMPLE_MIN_VALUES = 1 << 18


@dataclass(frozen=True)
class _Part:
    """One tensor's place in its module's channel rows: columns [col, col + width) of every channel row."""

    plan: TensorPlan
    col: int
    width: int  # values per channel (the tensor's size / channels)


@dataclass(frozen=True)
class _Module:
    token: int  # first token of the module
    channels: int
    width: int  # values of one channel row
    tokens_per_channel: int
    tokensize: int
    parts: tuple[_Part, ...]

    @property
    def row(self) -> int:
        """Values of one padded channel row (whole tokens)."""
        return self.tokens_per_channel * self.tokensize


def _channel_plan(plan: TensorPlan, channels: int) -> TensorPlan:
    """A plan whose first unit dim is the channel axis: a tensor without permuted axes is one block per channel."""
    if plan.dims:
        return plan
    size = plan.stop - plan.offset
    return TensorPlan(plan.index, plan.offset, plan.stop, ((channels, None),), size // channels, plan.terms)


def _quiet_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of a read-only memory map (only read here), without torch's non-writable warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class Tokenizer:
    """Tokens of ``tokensize`` values per output channel of every module; positions are (global token index,
    module index, token index within the module). ``symmetry`` (the architecture's ``BatchSymmetry``) lets
    ``encode``/``encode_views``/``window`` apply a batch's draws on the way; without it they take none."""

    def __init__(self, layout: Layout, tokensize: int = 64, symmetry: BatchSymmetry | None = None) -> None:
        if isinstance(tokensize, bool) or not isinstance(tokensize, int) or tokensize < 1:
            raise ZooError(f"tokensize must be an integer >= 1, got {tokensize!r}")
        self.layout, self.tokensize = layout, tokensize
        plans = symmetry.plans if symmetry is not None else [
            TensorPlan(i, t.offset, t.stop, (), t.size) for i, t in enumerate(layout.tensors)]
        modules, positions, token = [], [], 0
        index = {t.name: i for i, t in enumerate(layout.tensors)}
        for layer, (_, tensors) in enumerate(layout.modules()):
            channels = tensors[0].shape[0]
            if any(t.shape[0] != channels for t in tensors):
                raise ZooError(f"module of {tensors[0].name!r}: tensors disagree on the output channel count")
            parts, col = [], 0
            for t in tensors:
                plan = _channel_plan(plans[index[t.name]], channels)
                if plan.count % channels:
                    raise ZooError(f"{t.name!r}: its unit dims do not start at the channel axis")
                parts.append(_Part(plan, col, t.size // channels))
                col += t.size // channels
            n_tok = math.ceil(col / tokensize)
            modules.append(_Module(token, channels, col, n_tok, tokensize, tuple(parts)))
            k = channels * n_tok
            positions.append(torch.stack([torch.arange(token, token + k), torch.full((k,), layer),
                                          torch.arange(k)], dim=1))
            token += k
        self.modules = modules
        self.num_tokens = token  # tokens per model (T); every model of the layout has the same
        self.positions = torch.cat(positions)  # (T, 3)
        mask = torch.zeros(token, tokensize, dtype=torch.bool)
        for m in modules:
            mask[m.token:m.token + m.channels * m.tokens_per_channel].view(m.channels, m.row)[:, :m.width] = True
        self.mask = mask
        self._symmetry = symmetry  # completes draws with its composite axes; a window touching one draws its groups
        self._slots: _Slots | None = None  # window tables, built on first use
        self._pool: tuple[tuple[int, int], ThreadPoolExecutor] | None = None  # ((pid, threads), pool)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    # --- whole rows -------------------------------------------------------------------------
    def _draws(self, batch: int, draws: Draws | None) -> Draws:
        """The batch's draws (none: identity), completed with the composite axes' indexes and factors where the
        caller's lack them (``BatchSymmetry.complete``), so no path leaves an attention projection unpermuted."""
        draws = draws or Draws(batch)
        return self._symmetry.complete(draws) if self._symmetry is not None and self._symmetry.composites else draws

    def _buffer(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, list]:
        """An uninitialised token buffer with its padding zeroed, and each module's (B, C, row) view."""
        tokens = empty((batch, self.num_tokens, self.tokensize), dtype, device)
        views = []
        for m in self.modules:
            view = tokens[:, m.token:m.token + m.channels * m.tokens_per_channel].reshape(batch, m.channels, m.row)
            if m.row > 2 * m.width:  # mostly padding (BatchNorm: 4 values a channel): one contiguous memset
                view.zero_()
            elif m.row > m.width:
                view[:, :, m.width:].zero_()
            views.append(view)
        return tokens, views

    def _out(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        b, dev = tokens.shape[0], tokens.device
        return {"tokens": tokens, "mask": self.mask.to(dev).expand(b, -1, -1),
                "positions": self.positions.to(dev).expand(b, -1, -1)}

    def encode(self, rows: torch.Tensor, draws: Draws | None = None,
               normalizer: Normalizer | None = None) -> dict[str, torch.Tensor]:
        """``tokens`` (B, T, tokensize), zero-padded; ``mask`` (B, T, tokensize), true on real values;
        ``positions`` (B, T, 3). ``mask`` and ``positions`` are expanded views, the same for every sample.
        ``draws`` (on ``rows``' device) and ``normalizer`` are applied per tensor on the way."""
        batch, dev = rows.shape[0], rows.device
        if dev.type == "cpu" and rows.dtype == torch.float32 and rows.shape[1] >= PER_SAMPLE_MIN_VALUES:
            return self.encode_views(list(rows), draws, normalizer)
        draws = self._draws(batch, draws)
        tokens, views = self._buffer(batch, rows.dtype, dev)
        samples = torch.arange(batch, device=dev).view(batch, 1)
        for m, view in zip(self.modules, views):
            for p in m.parts:
                plan = p.plan
                per = plan.count // m.channels
                dst = view[:, :, p.col:p.col + p.width].unflatten(2, (per, plan.block))
                src = rows[:, plan.offset:plan.stop].view(batch, plan.count, plan.block)
                index = BatchSymmetry.unit_index(plan, draws.perms, batch, dev)
                factor = BatchSymmetry.unit_factor(plan, draws.scales, batch, rows.dtype, dev)
                moved = (src if index is None else gather_units(src, index, samples)).view(batch, m.channels, per,
                                                                                            plan.block)
                if factor is None:
                    dst.copy_(moved)
                else:
                    torch.mul(moved, factor.view(batch, m.channels, per, 1), out=dst)
                if normalizer is not None:
                    _normalize_(dst, normalizer, plan.index)
        return self._out(tokens)

    def encode_views(self, views: Sequence[np.ndarray | torch.Tensor], draws: Draws | None = None,
                     normalizer: Normalizer | None = None, threads: int = 1) -> dict[str, torch.Tensor]:
        """``encode`` of the rows ``views`` (1-D float32 arrays, e.g. memory-mapped rows of the store), each read
        once by the gather that places it; ``threads`` > 1 encodes that many samples at a time."""
        batch = len(views)
        draws = self._draws(batch, draws)
        tokens, module_views = self._buffer(batch, torch.float32, "cpu")
        indexes, factors = [], []
        for m in self.modules:
            for p in m.parts:
                indexes.append(BatchSymmetry.unit_index(p.plan, draws.perms, batch, "cpu"))
                factors.append(BatchSymmetry.unit_factor(p.plan, draws.scales, batch, torch.float32, "cpu"))

        index_arrays = [None if index is None else index.numpy() for index in indexes]

        def one(b: int) -> None:
            given = views[b]
            row = given.numpy() if isinstance(given, torch.Tensor) else given
            k = 0
            for m, view in zip(self.modules, module_views):
                for p in m.parts:
                    plan, index, factor = p.plan, index_arrays[k], factors[k]
                    k += 1
                    per = plan.count // m.channels
                    dst = view[b, :, p.col:p.col + p.width]
                    src = row[plan.offset:plan.stop].reshape(plan.count, plan.block)
                    if index is None:
                        dst.copy_(_quiet_tensor(src).view(m.channels, p.width))
                    else:  # numpy's take of whole blocks (mode="clip": no bounds pass) beats index_select by 1/3
                        if dst.is_contiguous():
                            np.take(src, index[b], axis=0, out=dst.numpy().reshape(plan.count, plan.block),
                                    mode="clip")
                        else:
                            dst.copy_(torch.from_numpy(np.take(src, index[b], axis=0, mode="clip"))
                                      .view(m.channels, p.width))
                    if factor is not None:
                        dst.view(m.channels, per, plan.block).mul_(factor[b].view(m.channels, per, 1))
                    if normalizer is not None:
                        _normalize_(dst, normalizer, plan.index)

        if threads > 1 and batch > 1:
            # a pool made before a fork has no threads in the child (a DataLoader worker): make one per process
            if self._pool is None or self._pool[0] != (os.getpid(), threads):
                pool = ThreadPoolExecutor(threads, thread_name_prefix="weightzoo-tokens")
                self._pool = ((os.getpid(), threads), pool)
            list(self._pool[1].map(one, range(batch)))
        else:
            for b in range(batch):
                one(b)
        return self._out(tokens)

    def decode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rows (B, P) from ``batch["tokens"]`` alone: the values in padding slots are dropped."""
        tokens = batch["tokens"]
        b = tokens.shape[0]
        rows = empty((b, self.layout.size), tokens.dtype, tokens.device)
        for m in self.modules:
            view = tokens[:, m.token:m.token + m.channels * m.tokens_per_channel].reshape(b, m.channels, m.row)
            for p in m.parts:
                t = self.layout.tensors[p.plan.index]
                rows[:, t.offset:t.stop].view(b, m.channels, p.width).copy_(view[:, :, p.col:p.col + p.width])
        return rows

    # --- windows ------------------------------------------------------------------------------
    def window_groups(self, starts: torch.Tensor, windowsize: int) -> dict[str, np.ndarray]:
        """Group -> (B,) bool: the samples whose window touches a tensor that the group permutes or scales (only
        those draw it)."""
        slots = self._window_tables()
        first = np.searchsorted(slots.module_token, starts.numpy(), side="right") - 1
        last = np.searchsorted(slots.module_token, starts.numpy() + windowsize - 1, side="right") - 1
        touched: dict[str, np.ndarray] = {}
        for b, (lo, hi) in enumerate(zip(first.tolist(), last.tolist())):
            for m in range(lo, hi + 1):
                for key in slots.module_groups[m]:
                    composite = self._symmetry.composites.get(key) if self._symmetry is not None else None
                    for g in composite.groups if composite is not None else (key,):
                        touched.setdefault(g, np.zeros(len(starts), dtype=bool))[b] = True
        return touched

    def _window_tables(self) -> _Slots:
        if self._slots is None:
            self._slots = _Slots(self)
        return self._slots

    def window(self, read: Callable[[np.ndarray], np.ndarray], starts: torch.Tensor, windowsize: int,
               draws: Draws | None = None, normalizer: Normalizer | None = None) -> dict[str, torch.Tensor]:
        """Tokens ``starts[b] .. starts[b] + windowsize - 1`` of every sample, equal to ``encode`` of the whole
        rows with the same draws, then that window. ``read(positions)`` returns the stored values at
        ``positions`` (B, N) of each sample's row (int32), as a (B, N) float32 array."""
        t = self._window_tables()
        batch, ts = len(starts), self.tokensize
        draws = self._draws(batch, draws)
        token = starts.view(batch, 1) + torch.arange(windowsize)  # (B, W)
        chunk = t.token_chunk[token].view(-1)
        channel = t.token_channel[token].unsqueeze(-1)  # (B, W, 1)

        def rows(table: torch.Tensor) -> torch.Tensor:  # a (chunks, ts) table's rows of the window's tokens
            out = empty((batch * windowsize, ts), table.dtype, "cpu")
            return torch.index_select(table, 0, chunk, out=out).view(batch, windowsize, ts)

        # every intermediate is written in place or into fresh huge-page memory (``empty``): at a few MB per
        # batch, page faults on torch's own allocations would cost more than the arithmetic
        perm_table, scale_table = t.tables(draws)
        source = rows(t.base)
        index = rows(t.perm0)
        index += channel
        source += _lookup(perm_table, index).mul_(rows(t.step0))
        for perm, step in zip(t.perm_more, t.step_more):
            source += _lookup(perm_table, rows(perm)).mul_(rows(step))
        values = torch.from_numpy(np.ascontiguousarray(read(source.view(batch, -1).numpy()), dtype=np.float32))
        values = values.view(batch, windowsize, ts)
        if scale_table is not None:
            index = rows(t.scale0_channel)
            index *= channel
            index += rows(t.scale0)
            factor = _lookup(scale_table, index)
            for more in t.scale_more:
                factor *= _lookup(scale_table, rows(more))
            values *= factor
        if normalizer is not None:
            mean, std = t.statistics(normalizer)
            values -= rows(mean)
            values /= rows(std)
        valid = rows(t.valid)
        if bool(t.padded[chunk].any()):
            values.masked_fill_(~valid, 0.0)
        return {"tokens": values, "mask": valid, "positions": self.positions[token]}


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[b, index[b, ...]]`` for a (B, width) table and an int32 (B, ...) index, into fresh huge-page
    memory (tables and indexes are int32: half the bytes of int64, and index_select runs several times faster)."""
    flat = index.reshape(len(table), -1)
    wide = empty(flat.shape, torch.int64, "cpu").copy_(flat)
    return torch.gather(table, 1, wide, out=empty(flat.shape, table.dtype, "cpu")).view(index.shape)


class _Slots:
    """Tables of every module's channel-row slots, one row per distinct token chunk (module, chunk within the
    channel row) and one column per value of the token: independent of the channel count, so the size of one
    channel row per module. Slot ``v`` of channel ``c`` reads the stored row under a batch's draws at

        base[v] + P[perm0[v] + c] * step0[v] + sum_a P[perm_a[v]] * step_a[v]

    and is multiplied by ``S[scale0[v] + c * scale0_channel[v]] * prod_a S[scale_a[v]]``, over the batch's
    concatenated permutation table P (a zero column, an identity range, then every group's permutations) and
    scale table S (a one column, then every group's scales and reciprocals)."""

    def __init__(self, tok: Tokenizer) -> None:
        if tok.layout.size >= 2**31:
            raise ZooError(f"windows index rows with int32: a row of {tok.layout.size:,} values is too long")
        parts = [p for m in tok.modules for p in m.parts]
        sizes = {g: n for p in parts for n, g in p.plan.dims if g is not None}
        self.sizes = {g: sizes[g] for g in sorted(sizes)}
        identity = max([m.channels for m in tok.modules] + [n for p in parts for n, _ in p.plan.dims])
        self.identity = identity
        self.perm_offset, at = {}, 1 + identity
        for g, n in self.sizes.items():
            self.perm_offset[g], at = at, at + n
        self.perm_width = at
        self.scale_offset, at = {}, 1
        for g, n in self.sizes.items():
            self.scale_offset[(g, 1)], self.scale_offset[(g, -1)], at = at, at + n, at + 2 * n
        self.scale_width = at
        extra_axes = max([sum(1 for _, g in p.plan.dims[1:] if g is not None) for p in parts] + [0])
        extra_scales = max([sum(1 for d, _, _ in p.plan.terms if d > 0) for p in parts] + [0])
        ts = tok.tokensize
        total = sum(m.row for m in tok.modules)

        def table() -> np.ndarray:
            return np.zeros(total, dtype=np.int32)

        base, perm0, step0, scale0, scale0_channel = table(), table(), table(), table(), table()
        perm0[:] = 1  # the identity range; with step 0 a padding slot reads the row's first value (then masked)
        perm_more = [table() for _ in range(extra_axes)]
        step_more = [table() for _ in range(extra_axes)]
        scale_more = [table() for _ in range(extra_scales)]
        tensor_of, valid = table(), np.zeros(total, dtype=bool)
        token_chunk = np.zeros(tok.num_tokens, dtype=np.int64)
        token_channel = np.zeros(tok.num_tokens, dtype=np.int64)
        self.module_token = np.array([m.token for m in tok.modules], dtype=np.int64)
        self.module_groups = []
        start = 0
        for m in tok.modules:
            k = np.arange(m.channels * m.tokens_per_channel)
            token_channel[m.token:m.token + k.size] = k // m.tokens_per_channel
            token_chunk[m.token:m.token + k.size] = start // ts + k % m.tokens_per_channel
            groups = set()
            for p in m.parts:
                plan = p.plan
                cols = slice(start + p.col, start + p.col + p.width)
                unit, within = np.divmod(np.arange(p.width), plan.block)  # unit in the channel, value in the block
                strides = plan.strides
                tensor_of[cols], valid[cols] = plan.index, True
                g0 = plan.dims[0][1]
                perm0[cols] = self.perm_offset[g0] if g0 is not None else 1
                step0[cols] = strides[0] * plan.block
                offset, extra = plan.offset + within, 0
                for d in range(1, len(plan.dims)):
                    n, group = plan.dims[d]
                    coord = (unit // strides[d]) % n
                    if group is None:
                        offset = offset + coord * strides[d] * plan.block
                    else:
                        perm_more[extra][cols] = self.perm_offset[group] + coord
                        step_more[extra][cols] = strides[d] * plan.block
                        extra += 1
                base[cols] = offset
                extra = 0
                for d, group, power in plan.terms:
                    if d == 0:
                        scale0[cols], scale0_channel[cols] = self.scale_offset[(group, power)], 1
                    else:
                        coord = (unit // strides[d]) % plan.dims[d][0]
                        scale_more[extra][cols] = self.scale_offset[(group, power)] + coord
                        extra += 1
                groups |= {g for _, g in plan.dims if g is not None} | {g for _, g, _ in plan.terms}
            self.module_groups.append(sorted(groups))
            start += m.row

        def chunks(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values.reshape(-1, ts))

        self.base, self.perm0, self.step0 = chunks(base), chunks(perm0), chunks(step0)
        self.perm_more, self.step_more = [chunks(x) for x in perm_more], [chunks(x) for x in step_more]
        self.scale0, self.scale0_channel = chunks(scale0), chunks(scale0_channel)
        self.scale_more = [chunks(x) for x in scale_more]
        self.valid = chunks(valid)
        self.padded = ~self.valid.all(dim=1)
        self.tensor_of = chunks(tensor_of)
        self.token_chunk = torch.from_numpy(token_chunk)
        self.token_channel = torch.from_numpy(token_channel.astype(np.int32))
        self._statistics: tuple[Any, torch.Tensor, torch.Tensor] | None = None

    def tables(self, draws: Draws) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's permutation table and its scale table (None without scales), from its draws."""
        b = draws.batch
        perm = torch.empty(b, self.perm_width, dtype=torch.int32)
        perm[:, 0] = 0
        perm[:, 1:1 + self.identity] = torch.arange(self.identity)
        for g, n in self.sizes.items():
            at = self.perm_offset[g]
            perm[:, at:at + n] = draws.perms[g].cpu() if g in draws.perms else torch.arange(n)
        if not draws.scales:
            return perm, None
        scale = torch.ones(b, self.scale_width, dtype=torch.float32)
        for g, n in self.sizes.items():
            if g in draws.scales:
                s = draws.scales[g].cpu().to(torch.float32)
                at = self.scale_offset[(g, 1)]
                scale[:, at:at + n] = s
                scale[:, at + n:at + 2 * n] = torch.reciprocal(s)
        return perm, scale

    def statistics(self, normalizer: Normalizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slot mean and std (of the slot's tensor), as (chunks, ts) tables."""
        if self._statistics is None or self._statistics[0] is not normalizer:
            mean = torch.tensor(normalizer.mean, dtype=torch.float32)[self.tensor_of.long()]
            std = torch.tensor(normalizer.std, dtype=torch.float32)[self.tensor_of.long()]
            self._statistics = (normalizer, mean, std)
        return self._statistics[1], self._statistics[2]


def _normalize_(dst: torch.Tensor, normalizer: Normalizer, tensor: int) -> None:
    """(x - mean) / std of one tensor's values in place, as ``Normalizer.apply`` computes them (tensor operands,
    so that no device turns the division into a multiplication by a rounded reciprocal)."""
    mean = torch.tensor([normalizer.mean[tensor]], dtype=dst.dtype, device=dst.device)
    std = torch.tensor([normalizer.std[tensor]], dtype=dst.dtype, device=dst.device)
    dst.sub_(mean).div_(std)


def tokens(layout: Layout, tokensize: int = 64, spec: Any = None) -> View:
    """SANE-style tokens of ``tokensize`` values (``Tokenizer``, ``view.owner``: with ``spec`` it applies a
    batch's symmetry draws on the way, and cuts windows that read only their own values)."""
    tok = Tokenizer(layout, tokensize, BatchSymmetry(layout, spec) if spec is not None else None)
    return View("tokens", tok.encode, tok.decode, tok)


def random_window(batch: dict[str, torch.Tensor], windowsize: int, generator: torch.Generator | None = None
                  ) -> dict[str, torch.Tensor]:
    """A random window of ``windowsize`` consecutive tokens per sample (SANE's training windows), cut from whole
    encoded rows: the reference that ``Tokenizer.window`` equals without building them."""
    b, t = batch["tokens"].shape[:2]
    if windowsize >= t:
        return batch
    start = torch.randint(0, t - windowsize + 1, (b, 1), generator=generator)
    idx = (start + torch.arange(windowsize)).to(batch["tokens"].device)
    return {k: v.gather(1, idx.view(b, windowsize, *([1] * (v.dim() - 2))).expand(b, windowsize, *v.shape[2:]))
            for k, v in batch.items()}
