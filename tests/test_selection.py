"""The dataset's pure steps on a metadata table alone: ``loaders.selection.select`` (architecture, epochs,
filter, split by model, activations, targets) and the stream's order (``loaders.order``). Invariants, not
golden outputs: every checkpoint of a split chosen once, a model's checkpoints in one split, parts disjoint and
covering, the same seed giving the same order."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders import order
from loaders.selection import choose_arch, select
from zoo.errors import ZooError

EPOCHS = (0, 1, 3)


def _metadata(models: int = 20, arch: str = "mlp", other: int = 4) -> pa.Table:
    """Checkpoints of ``models`` models of ``arch`` at ``EPOCHS`` and ``other`` models of another architecture,
    with rows in storage order (an architecture's rows count from 0)."""
    columns: dict[str, list] = {k: [] for k in ("model_id", "arch", "epoch", "row", "status", "test_acc",
                                                "activation", "dataset")}
    rows = {arch: 0, "cnn": 0}
    for m in range(models + other):
        a = arch if m < models else "cnn"
        for e in EPOCHS:
            columns["model_id"].append(m)
            columns["arch"].append(a)
            columns["epoch"].append(e)
            columns["row"].append(rows[a])
            rows[a] += 1
            columns["status"].append("diverged" if m % 7 == 3 else "ok")
            columns["test_acc"].append(None if m % 5 == 4 else 0.1 * e + 0.01 * m)
            columns["activation"].append("tanh" if m % 2 else None)
            columns["dataset"].append("mnist" if m % 3 else "cifar10")
    return pa.table(columns)


def _pairs(meta: pa.Table, sel) -> list[tuple[int, int]]:
    epochs = meta.column("epoch").to_pylist()
    return [(int(m), epochs[i]) for m, i in zip(sel.model_ids, sel.indices)]


def test_choose_arch():
    assert choose_arch(None, ["mlp"], "x.zoo") == "mlp"
    assert choose_arch("cnn", ["mlp", "cnn"], "x.zoo") == "cnn"
    with pytest.raises(ZooError, match=r"x.zoo holds several architectures; choose one with arch= \(mlp, cnn\)"):
        choose_arch(None, ["mlp", "cnn"], "x.zoo")
    with pytest.raises(ZooError, match="arch: "):
        choose_arch("vit", ["mlp", "cnn"], "x.zoo")


def test_all_selects_every_checkpoint_of_the_architecture_once():
    meta = _metadata()
    sel = select(meta, "mlp", activation="relu")
    assert len(sel) == 20 * len(EPOCHS)
    assert len(set(_pairs(meta, sel))) == len(sel)
    assert set(sel.model_ids.tolist()) == set(range(20))
    assert np.array_equal(sel.rows, np.asarray(meta.column("row").to_pylist())[sel.indices])
    assert np.all(np.diff(sel.indices) > 0), "metadata order"


@pytest.mark.parametrize("seed", [0, 1, 9])
def test_splits_partition_the_selection_by_model(seed):
    meta = _metadata(models=40)
    every = select(meta, "mlp", activation="relu", seed=seed)
    by_split = {s: select(meta, "mlp", activation="relu", split=s, seed=seed) for s in ("train", "val", "test")}
    pairs = [p for sel in by_split.values() for p in _pairs(meta, sel)]
    assert sorted(pairs) == sorted(_pairs(meta, every)), "every checkpoint in exactly one split"
    models = {s: set(sel.model_ids.tolist()) for s, sel in by_split.items()}
    assert not (models["train"] & models["val"] or models["train"] & models["test"] or models["val"] & models["test"])
    for s, sel in by_split.items():  # all checkpoints of each of its models
        assert len(sel) == len(models[s]) * len(EPOCHS)
        assert sel.parts == every.parts and set(sel.parts[s]) == models[s]
    assert by_split["train"].parts == select(meta, "mlp", activation="relu", split="train", seed=seed).parts
    # normalization rows: the train part of the selection, whichever split is served
    assert np.array_equal(np.sort(by_split["val"].train_rows), np.sort(by_split["train"].rows))


def test_epochs_and_where_filter_before_the_split():
    meta = _metadata()
    sel = select(meta, "mlp", activation="relu", epochs=[1, 3], where={"status": "ok", "dataset": ["mnist"]})
    epochs, status = meta.column("epoch").to_pylist(), meta.column("status").to_pylist()
    dataset = meta.column("dataset").to_pylist()
    assert len(sel) and all(epochs[i] in (1, 3) and status[i] == "ok" and dataset[i] == "mnist" for i in sel.indices)
    wanted = [i for i in range(meta.num_rows) if meta.column("arch")[i].as_py() == "mlp" and epochs[i] in (1, 3)
              and status[i] == "ok" and dataset[i] == "mnist"]
    assert sel.indices.tolist() == wanted
    # the split is drawn among the selected models only
    assert set().union(*sel.parts.values()) == set(sel.model_ids.tolist())


def test_selection_errors_name_the_field():
    meta = _metadata()
    with pytest.raises(ZooError, match=r"epochs: no checkpoints at epoch 2; the store has epochs \[0, 1, 3\]"):
        select(meta, "mlp", activation="relu", epochs=[0, 2])
    with pytest.raises(ZooError, match="where: unknown metadata column"):
        select(meta, "mlp", activation="relu", where={"nope": 1})
    with pytest.raises(ZooError, match="split: "):
        select(meta, "mlp", activation="relu", split="holdout")
    with pytest.raises(ZooError, match="targets: unknown metadata column"):
        select(meta, "mlp", activation="relu", targets=("nope",))


def test_split_file_and_published_split(tmp_path):
    meta = _metadata()
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [0, 1, 2], "test": [5]}))
    sel = select(meta, "mlp", activation="relu", split="test", split_file=path)
    assert set(sel.model_ids.tolist()) == {5} and len(sel) == len(EPOCHS)
    assert sel.split_key == {"file": str(path), "parts": {"train": [0, 1, 2], "test": [5]}}
    published = {"train": [3, 4], "val": [6]}
    sel = select(meta, "mlp", activation="relu", split="val", published=published)
    assert set(sel.model_ids.tolist()) == {6} and sel.split_key == {"published": published}
    # fractions override a published split
    sel = select(meta, "mlp", activation="relu", published=published, split_fractions={"train": 0.5, "test": 0.5})
    assert sorted(sel.parts) == ["test", "train"] and sel.split_key["seed"] == 0
    assert select(meta, "mlp", activation="relu", published={"val": [1]}).train_rows is None


def test_activations_and_targets():
    meta = _metadata()
    sel = select(meta, "mlp", activation="relu", targets=("test_acc", "dataset", "epoch"))
    assert sel.activation_names == ["relu", "tanh"]
    names = [sel.activation_names[c] for c in sel.activation_codes]
    assert names == ["tanh" if m % 2 else "relu" for m in sel.model_ids]
    acc = sel.targets["test_acc"]
    assert acc.dtype == np.float32 and np.isnan(acc[sel.model_ids % 5 == 4]).all()
    assert not np.isnan(acc[sel.model_ids % 5 != 4]).any()
    assert sel.classes == {"dataset": ["cifar10", "mnist"]} and sel.targets["dataset"].dtype == np.int64
    assert [sel.classes["dataset"][c] for c in sel.targets["dataset"]] == \
        ["mnist" if m % 3 else "cifar10" for m in sel.model_ids]
    assert sel.targets["epoch"].tolist() == [float(e) for e in meta.column("epoch").to_pylist()[:len(sel)]]
    no_column = select(meta.drop_columns(["activation"]), "cnn", activation="gelu")
    assert no_column.activation_names == ["gelu"] and not no_column.activation_codes.any()


# --- the stream's order -----------------------------------------------------------------------------------
shard_layouts = st.tuples(st.integers(0, 200), st.integers(1, 17), st.integers(0, 2**32 - 1), st.integers(0, 5))


def _layout(n: int, shard_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A selection of ``n`` distinct rows in arbitrary (metadata) order, and the shard of each."""
    rows = np.random.default_rng(seed).choice(4 * n + 1, size=n, replace=False).astype(np.int64)
    return rows // shard_rows, rows


@settings(max_examples=60, deadline=None)
@given(shard_layouts, st.booleans())
def test_epoch_order_is_a_permutation_keeping_shards_together(layout, shuffle):
    n, shard_rows, seed, epoch = layout
    shards, rows = _layout(n, shard_rows, seed)
    got = order.epoch_order(shards, rows, seed=seed, epoch=epoch, shuffle=shuffle)
    assert sorted(got.tolist()) == list(range(n))
    ordered = shards[got]
    runs = int((ordered[1:] != ordered[:-1]).sum()) + 1 if n else 0
    assert runs == len(set(shards.tolist())), "each shard's rows are contiguous"
    for s in set(shards.tolist()):  # rows in row order within their shard
        assert np.all(np.diff(rows[got][ordered == s]) > 0)
    again = order.epoch_order(shards.copy(), rows.copy(), seed=seed, epoch=epoch, shuffle=shuffle)
    assert np.array_equal(got, again), "the same seed and epoch give the same order"
    if not shuffle:
        assert np.array_equal(rows[got], np.sort(rows))


def test_epoch_order_changes_with_seed_and_epoch():
    shards, rows = _layout(300, 4, 0)
    base = order.epoch_order(shards, rows, seed=1, epoch=0)
    assert not np.array_equal(base, order.epoch_order(shards, rows, seed=1, epoch=1))
    assert not np.array_equal(base, order.epoch_order(shards, rows, seed=2, epoch=0))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(1, 5), st.integers(1, 4))
def test_parts_are_disjoint_cover_and_balanced(n, world, workers):
    epoch_order = np.random.default_rng(n).permutation(n)
    parts = [[order.part(epoch_order, rank, world, worker, workers) for worker in range(workers)]
             for rank in range(world)]
    flat = np.concatenate([p for rank in parts for p in rank])
    assert np.array_equal(flat, epoch_order), "disjoint, covering, contiguous in the epoch order"
    per_rank = [sum(len(p) for p in rank) for rank in parts]
    assert max(per_rank) - min(per_rank) <= 1
    assert per_rank == [order.part_size(n, rank, world) for rank in range(world)]
    for rank in parts:
        assert max(len(p) for p in rank) - min(len(p) for p in rank) <= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans())
def test_buffer_windows_shuffle_within_bounded_windows(n, size, seed, shuffle):
    positions = np.random.default_rng(seed).permutation(n)
    windows = order.buffer_windows(positions, size, seed=seed, epoch=2, rank=1, worker=0, shuffle=shuffle)
    assert all(0 < len(w) <= size for w in windows)
    assert [len(w) for w in windows[:-1]] == [size] * (len(windows) - 1)
    for i, w in enumerate(windows):  # each window holds exactly the rows of its slice of the part
        assert sorted(w.tolist()) == sorted(positions[i * size:(i + 1) * size].tolist())
        if not shuffle:
            assert np.array_equal(w, positions[i * size:(i + 1) * size])
    again = order.buffer_windows(positions, size, seed=seed, epoch=2, rank=1, worker=0, shuffle=shuffle)
    assert all(np.array_equal(a, b) for a, b in zip(windows, again))


def test_buffer_windows_differ_per_worker():
    positions = np.arange(500)
    mine = order.buffer_windows(positions, 500, seed=0, epoch=0, rank=0, worker=0)[0]
    assert not np.array_equal(mine, order.buffer_windows(positions, 500, seed=0, epoch=0, rank=0, worker=1)[0])
    assert not np.array_equal(mine, order.buffer_windows(positions, 500, seed=0, epoch=0, rank=1, worker=0)[0])


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("samples,batch_size,workers", [(0, 4, 1), (10, 4, 1), (10, 4, 3), (33, 5, 2), (7, 8, 4)])
def test_batch_count_is_what_each_worker_batches(samples, batch_size, workers, drop_last):
    expected = 0
    for p in (order.part(np.arange(samples), 0, 1, w, workers) for w in range(workers)):
        stop = len(p) - len(p) % batch_size if drop_last else len(p)
        expected += len(range(0, stop, batch_size))
    assert order.batch_count(samples, batch_size, workers, drop_last) == expected
