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
    perms, scales = sym.draw(3, activation or arch.activation, g)
    out = sym.apply(rows, perms, scales)
    assert not torch.equal(out[0], out[1]), "each sample gets its own transform"
    x = torch.randn(2, *arch.input_shape, generator=g, dtype=torch.float64)
    with torch.no_grad():  # float64 evaluation of the float32 rows, as in test_architectures
        ref = module.double()(x)
        for b in range(3):
            other = arch.layout.load_into(arch.module().double(), out[b]).eval()
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


AUGMENT = ("permute", "rescale", "signflip", "noise", "erase")


def _epoch(ds: ZooDataset, epoch: int, workers: int) -> list[torch.Tensor]:
    """One epoch's augmented weights, batch by batch, in the sampler's (fixed) order."""
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=7, shuffle=False, num_workers=workers, collate_fn=ds.collate,
                        multiprocessing_context="fork" if workers else None)
    return [batch["weights"] for batch in loader]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_augmentation_is_reproduced_from_seed_and_epoch(filled):
    writer, _ = filled
    ds = ZooDataset(writer.url, augment=AUGMENT, seed=3)
    torch.manual_seed(0)
    first = _epoch(ds, 0, workers=0)
    stored = torch.from_numpy(ds.zoo.read_rows(ds.arch, ds.rows))
    assert not torch.equal(torch.cat(first), stored), "the augmentation ran"
    torch.manual_seed(1)  # torch's global generator plays no part
    assert _same(_epoch(ds, 0, workers=0), first)
    assert _same(_epoch(ds, 0, workers=2), first), "two workers augment each batch as one process does"
    assert _same(_epoch(ZooDataset(writer.url, augment=AUGMENT, seed=3), 0, workers=2), first)
    other_seed = _epoch(ZooDataset(writer.url, augment=AUGMENT, seed=4), 0, workers=0)
    next_epoch = _epoch(ds, 1, workers=2)
    for other in (other_seed, next_epoch):
        assert len(other) == len(first) and not any(torch.equal(x, y) for x, y in zip(other, first))


def test_datasets_with_verify_name_a_damaged_checkpoint(filled):
    from test_store import flip_byte

    from loaders import ZooStream

    writer, _ = filled
    u = writer.plan.units[5]
    flip_byte(writer, u, writer.layout(u.arch_id).size * 4 + 17, 0x40)  # inside slot 1's row
    model, epoch = u.model_ids[1], u.epoch
    message = rf"model {model} epoch {epoch} \({u.arch_id} row {u.row_start + 1}\): checksum \d+ != recorded \d+"
    plain = ZooDataset(writer.url)
    assert len(list(DataLoader(plain, batch_size=7, collate_fn=plain.collate))) == 9  # silent without verify
    ds = ZooDataset(writer.url, verify=True)
    damaged = int(((ds.model_ids == model) & (ds.rows == u.row_start + 1)).nonzero()[0][0])
    ds.__getitems__([i for i in range(len(ds)) if i != damaged])  # every other checkpoint reads
    with pytest.raises(zoo.StoreError, match=message):
        ds.__getitems__([0, damaged])
    with pytest.raises(zoo.StoreError, match=message):
        list(DataLoader(ds, batch_size=7, num_workers=2, collate_fn=ds.collate))
    with pytest.raises(zoo.StoreError, match=message):  # verify=True on the store carries over
        ZooDataset(zoo.open(writer.url, verify=True))[damaged]
    for direct in (True, False):  # memory-mapped batches, and windows read ahead
        stream = ZooStream(writer.url, batch_size=4, verify=True)
        stream.zoo.reader(stream.arch).direct = direct
        with pytest.raises(zoo.StoreError, match=message):
            list(stream)
    with pytest.raises(zoo.StoreError, match=message):  # normalization statistics are read with verify too
        ZooDataset(writer.url, split="train", normalize="layer", verify=True, split_fractions={"train": 1.0})
