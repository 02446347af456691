"""Loaders: batched symmetry augmentation is exact for every registered architecture, views invert exactly,
splits are by model, and a DataLoader with workers sees every sample once."""

from __future__ import annotations

import pytest
import torch
from test_architectures import SHAPES, _cases, _randomized
from torch.utils.data import DataLoader

import zoo
from loaders import BatchSymmetry, ZooDataset, make_view, split_models
from zoo.architectures import get_architecture


@pytest.mark.parametrize("name,activation", list(_cases()))
def test_batched_augmentation_preserves_function(name, activation):
    arch = get_architecture(name, SHAPES[name], **({"activation": activation} if activation else {}))
    module = _randomized(arch)
    row = arch.layout.flatten(module.state_dict())
    rows = row.expand(3, -1).clone()
    sym = BatchSymmetry(arch.layout, arch.symmetry)
    g = torch.Generator().manual_seed(2)
    perms, scales = sym.draw(3, activation or "relu", g)
    out = sym.apply(rows, perms, scales)
    assert not torch.equal(out[0], out[1]), "each sample gets its own transform"
    x = torch.randn(2, *SHAPES[name], generator=g)
    with torch.no_grad():
        ref = module(x)
        for b in range(3):
            other = arch.layout.load_into(arch.module(), out[b]).eval()
            torch.testing.assert_close(other(x), ref, rtol=1e-4, atol=1e-5)
            # the same as the spec's per-tensor reference transform
            expected = arch.layout.flatten(arch.symmetry.transform(
                arch.layout, arch.layout.unflatten(row), {k: v[b] for k, v in perms.items()},
                {k: v[b] for k, v in scales.items()}))
            torch.testing.assert_close(out[b], expected, rtol=1e-6, atol=1e-6)


def test_augmentation_runs_on_the_device_of_the_rows():
    arch = get_architecture("cnn-s", SHAPES["cnn-s"])
    rows = torch.randn(4, arch.layout.size, dtype=torch.float64)
    out = BatchSymmetry(arch.layout, arch.symmetry).random(rows, "relu")
    assert out.dtype == torch.float64 and out.device == rows.device and out.shape == rows.shape


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_views_invert_exactly(name):
    layout = get_architecture(name, SHAPES[name]).layout
    rows = torch.randn(2, layout.size)
    for view, options in (("flat", {}), ("state_dict", {}), ("tokens", {"tokensize": 48})):
        v = make_view(view, layout, **options)
        assert torch.equal(v.decode(v.encode(rows)), rows), view


def test_tokens_layout():
    layout = get_architecture("cnn-s", (1, 28, 28)).layout
    batch = make_view("tokens", layout, tokensize=16).encode(torch.randn(1, layout.size))
    # conv1: 8 channels of 25 weights + 1 bias = 26 values -> 2 tokens each; the mask marks 26 of 32
    assert batch["tokens"].shape[1:] == (sum(-(-w // 16) * c for c, w in
                                             ((8, 26), (6, 201), (4, 25), (20, 37), (10, 21))), 16)
    assert batch["mask"][0, :2].sum() == 26
    assert batch["positions"][0, :3].tolist() == [[0, 0, 0], [1, 0, 1], [2, 0, 2]]
    assert batch["positions"][0, 16].tolist() == [16, 1, 0]  # conv2 starts after conv1's 16 tokens


def test_split_by_model_is_disjoint_and_complete():
    parts = split_models(range(100), seed=3)
    assert sum(len(p) for p in parts.values()) == 100
    assert set().union(*parts.values()) == set(range(100))
    assert len(parts["train"]) == 70 and parts == split_models(range(100), seed=3)
    assert parts != split_models(range(100), seed=4)


def test_dataset_batches_and_inverse(filled):
    writer, written = filled
    ds = ZooDataset(writer.url, view="tokens", split="train", view_options={"tokensize": 8},
                    targets=("test_acc", "activation"))
    train_models = set(ds.model_ids.tolist())
    test = ZooDataset(writer.url, split="test")
    assert not train_models & set(test.model_ids.tolist())
    batch = ds.collate(ds.__getitems__(list(range(5))))
    assert batch["tokens"].shape[0] == 5 and batch["activation"].dtype == torch.int64
    rows = ds.decode(batch)
    z = zoo.open(writer.url)
    assert torch.equal(rows, torch.from_numpy(z.read_rows(ds.arch, ds.rows[:5])))
    module = z.layout(ds.arch).load_into(z.manifest.models[0].architecture.module(), rows[0]).eval()
    assert module(torch.randn(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_see_every_sample_once(filled, context):
    writer, _ = filled
    ds = ZooDataset(writer.url, augment=("permute", "rescale", "signflip"), targets=("epoch",))
    loader = DataLoader(ds, batch_size=7, shuffle=True, num_workers=2, multiprocessing_context=context,
                        collate_fn=ds.collate)
    seen, z = [], zoo.open(writer.url)
    for batch in loader:
        assert batch["weights"].shape[1] == ds.layout.size
        pairs = list(zip(batch["model_id"].tolist(), batch["epoch"].tolist()))
        stored = z.read_rows(ds.arch, [z.locate(m, int(e))[1] for m, e in pairs])
        assert not torch.equal(batch["weights"], torch.from_numpy(stored)), "the augmentation ran"
        seen += pairs
    assert sorted(seen) == sorted(zip(ds.model_ids.tolist(), ds.targets["epoch"].tolist()))
    assert len(seen) == len(set(seen)) == len(ds)


def test_dataset_errors(filled):
    writer, _ = filled
    with pytest.raises(zoo.ZooError, match=r"view: got 'graphs'; allowed: dws, flat, graph, nfn, state_dict, tokens"):  # noqa: E501
        ZooDataset(writer.url, view="graphs")
    with pytest.raises(zoo.ZooError, match=r"augment: got 'permute2'"):
        ZooDataset(writer.url, augment=("permute2",))
    with pytest.raises(zoo.ZooError, match=r"targets: unknown metadata column got 'accuracy'"):
        ZooDataset(writer.url, targets=("accuracy",))
