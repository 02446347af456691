"""Symmetry augmentation of batches of flat rows, derived from the architecture's symmetry spec.

Every tensor is seen as (unit dims..., K) (``TensorPlan``): the axes that carry
a permutation, and those before them, are unit dims; the trailing K values move
together (a conv kernel, the k inputs of a flattened channel). A transform of a
batch is then, per tensor, one gather of whole blocks by a small per-sample
unit index, times one per-unit factor (the product of the scales of the groups
whose producer or consumer the tensor is). Both are built per batch from the
spec's table, never from layer names, with torch ops only, so the same code runs
on CPU workers or on a CUDA tensor, and the tokens view and its windows
(``views/tokenizer.py``) apply the very same index and factors without building rows.

Semantics equal ``zoo.symmetry.SymmetrySpec.transform`` (tested): new unit
``i`` is old unit ``perm[i]``; its producers are multiplied by ``scale[i]`` and
its consumers divided by it.

A composite axis (``"h*qk|h*qk|h*v"``: attention's packed projections,
concatenations) is one unit dim keyed ``"<tensor>#<axis>"``: ``complete``
computes its per-sample index and factor from the groups' draws
(``zoo.symmetry.axis_index``/``axis_factor``) and adds them to the draws under
that key, so every path (rows, tokens, windows) treats it like a group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zoo.layout import Layout
from zoo.symmetry import SYMMETRIES, SymmetrySpec, axis_factor, axis_index, entry_groups, is_simple, parse_axis


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An uninitialised tensor; on the CPU allocated by numpy, which asks the kernel for transparent huge pages on
    large arrays: writing a fresh 45 MB ResNet-18 batch then costs a third of what torch's allocator costs
    (one page fault per 4 KB)."""
    if torch.device(device).type == "cpu" and dtype in _NUMPY:
        return torch.from_numpy(np.empty(tuple(shape), dtype=_NUMPY[dtype]))
    return torch.empty(tuple(shape), dtype=dtype, device=device)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16, torch.int64: np.int64,
          torch.int32: np.int32, torch.bool: np.bool_}


def gather_units(src: torch.Tensor, index: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """``src[b, index[b]]`` of (B, count, block) rows by a (B, count) unit index. Single values (block 1: a dense
    layer with both axes permuted, every tensor of a transformer) go through ``torch.gather``, 5 to 9 times faster
    on a CPU than advanced indexing; whole blocks (conv kernels) through advanced indexing, which copies blocks."""
    if src.shape[2] == 1:
        return torch.gather(src.view(src.shape[0], src.shape[1]), 1, index).unsqueeze(-1)
    return src[samples, index]


@dataclass(frozen=True)
class TensorPlan:
    """One tensor as (unit dims..., K).

    ``dims``: (size, group or None) per unit dim; an axis with repeat factor k splits into (n, group), (k, None)
    unless it is the last unit axis (then k joins the block). ``terms``: (unit dim, group, power) of every scale
    that multiplies (+1) or divides (-1) the tensor, in unit-dim order (the order the factors are multiplied in,
    the same everywhere so that every path gives bit-identical values)."""

    index: int
    offset: int
    stop: int
    dims: tuple[tuple[int, str | None], ...]
    block: int
    terms: tuple[tuple[int, str, int], ...] = ()

    @property
    def count(self) -> int:
        """Blocks (units) of the tensor."""
        return math.prod(n for n, _ in self.dims)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each unit dim, in units."""
        out, stride = [], self.count
        for n, _ in self.dims:
            stride //= n
            out.append(stride)
        return tuple(out)


@dataclass(frozen=True)
class Composite:
    """A composite axis of one tensor: its entry, the powers of the scales acting on it, and the groups it
    names (a window touching it draws those)."""

    entry: str
    powers: Mapping[str, int]

    @property
    def groups(self) -> list[str]:
        """The groups the entry names."""
        return entry_groups(self.entry)


def _plan(index: int, tensor, entries, scaled: Mapping[int, list[tuple[str, int]]],
          composites: dict[str, Composite]) -> TensorPlan:
    """``scaled``: tensor axis -> [(group, power)] of the scales acting on that axis; a composite axis is
    registered in ``composites`` under its key."""
    permuted = [a for a, e in enumerate(entries) if e is not None]
    last = max(permuted, default=-1)
    block = math.prod(tensor.shape[last + 1:])
    dims: list[tuple[int, str | None]] = []
    terms: list[tuple[int, str, int]] = []
    for axis in range(last + 1):
        entry = entries[axis] if axis < len(entries) else None
        if entry is not None and not is_simple(entry):
            key = f"{tensor.name}#{axis}"
            composites[key] = Composite(entry, dict(scaled.get(axis, ())))
            if scaled.get(axis):
                terms.append((len(dims), key, 1))
            dims.append((tensor.shape[axis], key))
            continue
        parsed = parse_axis(entry)
        if parsed is None:
            dims.append((tensor.shape[axis], None))
            continue
        group, repeat = parsed
        terms += [(len(dims), g, power) for g, power in scaled.get(axis, ())]
        dims.append((tensor.shape[axis] // repeat, group))
        if repeat > 1:
            if axis == last:
                block *= repeat
            else:
                dims.append((repeat, None))
    return TensorPlan(index, tensor.offset, tensor.stop, tuple(dims), block, tuple(terms))


@dataclass
class Draws:
    """One batch's random transform: per group, permutations (B, n) (new unit i = old unit perm[i]) and scales
    (B, n). Groups absent from a dict are not permuted (scaled) for any sample."""

    batch: int
    perms: dict[str, torch.Tensor] = field(default_factory=dict)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.perms or self.scales)

    def to(self, device: torch.device | str) -> Draws:
        """The same draws on ``device`` (drawn on the CPU, applied where the rows are)."""
        return Draws(self.batch, {g: p.to(device) for g, p in self.perms.items()},
                     {g: s.to(device) for g, s in self.scales.items()})


class BatchSymmetry:
    """Per-tensor plans of one layout and spec; ``draw`` draws a batch's transform, ``apply`` applies it."""

    def __init__(self, layout: Layout, spec: SymmetrySpec) -> None:
        self.layout, self.spec = layout, spec
        self.size = layout.size
        scaled: dict[str, dict[int, list[tuple[str, int]]]] = {}
        for (name, axis), powers in spec.scaled_axes(layout).items():
            scaled.setdefault(name, {})[axis] = list(powers.items())
        #: composite axes by key (``"<tensor>#<axis>"``), completed into every batch's draws
        self.composites: dict[str, Composite] = {}
        self.plans = [_plan(i, t, spec.axes.get(t.name, (None,) * len(t.shape)), scaled.get(t.name, {}),
                            self.composites)
                      for i, t in enumerate(layout.tensors)]
        self._sizes = spec.sizes

    def complete(self, draws: Draws) -> Draws:
        """Add every composite axis's (B, n) index and factor to ``draws`` (in place, idempotent; returned)."""
        for key, c in self.composites.items():
            if key not in draws.perms:
                index = axis_index(c.entry, self._sizes, draws.perms, draws.batch)
                if index is not None:
                    draws.perms[key] = index
            if key not in draws.scales:
                dtype = next(iter(draws.scales.values())).dtype if draws.scales else torch.float32
                factor = axis_factor(c.entry, self._sizes, draws.scales, c.powers, draws.batch, dtype)
                if factor is not None:
                    draws.scales[key] = factor
        return draws

    def draw(self, batch: int, activation: str | None, generator: torch.Generator | None,
             symmetries: Sequence[str] = SYMMETRIES, device: torch.device | str = "cpu",
             log_scale: float = 1.0) -> tuple[dict, dict]:
        """Random permutations (B, n) and per-unit scales (B, n) for every group the activation allows."""
        perms, scales = {}, {}
        for g in self.spec.groups:
            perm, scale = self._draw_group(g, batch, activation, generator, symmetries, device, log_scale)
            if perm is not None:
                perms[g] = perm
            if scale is not None:
                scales[g] = scale
        if self.composites:
            done = self.complete(Draws(batch, perms, scales)).to(device)
            perms, scales = done.perms, done.scales
        return perms, scales

    def _draw_group(self, g: str, batch: int, activation: str | None, generator: torch.Generator | None,
                    symmetries: Sequence[str], device: torch.device | str, log_scale: float
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        group = self.spec.groups[g]
        allowed = group.allowed(activation) & set(symmetries)
        perm = scale = None
        if "permute" in allowed:
            perm = torch.rand(batch, group.size, generator=generator, device=device).argsort(dim=1)
        if "rescale" in allowed:
            u = torch.rand(batch, group.size, generator=generator, device=device)
            scale = torch.exp((u * 2 - 1) * log_scale)
        elif "signflip" in allowed:
            u = torch.rand(batch, group.size, generator=generator, device=device)
            scale = torch.where(u < 0.5, -1.0, 1.0)
        return perm, scale

    def draw_batch(self, codes: np.ndarray, activations: Sequence[str], generator: torch.Generator | None,
                   symmetries: Sequence[str] = SYMMETRIES, log_scale: float = 1.0,
                   needed: Mapping[str, np.ndarray] | None = None) -> Draws:
        """Draws for a batch whose sample ``b`` has activation ``activations[codes[b]]``, on the CPU: each
        activation's samples draw what it allows (activation by activation, group by group); the others keep
        those units in place (identity permutation, scale 1). ``needed`` (group -> (B,) bool) restricts the
        draws of a group to the samples that use it (a window draws only the groups it touches)."""
        batch = len(codes)
        out = Draws(batch)
        for code, act in enumerate(activations):
            mine = codes == code
            if not mine.any():
                continue
            for g in self.spec.groups:
                sel = np.flatnonzero(mine if needed is None else mine & needed.get(g, False))
                if not sel.size:
                    continue
                perm, scale = self._draw_group(g, sel.size, act, generator, symmetries, "cpu", log_scale)
                for drawn, table, fill in ((perm, out.perms, torch.arange), (scale, out.scales, torch.ones)):
                    if drawn is None:
                        continue
                    if sel.size == batch:
                        table[g] = drawn
                    else:
                        full = table.setdefault(g, fill(drawn.shape[1], dtype=drawn.dtype).repeat(batch, 1))
                        full[torch.from_numpy(sel)] = drawn
        return self.complete(out)

    # --- per-tensor pieces, shared with the tokens view ------------------------------------------
    @staticmethod
    def unit_index(plan: TensorPlan, perms: Mapping[str, torch.Tensor], batch: int,
                   device: torch.device | str) -> torch.Tensor | None:
        """(B, count) old unit of every new unit of the tensor, or None when no group of it is permuted.
        A few broadcast adds over the unit dims: never a (B, P) index, so memory stays at the output's size."""
        if not any(g in perms for _, g in plan.dims):
            return None
        terms = []
        for axis, ((n, g), stride) in enumerate(zip(plan.dims, plan.strides)):
            shape = [1] * (len(plan.dims) + 1)
            shape[axis + 1] = n
            if g is not None and g in perms:
                shape[0] = batch
                terms.append((perms[g].to(device) * stride).view(shape))
            elif n > 1:  # a dim of one unit adds nothing
                terms.append((torch.arange(n, device=device) * stride).view(shape))
        # the sum of the broadcast terms, written once into fresh (huge-page) memory of the full shape
        index = empty((batch, *(n for n, _ in plan.dims)), torch.int64, device)
        if len(terms) == 1 or torch.broadcast_shapes(terms[0].shape, terms[1].shape) != index.shape:
            index.copy_(terms[0].expand(index.shape))
            rest = terms[1:]
        else:
            torch.add(terms[0], terms[1], out=index)
            rest = terms[2:]
        for term in rest:
            index += term
        return index.view(batch, plan.count)

    @staticmethod
    def unit_factor(plan: TensorPlan, scales: Mapping[str, torch.Tensor], batch: int,
                    dtype: torch.dtype, device: torch.device | str) -> torch.Tensor | None:
        """(B, count) factor of every new unit (producer scales times consumer reciprocals, multiplied in the
        plan's term order), or None when no scale touches the tensor."""
        factor = None
        for dim, g, power in plan.terms:
            if g not in scales:
                continue
            s = scales[g].to(device, dtype)
            s = s if power > 0 else torch.reciprocal(s)
            shape = [batch] + [1] * len(plan.dims)
            shape[dim + 1] = plan.dims[dim][0]
            term = s.view(shape)
            factor = term if factor is None else factor * term
        if factor is None:
            return None
        return factor.expand(batch, *(n for n, _ in plan.dims)).reshape(batch, plan.count)

    def apply(self, rows: torch.Tensor, perms: Mapping[str, torch.Tensor] | Draws,
              scales: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """A transformed copy of ``rows`` (``rows`` is kept): per tensor, one block gather and one multiply."""
        batch = rows.shape[0]
        if isinstance(perms, Draws):
            draws = perms
        else:
            draws = Draws(batch, dict(perms), dict(scales or {}))
        if self.composites:
            draws = self.complete(Draws(batch, dict(draws.perms), dict(draws.scales)))
        perms, scales = draws.perms, draws.scales
        out = empty(rows.shape, rows.dtype, rows.device)
        samples = torch.arange(batch, device=rows.device).view(batch, 1)
        for plan in self.plans:
            src = rows[:, plan.offset:plan.stop].view(batch, plan.count, plan.block)
            dst = out[:, plan.offset:plan.stop].view(batch, plan.count, plan.block)
            index = self.unit_index(plan, perms, batch, rows.device)
            factor = self.unit_factor(plan, scales, batch, rows.dtype, rows.device)
            moved = src if index is None else gather_units(src, index, samples)
            if factor is None:
                dst.copy_(moved)
            else:
                torch.mul(moved, factor.unsqueeze(-1), out=dst)
        return out

    def random(self, rows: torch.Tensor, activation: str | None, generator: torch.Generator | None = None,
               symmetries: Sequence[str] = SYMMETRIES, log_scale: float = 1.0) -> torch.Tensor:
        """Each row under its own random function-preserving transform: ``draw`` on the rows' device, ``apply``."""
        perms, scales = self.draw(rows.shape[0], activation, generator, symmetries, rows.device, log_scale)
        return self.apply(rows, perms, scales)
