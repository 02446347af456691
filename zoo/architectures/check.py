"""Checks of a symmetry spec against its module: what ``zoo architectures --check`` prints and the exactness test
every derived spec passes (docs/design.md §2). Apart from ``derive.py``, which finds a spec; this module judges one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layout import Layout
from ..symmetry import SYMMETRIES, SymmetrySpec


def describe(spec: SymmetrySpec, activation: str | None = None) -> list[str]:
    """One line per group: its name, size, nonlinearity, what it allows and how many tensor axes it acts on."""
    axes = spec.perm_to_axes()
    return [f"{g.name}: {g.size} units, {g.nonlinearity}, allows {'/'.join(sorted(g.allowed(activation)))}, "
            f"{len(axes[g.name])} tensor axes" for g in spec.groups.values()]


def preservation_error(module: nn.Module, layout: Layout, spec: SymmetrySpec, example: torch.Tensor,
                       activation: str | None = None, symmetries: Sequence[str] = SYMMETRIES,
                       seed: int = 0) -> float:
    """Relative error ``max |f'(x) - f(x)| / max |f(x)|`` (eval mode, float64) of a copy of ``module`` with random
    tensors (torch's inits leave some at zero: a ViT's head) after a random element of the spec's group restricted
    to ``symmetries``: 0 up to rounding when the spec is right."""
    import copy

    net = copy.deepcopy(module).double().eval()
    x = example.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = dict(net.named_parameters()) | dict(net.named_buffers())
        for t in layout.tensors:
            value = tensors[t.name]
            if t.role == "running_var":
                value.uniform_(0.5, 2.0, generator=generator)
            else:
                value.normal_(0.0, 1.0, generator=generator).mul_(1 / math.sqrt(max(1, value[0].numel())))
    state = {k: v for k, v in net.state_dict().items() if k in layout}
    with torch.no_grad():
        before = net(x)
        moved = spec.random_transform(layout, state, activation, generator, frozenset(symmetries))
        net.load_state_dict(moved, strict=False)
        after = net(x)
    before, after = torch.cat(_tensors(before)), torch.cat(_tensors(after))
    scale = before.abs().max().clamp_min(1e-12)
    return float((after - before).abs().max() / scale)


def _tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor of a module's output (a tensor, or tuples, lists and dicts of them), flattened."""
    if isinstance(out, torch.Tensor):
        return [out.flatten()]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for item in items for t in _tensors(item)]
