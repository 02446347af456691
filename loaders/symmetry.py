"""Symmetry augmentation of batches of flat rows, derived from the architecture's symmetry spec.

A hidden-unit permutation of every sample in a batch is one gather over the
flat rows, ``rows.gather(1, index)``; positive rescaling and sign flips are one
multiplier tensor. Both are built per batch from the spec's table (which
permutation acts on which axis of which tensor), never from layer names, with
torch ops only, so the same code runs on CPU workers or on a CUDA tensor.
Semantics equal ``zoo.symmetry.SymmetrySpec.transform`` (tested): new unit
``i`` is old unit ``perm[i]``; its producers are multiplied by ``scale[i]`` and
its consumers divided by it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from zoo.layout import Layout
from zoo.symmetry import SymmetrySpec, expand_units, parse_axis

SYMMETRIES = ("permute", "rescale", "signflip")


class BatchSymmetry:
    """Precomputed index views of one layout and spec; ``apply`` transforms a batch of rows."""

    def __init__(self, layout: Layout, spec: SymmetrySpec) -> None:
        self.layout, self.spec = layout, spec
        self.size = layout.size
        self.index = spec.perm_to_axes()
        self.producers = {g: spec.producers(layout, g) for g in spec.groups}
        self.consumers = {g: spec.consumers(g) for g in spec.groups}
        # tensors touched by any permutation, in layout order
        self.touched = [t for t in layout.tensors if t.name in spec.axes]

    def draw(self, batch: int, activation: str | Mapping[int, str] | None, generator: torch.Generator | None,
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

    def gather_index(self, perms: Mapping[str, torch.Tensor], batch: int, device) -> torch.Tensor:
        """(B, P) int64 index: row ``b`` of the output takes element ``index[b, j]`` of input row ``b``."""
        index = torch.arange(self.size, device=device).expand(batch, -1).clone()
        for t in self.touched:
            view = index[:, t.offset:t.stop].view(batch, *t.shape)
            moved = False
            for axis, entry in enumerate(self.spec.axes[t.name]):
                parsed = parse_axis(entry)
                if parsed is None or parsed[0] not in perms:
                    continue
                p = expand_units(perms[parsed[0]], parsed[1])  # (B, axis size)
                shape = [batch] + [1] * len(t.shape)
                shape[axis + 1] = -1
                view = view.gather(axis + 1, p.view(shape).expand_as(view))
                moved = True
            if moved:
                index[:, t.offset:t.stop] = view.reshape(batch, -1)
        return index

    def multiplier(self, scales: Mapping[str, torch.Tensor], batch: int, device, dtype) -> torch.Tensor | None:
        if not scales:
            return None
        mult = torch.ones(batch, self.size, device=device, dtype=dtype)
        for g, s in scales.items():
            for entries, power in ((self.producers[g], 1), (self.consumers[g], -1)):
                for name, axis, repeat in entries:
                    t = self.layout[name]
                    view = mult[:, t.offset:t.stop].view(batch, *t.shape)
                    shape = [batch] + [1] * len(t.shape)
                    shape[axis + 1] = -1
                    view.mul_(expand_units(s, repeat).to(dtype).pow(power).view(shape))
        return mult

    def apply(self, rows: torch.Tensor, perms: Mapping[str, torch.Tensor],
              scales: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        batch = rows.shape[0]
        out = rows.gather(1, self.gather_index(perms, batch, rows.device)) if perms else rows.clone()
        mult = self.multiplier(scales or {}, batch, rows.device, rows.dtype)
        return out * mult if mult is not None else out

    def random(self, rows: torch.Tensor, activation: str | None, generator: torch.Generator | None = None,
               symmetries=SYMMETRIES) -> torch.Tensor:
        perms, scales = self.draw(rows.shape[0], activation, generator, symmetries, rows.device)
        return self.apply(rows, perms, scales)

