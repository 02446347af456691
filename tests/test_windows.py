"""Tokens built with the symmetry on the way: the fused whole-row paths and the window that reads only its own
values give bit for bit what transforming whole rows, encoding and cutting the window gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fill_units, tiny_manifest
from test_architectures import SHAPES
from torch.utils.data import DataLoader

import loaders.dataset as dataset_module
import zoo
from loaders import ZooDataset, ZooStream
from loaders.dataset import RawBatch
from loaders.normalize import Normalizer
from loaders.symmetry import BatchSymmetry, Draws
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


def _scalable(arch) -> bool:
    return any(g.allowed(arch.activation) - {"permute"} for g in arch.symmetry.groups.values())


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
    assert draws.perms and (draws.scales or not _scalable(arch))  # the ViT's groups permute only
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


# --- through the datasets -------------------------------------------------------------------------------

WINDOW = {"view": "tokens", "view_options": {"tokensize": 4}, "windowsize": 5, "seed": 3,
          "augment": ("permute", "rescale", "signflip", "window"), "targets": ("epoch",)}


def _twin_stores(tmp_path, **overrides):
    """The same zoo (relu and tanh MLPs) written locally and behind an fsspec URL (ranged remote reads)."""
    urls = []
    for url in (tmp_path / "local.zoo", f"memory://{tmp_path.name}/remote.zoo"):
        writer = zoo.create(url, tiny_manifest(**overrides), group_size=4)
        fill_units(writer, writer.plan.units)
        urls.append(writer.url)
    return urls


def _no_row_reads(ds):
    def refuse(*args, **kwargs):
        raise AssertionError("a window batch read whole rows")
    ds.zoo.reader(ds.arch).read = refuse


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_windows_read_only_their_values_locally_and_remotely(tmp_path):
    local, remote = _twin_stores(tmp_path)
    datasets = [ZooDataset(local, **WINDOW), ZooDataset(remote, **WINDOW), ZooDataset(local, verify=True, **WINDOW)]
    assert datasets[0].zoo.reader(datasets[0].arch).direct and datasets[1].zoo.reader(datasets[1].arch).remote
    assert len(datasets[0].activation_names) == 2  # relu rescales, tanh flips signs
    for ds in datasets[:2]:
        _no_row_reads(ds)
    idx = list(range(len(datasets[0])))[::3]
    batches = [ds.__getitems__(idx) for ds in datasets]  # the third reads (and checks) whole rows
    assert batches[0]["tokens"].shape == (len(idx), 5, 4)
    assert _equal(batches[0], batches[1]) and _equal(batches[0], batches[2])
    assert not _equal(batches[0], datasets[0].__getitems__(idx[::-1]))  # other positions, other draws
    datasets[0].set_epoch(1)
    assert not torch.equal(datasets[0].__getitems__(idx)["tokens"], batches[0]["tokens"])


@pytest.mark.parametrize("where", ["local", "remote"])
def test_stream_windows_equal_the_dataset_windows(tmp_path, where):
    local, remote = _twin_stores(tmp_path)
    url = local if where == "local" else remote
    stream = ZooStream(url, batch_size=4, shuffle=False, **WINDOW)
    _no_row_reads(stream)
    reference = ZooDataset(local, **WINDOW)
    order = stream.epoch_order()
    batches = list(stream)
    assert len(batches) == stream.num_batches()
    for i, batch in enumerate(batches):
        assert _equal(batch, reference.__getitems__(order[4 * i:4 * i + 4]))


def test_large_rows_are_tokenized_from_the_memory_maps(tmp_path, monkeypatch):
    # MLP rows of 328,458 values: above VIEWS_MIN_VALUES, so whole-row tokens come from the shard maps
    url = _twin_stores(tmp_path, architecture__hidden=[1024, 256])[0]
    options = {"view": "tokens", "augment": ("permute", "rescale", "signflip"), "normalize": True, "seed": 1}
    ds = ZooDataset(url, **options)
    assert ds._from_views and ds.layout.size >= dataset_module.VIEWS_MIN_VALUES
    _no_row_reads(ds)
    idx = [0, 5, 9, 2]
    fused = ds.__getitems__(idx)
    for threads in (2,):
        assert _equal(ZooDataset(url, threads=threads, **options).__getitems__(idx), fused)
    monkeypatch.setattr(dataset_module, "VIEWS_MIN_VALUES", 1 << 40)  # read the rows, then transform them
    rows_first = ZooDataset(url, **options)
    assert not rows_first._from_views
    assert _equal(rows_first.__getitems__(idx), fused)


def test_device_loader_finishes_batches_where_the_learner_is(filled, monkeypatch):
    writer, _ = filled
    options = {"view": "tokens", "view_options": {"tokensize": 8}, "augment": ("permute", "rescale"),
               "normalize": True}
    plain = ZooDataset(writer.url, **options)
    on_cpu = ZooDataset(writer.url, device="cpu", **options)
    expected = list(DataLoader(plain, batch_size=4, collate_fn=plain.collate))
    got = list(on_cpu.loader(batch_size=4, num_workers=2))
    assert len(got) == len(expected) and all(_equal(a, b) for a, b in zip(got, expected))
    # a worker of a dataset on another device hands over the rows; the main process finishes them
    monkeypatch.setattr(dataset_module, "get_worker_info", lambda: object())
    monkeypatch.setattr(ZooDataset, "_worker_transforms", property(lambda self: False))
    raw = on_cpu.__getitems__([0, 1, 2, 3])
    assert isinstance(raw, RawBatch) and raw.rows.shape == (4, on_cpu.layout.size)
    assert _equal(on_cpu.finish(raw), expected[0])
    with pytest.raises(zoo.ZooError, match="threads: expected an integer >= 1, got 0"):
        ZooDataset(writer.url, threads=0)


def test_draws_of_the_groups_alone_permute_attention_in_every_path():
    """Draws carrying only the groups' permutations (no composite-axis keys) still move the ViT's packed q/k/v
    projections: rows, tokens and windows complete them the same way."""
    arch, sym, tok, rows, draws, _ = _setup("vit")
    groups_only = Draws(draws.batch, {g: p for g, p in draws.perms.items() if g in arch.symmetry.groups}, {})
    assert len(groups_only.perms) < len(draws.perms), "the completed draws hold composite keys"
    expected = _reference(arch, sym, tok, rows, draws, None)
    assert not torch.equal(expected["tokens"], Tokenizer(arch.layout, tok.tokensize).encode(rows)["tokens"])
    assert torch.equal(tok.encode(rows, groups_only)["tokens"], expected["tokens"])
    starts = torch.zeros(draws.batch, dtype=torch.int64) + 5
    fresh = Draws(draws.batch, {g: p for g, p in draws.perms.items() if g in arch.symmetry.groups}, {})
    window = tok.window(lambda pos: np.take_along_axis(rows.numpy(), pos, 1), starts, 40, fresh)
    assert torch.equal(window["tokens"], expected["tokens"][:, 5:45])
