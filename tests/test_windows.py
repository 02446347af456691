"""Tokens built with the symmetry on the way: the fused whole-row paths and the window that reads only its own
values give bit for bit what transforming whole rows, encoding and cutting the window gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_architectures import SHAPES

from loaders.normalize import Normalizer
from loaders.symmetry import BatchSymmetry
from loaders.tokens import Tokenizer
from loaders.views import random_window
from zoo.architectures import get_architecture

ACTIVATION = {"cnn-s": "tanh", "mlp": "tanh"}  # odd activations: sign flips; the rest rescale


def _setup(name: str, batch: int = 3, tokensize: int = 16, seed: int = 0):
    options = {"activation": ACTIVATION[name]} if name in ACTIVATION else {}
    arch = get_architecture(name, SHAPES[name], **options)
    sym = BatchSymmetry(arch.layout, arch.symmetry)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(batch, arch.layout.size, generator=g)
    codes = np.zeros(batch, dtype=np.int64)
    draws = sym.draw_batch(codes, [arch.activation], g)
    n = len(arch.layout.tensors)
    normalizer = Normalizer(arch.layout, torch.randn(n, generator=g).tolist(),
                            (torch.rand(n, generator=g) + 0.5).tolist())
    return arch, sym, Tokenizer(arch.layout, tokensize, sym), rows, draws, normalizer


def _reference(arch, sym, tok, rows, draws, normalizer):
    """Whole rows transformed, normalized, then encoded by the plain tokenizer."""
    out = sym.apply(rows, draws)
    if normalizer is not None:
        out = normalizer.apply(out)
    return Tokenizer(arch.layout, tok.tokensize).encode(out)


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("normalized", [False, True])
def test_fused_tokens_equal_transform_then_encode(name, normalized):
    arch, sym, tok, rows, draws, normalizer = _setup(name)
    normalizer = normalizer if normalized else None
    assert draws.perms and draws.scales
    expected = _reference(arch, sym, tok, rows, draws, normalizer)
    got = tok.encode(rows, draws, normalizer)
    assert torch.equal(got["tokens"], expected["tokens"])
    assert torch.equal(got["mask"], expected["mask"]) and torch.equal(got["positions"], expected["positions"])
    for threads in (1, 2):
        views = tok.encode_views([r.numpy() for r in rows], draws, normalizer, threads=threads)
        assert torch.equal(views["tokens"], expected["tokens"])
    # no draws: the plain tokens, which decode to the rows exactly
    plain = tok.encode(rows)
    assert torch.equal(tok.decode(plain), rows)
    assert torch.equal(plain["tokens"][~plain["mask"]], torch.zeros(int((~plain["mask"]).sum())))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_window_equals_the_window_of_the_whole_transformed_rows(name):
    arch, sym, tok, rows, draws, normalizer = _setup(name, batch=4)
    full = tok.encode(rows, draws, normalizer)
    reads = []

    def read(positions: np.ndarray) -> np.ndarray:
        reads.append(positions.copy())
        return np.take_along_axis(rows.numpy(), positions, axis=1)

    for windowsize in (1, 7, 40):
        windowsize = min(windowsize, tok.num_tokens)
        g = torch.Generator().manual_seed(windowsize)
        expected = random_window(full, windowsize, g)
        starts = torch.randint(0, tok.num_tokens - windowsize + 1, (4, 1),
                               generator=torch.Generator().manual_seed(windowsize)).view(-1)
        got = tok.window(read, starts, windowsize, draws, normalizer)
        for key in ("tokens", "mask", "positions"):
            assert torch.equal(got[key], expected[key]), key
        # each sample read at most its window's values (a padding slot reads a position it then masks)
        assert reads[-1].shape == (4, windowsize * tok.tokensize)
    # every window position of the last sample lies in the row
    assert reads[-1].min() >= 0 and reads[-1].max() < arch.layout.size


def test_window_reads_only_the_tokens_it_returns():
    arch, sym, tok, rows, draws, _ = _setup("resnet18", batch=2, tokensize=64)
    starts = torch.tensor([0, tok.num_tokens - 256])
    seen = {}

    def read(positions: np.ndarray) -> np.ndarray:
        seen["positions"] = positions
        return np.take_along_axis(rows.numpy(), positions, axis=1)

    out = tok.window(read, starts, 256, draws)
    assert out["tokens"].shape == (2, 256, 64)
    # 256 tokens of 64: 16,384 values per sample of the 11,173,962 in a row
    assert seen["positions"].shape == (2, 256 * 64)
    expected = tok.encode(rows, draws)["tokens"]
    assert torch.equal(out["tokens"][0], expected[0, :256])
    assert torch.equal(out["tokens"][1], expected[1, -256:])
