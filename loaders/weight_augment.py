"""Augmentations that are not symmetries: Gaussian noise and erasing, vectorized over the batch.

(Symmetries live in ``symmetry.py``; the random token window in ``views/tokenizer.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.errors import ZooError


def check_erase(p: float, scale: Sequence[float]) -> None:
    """Refuse erasing parameters that cannot describe a region (checked when a dataset is built, not per batch)."""
    try:
        ok = 0.0 <= p <= 1.0 and len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0
    except TypeError:
        ok = False
    if not ok:
        raise ZooError(f"erase: need 0 <= erase_p <= 1 and 0 < erase_scale[0] <= erase_scale[1] <= 1; got "
                       f"erase_p={p!r}, erase_scale={scale!r}")


def noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of standard deviation ``std`` added to every value."""
    return x + torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std


def _spans(batch: int, length: int, scale: Sequence[float], generator, device) -> tuple[torch.Tensor, ...]:
    """Per-sample [start, stop) of a span covering a uniform fraction in ``scale`` of ``length``."""
    u = torch.rand(batch, 2, generator=generator, device=device)
    size = ((scale[0] + u[:, 0] * (scale[1] - scale[0])) * length).round().long().clamp(1, length)
    start = (u[:, 1] * (length - size + 1)).floor().long().clamp_max(length - size)
    return start, start + size


def erase(x: torch.Tensor, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), value: float = 0.0,
          generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Random erasing (torchvision's RandomErasing, for weights): with probability ``p`` per sample, set a
    region to ``value``. For rows (B, P) the region is a contiguous span of a ``scale`` fraction of the values;
    for tokens (B, T, D) it is a rectangle of consecutive tokens x consecutive token positions, each side a
    ``sqrt(scale)`` fraction, so the erased area is a ``scale`` fraction as well. Padding (``mask`` False)
    stays zero."""
    check_erase(p, scale)
    b, dev = x.shape[0], x.device
    hit = torch.rand(b, generator=generator, device=dev) < p
    if x.dim() == 2:
        lo, hi = _spans(b, x.shape[1], scale, generator, dev)
        pos = torch.arange(x.shape[1], device=dev)
        region = (pos >= lo[:, None]) & (pos < hi[:, None])
    elif x.dim() == 3:
        side = (scale[0] ** 0.5, scale[1] ** 0.5)
        t0, t1 = _spans(b, x.shape[1], side, generator, dev)
        d0, d1 = _spans(b, x.shape[2], side, generator, dev)
        ti, di = torch.arange(x.shape[1], device=dev), torch.arange(x.shape[2], device=dev)
        region = (((ti >= t0[:, None]) & (ti < t1[:, None]))[:, :, None]
                  & ((di >= d0[:, None]) & (di < d1[:, None]))[:, None, :])
    else:
        raise ZooError(f"erase: expected rows (B, P) or tokens (B, T, D), got shape {tuple(x.shape)}")
    region &= hit.view(b, *([1] * (x.dim() - 1)))
    if mask is not None:
        region &= mask
    return x.masked_fill(region, value)
