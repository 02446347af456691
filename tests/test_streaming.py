"""The streaming dataset (disjoint parts per DDP rank and worker, chunk-aware shuffling, bounded memory),
per-layer normalization, erase / two-view augmentation, split files and epoch selection."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import fill_units, tiny_manifest
from torch.utils.data import DataLoader

import zoo
from loaders import Normalizer, ZooDataset, ZooStream, load_split, save_split
from loaders.weight_augment import erase
from zoo.errors import ZooError


def _pairs(batches) -> list[tuple[int, int]]:
    out = []
    for b in batches:
        out += list(zip(b["model_id"].tolist(), b["epoch"].tolist()))
    return out


def _all_pairs(ds) -> list[tuple[int, int]]:
    return sorted(zip(ds.model_ids.tolist(), ds.targets["epoch"].long().tolist()))


def test_stream_ranks_and_workers_partition_every_epoch(filled):
    writer, _ = filled
    world = 3
    seen_by_epoch = []
    for epoch in range(2):
        seen = []
        for rank in range(world):
            s = ZooStream(writer.url, batch_size=4, buffer_size=9, rank=rank, world_size=world, seed=1,
                          targets=("epoch",), augment=("permute",))
            s.set_epoch(epoch)
            loader = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="fork")
            mine = _pairs(loader)
            assert len(mine) == s.num_samples
            assert abs(s.num_samples - len(s.indices) / world) < 1
            assert sum(1 for _ in DataLoader(s, batch_size=None, num_workers=2)) == s.num_batches(2)
            seen += mine
        assert len(seen) == len(set(seen)) == len(s.indices)
        assert sorted(seen) == _all_pairs(s)
        seen_by_epoch.append(seen)
    assert seen_by_epoch[0] != seen_by_epoch[1], "set_epoch changes the order"


def test_stream_order_is_chunk_aware_and_reproducible(filled):
    writer, _ = filled
    s = ZooStream(writer.url, batch_size=5, buffer_size=1_000, seed=3, targets=("epoch",))
    order = s.epoch_order()
    assert np.array_equal(order, ZooStream(writer.url, seed=3).epoch_order())
    shards = s._shards[order]
    # each shard's rows are contiguous in the epoch order (runs = number of distinct shards)
    assert int((shards[1:] != shards[:-1]).sum()) + 1 == len(set(shards.tolist()))
    assert not np.array_equal(order, np.sort(order)), "shards are shuffled"
    plain = ZooStream(writer.url, shuffle=False, batch_size=7)
    rows = np.concatenate([b["weights"].numpy() for b in plain])
    assert np.array_equal(rows, zoo.open(writer.url).read_rows(plain.arch, np.sort(plain.rows)))
    assert [len(b["model_id"]) for b in plain][-1] == len(plain.indices) % 7 or len(plain.indices) % 7 == 0
    dropped = ZooStream(writer.url, shuffle=False, batch_size=7, drop_last=True)
    assert sum(len(b["model_id"]) for b in dropped) == len(plain.indices) // 7 * 7 == 7 * dropped.num_batches()


@pytest.mark.parametrize("direct", [True, False], ids=["memory-mapped", "remote"])
def test_stream_memory_is_bounded_by_the_buffer(tmp_path, direct):
    # a zoo 16x the buffer: 40 models x 2 epochs of wide MLP rows (~0.3 MB each)
    m = tiny_manifest(architecture__hidden=[1024, 64], population__seeds={"start": 0, "stop": 10},
                      checkpoints__epochs=[0, 3])
    # remote: an fsspec URL, read a window at a time with ranged reads
    url = tmp_path / "wide.zoo" if direct else f"memory://{tmp_path.name}/wide.zoo"
    writer = zoo.create(url, m, group_size=5)
    fill_units(writer, writer.plan.units)
    width = writer.layout(writer.arch_ids[0]).size
    row_bytes = width * 4
    s = ZooStream(writer.url, batch_size=2, buffer_size=5, targets=("epoch",))
    assert len(s.indices) == 80 == 16 * s.buffer_size
    assert s.zoo.reader(s.arch).direct == direct
    reads = []
    real = s.zoo.read_rows
    s.zoo.read_rows = lambda arch, rows: reads.append(len(rows)) or real(arch, rows)
    seen = []
    tracemalloc.start()
    try:
        for batch in s:
            seen += _pairs([batch])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(seen) == _all_pairs(s)
    assert sum(reads) == 80 and max(reads) == (2 if direct else 5)
    # the zoo is 80 rows; held at once: a batch (memory-mapped), or two windows and a batch (remote), plus
    # while a window is read: its <= 2 shards of 5 rows fetched whole as bytes, and the read's result block
    window = s.buffer_size if not direct else 0
    assert (window or s.batch_size) * row_bytes <= peak < (6 * window + 2 * s.batch_size + 2) * row_bytes


def test_stream_errors(filled):
    writer, _ = filled
    with pytest.raises(zoo.ZooError, match="give both rank and world_size"):
        ZooStream(writer.url, rank=1)
    with pytest.raises(zoo.ZooError, match=r"rank 3 must lie in \[0, world_size=2\)"):
        ZooStream(writer.url, rank=3, world_size=2)
    with pytest.raises(zoo.ZooError, match="batch_size and buffer_size must be >= 1"):
        ZooStream(writer.url, batch_size=0)


def test_normalization_uses_the_train_split_is_stored_and_inverts(filled):
    writer, written = filled
    train = ZooDataset(writer.url, split="train", normalize="layer", seed=5)
    stats = list((writer.local / ".stats").glob("normalization-*.json"))
    assert len(stats) == 1
    # the statistics are those of the train split's rows, per tensor, not of the whole zoo
    rows = zoo.open(writer.url).read_rows(train.arch, np.sort(train.rows)).astype(np.float64)
    for t, mean, std in zip(train.layout.tensors, train.normalizer.mean, train.normalizer.std):
        assert mean == pytest.approx(rows[:, t.offset:t.stop].mean(), abs=1e-12)
        assert std == pytest.approx(rows[:, t.offset:t.stop].std(), rel=1e-9)
    every = np.asarray(zoo.open(writer.url).read_rows(train.arch, np.arange(60)), dtype=np.float64)
    assert train.normalizer.mean[0] != pytest.approx(every[:, :train.layout.tensors[0].size].mean(), abs=1e-9)
    # the test split reuses the train statistics (from the stored file)
    test = ZooDataset(writer.url, split="test", normalize="layer", seed=5)
    assert test.normalizer.mean == train.normalizer.mean and test.normalizer.std == train.normalizer.std
    batch = test.__getitems__([0, 1, 2])
    raw = torch.from_numpy(zoo.open(writer.url).read_rows(test.arch, test.rows[:3]))
    t0 = test.layout.tensors[0]
    expected = (raw[:, t0.offset:t0.stop] - train.normalizer.mean[0]) / train.normalizer.std[0]
    torch.testing.assert_close(batch["weights"][:, t0.offset:t0.stop], expected)
    torch.testing.assert_close(test.decode(batch), raw, rtol=0, atol=1e-6)
    # saved and loaded by path
    train.normalizer.save(tmp := writer.local / "norm.json")
    again = ZooDataset(writer.url, split="test", normalize=tmp, seed=5)
    assert again.normalizer.to_dict() == train.normalizer.to_dict()


def test_normalization_errors(filled, tmp_path):
    writer, _ = filled
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tensors": {"x": {"mean": 0, "std": 1}}}))
    with pytest.raises(zoo.ZooError, match=r"bad.json: 'tensors' must hold mean and std"):
        ZooDataset(writer.url, normalize=bad)
    split = tmp_path / "split.json"
    save_split(split, {"val": [0, 1], "test": [2]})
    with pytest.raises(zoo.ZooError, match="statistics come from the train split; the split has"):
        ZooDataset(writer.url, split_file=split, split="val", normalize="layer")
    with pytest.raises(zoo.ZooError, match="statistics cover 1 tensors; the layout has 6"):
        Normalizer(zoo.open(writer.url).layout("mlp"), [0.0], [1.0])


def test_split_file_round_trip_and_errors(filled, tmp_path):
    writer, _ = filled
    path = tmp_path / "split.json"
    save_split(path, {"train": range(0, 12), "val": [12, 13, 14], "test": [15, 16, 17, 18, 19]})
    ds = ZooDataset(writer.url, split="val", split_file=path, targets=("epoch",))
    assert set(ds.model_ids.tolist()) == {12, 13, 14} and len(ds) == 9
    assert load_split(path)["test"] == {15, 16, 17, 18, 19}
    path.write_text(json.dumps({"train": [1, 2], "test": [2]}))
    with pytest.raises(zoo.ZooError, match=r"split.json: model 2 is in both 'train' and 'test'"):
        ZooDataset(writer.url, split_file=path)
    path.write_text(json.dumps({"train": [1, 999]}))
    with pytest.raises(zoo.ZooError, match=r"split.json: model ids not in the store: \[999\]"):
        ZooDataset(writer.url, split_file=path)
    with pytest.raises(zoo.ZooError, match=r"split file .*missing.json"):
        ZooDataset(writer.url, split_file=tmp_path / "missing.json")


def test_epochs_filter(filled):
    writer, _ = filled
    ds = ZooDataset(writer.url, epochs=[0, 3], targets=("epoch",))
    assert sorted(set(ds.targets["epoch"].tolist())) == [0.0, 3.0] and len(ds) == 40
    with pytest.raises(zoo.ZooError, match=r"epochs: no checkpoints at epoch 2; the store has epochs \[0, 1, 3\]"):
        ZooDataset(writer.url, epochs=[2])


def test_two_view_gives_independent_augmentations_of_one_sample(filled):
    writer, _ = filled
    ds = ZooDataset(writer.url, view="tokens", augment=("permute", "two_view"),
                    where={"activation": "relu"}, view_options={"tokensize": 8})
    batch = ds.collate(ds.__getitems__([0, 1, 2, 3]))
    a, b = batch["view1"], batch["view2"]
    assert a["tokens"].shape == b["tokens"].shape and not torch.equal(a["tokens"], b["tokens"])
    raw = torch.from_numpy(ds.zoo.read_rows(ds.arch, ds.rows[:4]))
    for view in (a, b):  # each view is the same model, permuted: the same values, elsewhere
        rows = ds.decode(view)
        assert torch.equal(rows.sort(dim=1).values, raw.sort(dim=1).values) and not torch.equal(rows, raw)
    item = ds[0]
    assert item["view1"]["tokens"].shape == a["tokens"].shape[1:]


def test_erase_rows_and_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(200, 1000)
    out = erase(x, p=1.0, scale=(0.1, 0.2), generator=g)
    erased = (out == 0).sum(dim=1).float()
    assert erased.min() >= 100 and erased.max() <= 200
    # one contiguous span per row
    starts = ((out[:, 1:] == 0) & (out[:, :-1] != 0)).sum(1) + (out[:, 0] == 0).long()
    assert starts.max() == 1
    half = erase(x, p=0.5, generator=g)
    hit = (half == 0).any(dim=1).float().mean()
    assert 0.35 < hit < 0.65
    tokens = torch.ones(50, 40, 16)
    mask = torch.ones(40, 16, dtype=torch.bool)
    mask[:, 12:] = False
    out = erase(tokens * mask, p=1.0, scale=(0.1, 0.3), generator=g, mask=mask)
    assert (out[:, :, 12:] == 0).all() and ((out == 0) & mask).any(dim=(1, 2)).all()
    with pytest.raises(ZooError, match=r"erase: need 0 <= erase_p <= 1 .* got erase_p=2.0, erase_scale=\(0.02, 0.33\)"):
        erase(x, p=2.0)
    with pytest.raises(ZooError, match=r"expected rows \(B, P\) or tokens \(B, T, D\), got shape \(4,\)"):
        erase(torch.ones(4))


def test_dataset_erase_and_window_batches(filled):
    writer, _ = filled
    ds = ZooDataset(writer.url, view="tokens", augment=("erase", "window"), erase_p=1.0, windowsize=3,
                    view_options={"tokensize": 8})
    batch = ds.collate(ds.__getitems__(list(range(6))))
    assert batch["tokens"].shape[1] == 3 and batch["positions"].shape[:2] == (6, 3)
    flat = ZooDataset(writer.url, augment=("erase",), erase_p=1.0)
    rows = flat.__getitems__(list(range(6)))["weights"]
    assert ((rows == 0).sum(dim=1) > 0).all()


def test_stream_spawn_workers_see_every_sample_once(filled):
    writer, _ = filled
    s = ZooStream(writer.url, batch_size=4, buffer_size=10, targets=("epoch",), view="tokens",
                  view_options={"tokensize": 8})
    loader = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    seen = _pairs(loader)
    assert sorted(seen) == _all_pairs(s) and len(seen) == len(set(seen))


def test_stream_augmentation_is_reproduced_from_seed_epoch_and_worker(filled):
    writer, _ = filled
    augment = ("permute", "rescale", "signflip", "noise", "erase")

    def epoch(stream: ZooStream, e: int, workers: int) -> list[torch.Tensor]:
        stream.set_epoch(e)
        loader = DataLoader(stream, batch_size=None, num_workers=workers,
                            multiprocessing_context="fork" if workers else None)
        return [batch["weights"] for batch in loader]

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

    s = ZooStream(writer.url, batch_size=4, buffer_size=10, augment=augment, seed=5)
    for workers in (0, 2):
        torch.manual_seed(workers)  # torch's global generator plays no part
        first = epoch(s, 0, workers)
        assert same(epoch(s, 0, workers), first)
        assert same(epoch(ZooStream(writer.url, batch_size=4, buffer_size=10, augment=augment, seed=5), 0, workers),
                    first)
    # with the order fixed, another seed or epoch changes only the draws, and changes every batch
    fixed = {"batch_size": 4, "shuffle": False, "augment": augment}
    base = epoch(ZooStream(writer.url, seed=5, **fixed), 0, 2)
    raw = epoch(ZooStream(writer.url, seed=5, batch_size=4, shuffle=False), 0, 2)
    assert not any(torch.equal(x, y) for x, y in zip(base, raw)), "the augmentation ran"
    other_seed = epoch(ZooStream(writer.url, seed=6, **fixed), 0, 2)
    next_epoch = epoch(ZooStream(writer.url, seed=5, **fixed), 1, 2)
    for other in (other_seed, next_epoch):
        assert len(other) == len(base) and not any(torch.equal(x, y) for x, y in zip(other, base))
