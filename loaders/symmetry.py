"""Symmetry augmentation of batches of flat rows, derived from the architecture's symmetry spec.

A hidden-unit permutation of every sample in a batch is, per tensor, one
block gather (whole kernels move together); positive rescaling and sign flips are one
multiplication in place. Both are built per batch from the spec's table (which
permutation acts on which axis of which tensor), never from layer names, with
torch ops only, so the same code runs on CPU workers or on a CUDA tensor.
Semantics equal ``zoo.symmetry.SymmetrySpec.transform`` (tested): new unit
``i`` is old unit ``perm[i]``; its producers are multiplied by ``scale[i]`` and
its consumers divided by it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from zoo.layout import Layout
from zoo.symmetry import SymmetrySpec, expand_units, parse_axis

SYMMETRIES = ("permute", "rescale", "signflip")


@dataclass(frozen=True)
class _Blocks:
    """One tensor seen as (unit dims..., K): every permuted axis and the axes before it are unit dims (an axis
    with repeat factor k splits into (n, k)); the trailing K values move together (a conv kernel, the k inputs of
    a flattened channel)."""

    offset: int
    stop: int
    dims: tuple[tuple[int, str | None], ...]  # (size, group or None) per unit dim
    block: int

    @property
    def count(self) -> int:
        return math.prod(n for n, _ in self.dims)


def _blocks(tensor, entries) -> _Blocks:
    permuted = [a for a, e in enumerate(entries) if e is not None]
    last = max(permuted, default=-1)
    block = math.prod(tensor.shape[last + 1:])
    dims: list[tuple[int, str | None]] = []
    for axis in range(last + 1):
        parsed = parse_axis(entries[axis])
        if parsed is None:
            dims.append((tensor.shape[axis], None))
            continue
        group, repeat = parsed
        dims.append((tensor.shape[axis] // repeat, group))
        if repeat > 1:
            if axis == last:
                block *= repeat
            else:
                dims.append((repeat, None))
    return _Blocks(tensor.offset, tensor.stop, tuple(dims), block)


class BatchSymmetry:
    """Precomputed per-tensor plans of one layout and spec; ``apply`` transforms a batch of rows."""

    def __init__(self, layout: Layout, spec: SymmetrySpec) -> None:
        self.layout, self.spec = layout, spec
        self.size = layout.size
        # group -> (offset, stop, shape, axis, repeat, power) of every tensor its scale multiplies (+1) or divides
        self._scaled = {g: [(layout[n].offset, layout[n].stop, layout[n].shape, axis, repeat, power)
                            for entries, power in ((spec.producers(layout, g), 1), (spec.consumers(g), -1))
                            for n, axis, repeat in entries] for g in spec.groups}
        self.blocks = [_blocks(t, spec.axes.get(t.name, (None,) * len(t.shape))) for t in layout.tensors]

    def draw(self, batch: int, activation: str | None, generator: torch.Generator | None,
             symmetries=SYMMETRIES, device: torch.device | str = "cpu",
             log_scale: float = 1.0) -> tuple[dict, dict]:
        """Random permutations (B, n) and per-unit scales (B, n) for every group the activation allows."""
        perms, scales = {}, {}
        for g, group in self.spec.groups.items():
            allowed = group.allowed(activation) & set(symmetries)
            if "permute" in allowed:
                noise = torch.rand(batch, group.size, generator=generator, device=device)
                perms[g] = noise.argsort(dim=1)
            if "rescale" in allowed:
                u = torch.rand(batch, group.size, generator=generator, device=device)
                scales[g] = torch.exp((u * 2 - 1) * log_scale)
            elif "signflip" in allowed:
                u = torch.rand(batch, group.size, generator=generator, device=device)
                scales[g] = torch.where(u < 0.5, -1.0, 1.0)
        return perms, scales

    def permute(self, rows: torch.Tensor, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Permute hidden units of every row (row ``b`` by ``perms[g][b]``).

        Per tensor, one small index over its unit dims (``sum_a perm_a[b, i_a] * stride_a``, a few broadcast
        adds) selects whole blocks of K values: no (B, P) index is ever built, so memory stays at the size of the
        output whatever the model (ResNet-18 rows hold 11M values), and conv kernels move as blocks.
        """
        batch = rows.shape[0]
        out = torch.empty_like(rows)
        samples = torch.arange(batch, device=rows.device).view(batch, 1)
        for b in self.blocks:
            src, dst = rows[:, b.offset:b.stop], out[:, b.offset:b.stop]
            if not any(g in perms for _, g in b.dims):
                dst.copy_(src)
                continue
            index, stride = None, b.count
            for axis, (n, g) in enumerate(b.dims):
                stride //= n
                shape = [1] * (len(b.dims) + 1)
                shape[axis + 1] = n
                if g is not None and g in perms:
                    shape[0] = batch
                    term = (perms[g] * stride).view(shape)
                else:
                    term = (torch.arange(n, device=rows.device) * stride).view(shape)
                index = term if index is None else index + term
            assert index is not None  # b.dims is not empty: a permuted block has a unit axis
            index = index.expand(batch, *(n for n, _ in b.dims)).reshape(batch, b.count)
            dst.view(batch, b.count, b.block)[:] = src.view(batch, b.count, b.block)[samples, index]
        return out

    def scale_(self, out: torch.Tensor, scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Multiply each group's producers by its per-unit scales and divide its consumers, in place: only the
        tensors a scale touches are visited, and no (B, P) multiplier is built."""
        batch = out.shape[0]
        for g, s in scales.items():
            for offset, stop, shape, axis, repeat, power in self._scaled[g]:
                view = out[:, offset:stop].view(batch, *shape)
                along = [batch] + [1] * len(shape)
                along[axis + 1] = -1
                view.mul_(expand_units(s, repeat).to(out.dtype).pow(power).view(along))
        return out

    def apply(self, rows: torch.Tensor, perms: Mapping[str, torch.Tensor],
              scales: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Transform a copy of ``rows`` by given draws (``draw``'s output), permutation first; ``rows`` is kept."""
        out = self.permute(rows, perms) if perms else rows.clone()
        return self.scale_(out, scales) if scales else out

    def random(self, rows: torch.Tensor, activation: str | None, generator: torch.Generator | None = None,
               symmetries=SYMMETRIES, log_scale: float = 1.0) -> torch.Tensor:
        """Each row under its own random function-preserving transform: ``draw`` on the rows' device, ``apply``."""
        perms, scales = self.draw(rows.shape[0], activation, generator, symmetries, rows.device, log_scale)
        return self.apply(rows, perms, scales)

