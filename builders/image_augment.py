"""Train-time image augmentation, batched on the device.

The population trainer gathers a batch for every model at once, shape
(models, batch, C, H, W); augmenting it image by image in Python would cost
more than the training step. Here every image gets its own random draw, but
the work is one gather (crop/flip) or one ``grid_sample`` (flip/rotate).

The kinds (declared in ``zoo.recipes.AUGMENTATIONS``) mirror the torchvision pipelines of the Model Zoos
generators:

- ``crop_flip``: ``RandomCrop(size, padding=4)`` (zero padding) then ``RandomHorizontalFlip(0.5)``.
- ``flip_rotate``: ``RandomHorizontalFlip(0.5)`` then ``RandomRotation(20)`` (bilinear, zeros outside).

Randomness comes only from ``generator`` (on ``x.device``), drawn in a fixed
order, so the same generator state gives the same batch on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from zoo.errors import ZooError
from zoo.recipes import AUGMENTATIONS

PADDING = 4
MAX_DEGREES = 20.0


@dataclass(frozen=True)
class Augmentation:
    """One kind's two ways of drawing: from a generator (``augment``), or from the population trainer's
    per-model uniforms (``augment_from_uniforms``). Both map (..., C, H, W) images to augmented ones."""

    with_generator: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    with_uniforms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def augment(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment every image of ``x`` (..., C, H, W) independently; returns a tensor of the same shape."""
    impl: Augmentation = AUGMENTATIONS.implementation(kind)
    return impl.with_generator(x, generator)


def augment_from_uniforms(x: torch.Tensor, kind: str, u: torch.Tensor) -> torch.Tensor:
    """Augment (K, b, C, H, W) with draws made from uniforms ``u`` (K*b, 3) in [0, 1): the population trainer's
    per-model streams (``streams.py``) instead of a generator."""
    impl: Augmentation = AUGMENTATIONS.implementation(kind)
    return impl.with_uniforms(x, u)


def _per_image(fn: Callable[[torch.Tensor, Any], torch.Tensor]) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``fn`` on (B, C, H, W) images -> the same on (..., C, H, W), every image drawn independently."""

    def apply(x: torch.Tensor, draws: Any) -> torch.Tensor:
        if x.dim() < 3:
            raise ZooError(f"augment expects (..., C, H, W) images, got shape {tuple(x.shape)}")
        return fn(x.reshape(-1, *x.shape[-3:]), draws).reshape(x.shape)

    return apply


def _crop_flip_drawn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    offsets = torch.randint(0, 2 * PADDING + 1, (b, 2), generator=generator, device=x.device)
    flips = torch.rand(b, generator=generator, device=x.device) < 0.5
    return crop_flip(x, offsets, flips)


def _flip_rotate_drawn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    flips = torch.rand(b, generator=generator, device=x.device) < 0.5
    angles = (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * MAX_DEGREES
    return flip_rotate(x, flips, angles)


def _crop_flip_uniforms(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    offsets = (u[:, :2] * (2 * PADDING + 1)).to(torch.int64).clamp_(max=2 * PADDING)
    return crop_flip(x, offsets, u[:, 2] < 0.5)


def _flip_rotate_uniforms(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return flip_rotate(x, u[:, 0] < 0.5, (u[:, 1] * 2 - 1) * MAX_DEGREES)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = PADDING) -> torch.Tensor:
    """The H x W window at (top, left) = ``offsets[i]`` of each zero-padded image, mirrored where ``flips[i]``.

    x: (B, C, H, W); offsets: (B, 2) ints in [0, 2 * padding]; flips: (B,) bool. One advanced-index gather.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = x.device
    rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.where(flips[:, None], torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev))
    cols = offsets[:, 1:2] + cols  # (B, W): a flip mirrors the window (crop, then flip)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def flip_rotate(x: torch.Tensor, flips: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Mirror where ``flips[i]``, then rotate by ``degrees[i]`` counter-clockwise about the image centre.

    Bilinear, zeros outside, pixel-centre convention (``align_corners=False``) as torchvision's
    ``rotate``. Both steps are folded into one sampling grid: for an output point q (pixel units,
    origin at the centre) the source is F R^-1 q, R the rotation on screen (y down), F the mirror.
    """
    b, _, h, w = x.shape
    a = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    sign = 1.0 - 2.0 * flips.to(torch.float64)  # -1 mirrors x
    # R^-1 in pixel units is [[cos, -sin], [sin, cos]]; affine_grid works in [-1, 1] per axis, so
    # conjugate with the scale diag(w/2, h/2) to keep non-square images undistorted.
    theta = torch.zeros(b, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0] = sign * cos
    theta[:, 0, 1] = sign * -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    dtype = x.dtype if x.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(dtype), [b, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


AUGMENTATIONS.implement("none")(Augmentation(lambda x, generator: x, lambda x, u: x))
AUGMENTATIONS.implement("crop_flip")(Augmentation(_per_image(_crop_flip_drawn), _per_image(_crop_flip_uniforms)))
AUGMENTATIONS.implement("flip_rotate")(Augmentation(_per_image(_flip_rotate_drawn),
                                                    _per_image(_flip_rotate_uniforms)))

__all__ = ["Augmentation", "augment", "augment_from_uniforms", "crop_flip", "flip_rotate"]
