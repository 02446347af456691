"""builders.image_augment: batched, reproducible, and the same transforms as torchvision's per-image ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from builders.image_augment import augment, crop_flip, flip_rotate
from zoo.errors import ZooError
from zoo.recipes import AUGMENTATIONS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def windows(img: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Every candidate output for one (C, H, W) image: (9 * 9 * 2, C, H, W), each shifted window x each flip."""
    c, h, w = img.shape
    win = F.pad(img, (pad,) * 4).unfold(1, h, 1).unfold(2, w, 1)  # (C, 9, 9, H, W)
    win = win.permute(1, 2, 0, 3, 4).reshape(-1, c, h, w)
    return torch.cat([win, win.flip(-1)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", AUGMENTATIONS.names())
def test_shape_dtype_and_leading_dims(kind, device):
    x = torch.rand(2, 3, 1, 28, 28, device=device)
    out = augment(x, kind, gen(0, device))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    if kind == "none":
        assert out is x
    else:
        assert not torch.equal(out, x)


@pytest.mark.parametrize("kind", ["crop_flip", "flip_rotate"])
def test_seeded(kind):
    x = torch.rand(4, 8, 3, 32, 32)
    a, b, c = augment(x, kind, gen(1)), augment(x, kind, gen(1)), augment(x, kind, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = gen(3)  # consecutive calls continue the generator's stream
    assert not torch.equal(augment(x, kind, g), augment(x, kind, g))


def test_crop_flip_outputs_are_padded_windows():
    x = torch.rand(3, 4, 3, 32, 32)  # continuous values: each output matches exactly one candidate
    out = augment(x, "crop_flip", gen(5))
    for img, res in zip(x.reshape(-1, 3, 32, 32), out.reshape(-1, 3, 32, 32)):
        match = (windows(img) == res).flatten(1).all(1).nonzero().flatten()
        assert len(match) == 1, "output is not a shifted (flipped) window of the zero-padded input"


def test_crop_flip_offsets_and_flips_are_uniform():
    n = 4000
    x = torch.rand(n, 1, 8, 8)  # small images: every candidate of every image at once
    out = augment(x, "crop_flip", gen(6))
    cands = torch.stack([windows(img) for img in x])  # (n, 162, 1, 8, 8)
    match = (cands == out[:, None]).flatten(2).all(2)
    assert (match.sum(1) == 1).all()
    found = match.float().argmax(1)
    flipped, offset = found // 81, found % 81
    assert abs(flipped.float().mean().item() - 0.5) < 0.03  # p = 0.5 (sd 0.008)
    for axis in (offset // 9, offset % 9):  # top and left, uniform over 0..8 (sd 0.005)
        freq = torch.bincount(axis, minlength=9).float() / n
        assert freq.shape == (9,) and (freq - 1 / 9).abs().max() < 0.03


def test_crop_flip_matches_torchvision_and_other_sizes():
    x = torch.rand(3, 1, 28, 20)
    offsets = torch.tensor([[0, 8], [4, 4], [7, 1]])
    flips = torch.tensor([True, False, True])
    out = crop_flip(x, offsets, flips)
    for i in range(3):
        ref = TF.crop(TF.pad(x[i], [4]), int(offsets[i, 0]), int(offsets[i, 1]), 28, 20)
        assert torch.equal(out[i], TF.hflip(ref) if flips[i] else ref)


def test_flip_rotate_matches_torchvision_rotate():
    x = torch.rand(5, 3, 24, 40)  # non-square: the rotation must not shear
    flips = torch.tensor([False, True, False, True, True])
    degrees = torch.tensor([0.0, 0.0, 17.5, -12.0, 20.0])
    out = flip_rotate(x, flips, degrees)
    for i in range(5):
        img = TF.hflip(x[i]) if flips[i] else x[i]
        ref = TF.rotate(img, float(degrees[i]), interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], x[1].flip(-1), rtol=0, atol=1e-5)  # no rotation: a mirror


def test_flip_rotate_constant_interior_rotated_corners_and_flip_rate():
    n = 2000
    x = torch.full((n, 1, 32, 32), 0.7)
    out = augment(x, "flip_rotate", gen(7))
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    interior = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2).sqrt() <= 14  # sources stay inside for any angle
    torch.testing.assert_close(out[..., interior], torch.full_like(out[..., interior], 0.7), rtol=0, atol=1e-5)
    assert (out[:, 0, 0, 0] < 0.7 - 1e-6).all()  # every image is rotated: a corner samples the zero border

    half = torch.zeros(n, 1, 32, 32)
    half[..., :16] = 1.0  # left half bright
    out = augment(half, "flip_rotate", gen(8))
    left, right = out[..., 12:20, 4:10].mean((1, 2, 3)), out[..., 12:20, 22:28].mean((1, 2, 3))
    assert ((left > 0.9) ^ (right > 0.9)).all()  # rotation by <= 20 degrees keeps these patches on their side
    assert 0.45 < (right > 0.9).float().mean().item() < 0.55


def test_draws_are_uniform_flips_and_angles_within_20_degrees():
    x = torch.rand(64, 3, 16, 16)
    g, replay = gen(9), gen(9)
    out = augment(x, "flip_rotate", g)
    flips = torch.rand(64, generator=replay) < 0.5
    degrees = (torch.rand(64, generator=replay) * 2 - 1) * 20
    assert degrees.abs().max() <= 20
    assert torch.equal(out, flip_rotate(x, flips, degrees))


def test_unknown_kind():
    with pytest.raises(ZooError, match=r"got 'crop-flip'; allowed: crop_flip, flip_rotate, none "
                                       r"\(did you mean 'crop_flip'\?\)"):
        augment(torch.rand(1, 3, 8, 8), "crop-flip")
