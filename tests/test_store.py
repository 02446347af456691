"""The store: exact round trips, the commit protocol under SIGKILL, concurrent writers, verify, compaction,
and a format that plain zarr + pyarrow can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import assert_same_zoo, fill_units, tiny_manifest

import zoo
from zoo.errors import StoreError, StoreNotFoundError, ZooError
from zoo.store import ZooWriter, verify

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, check=check, timeout=300)


def test_round_trip_is_bit_identical(filled):
    writer, written = filled
    z = zoo.open(writer.url)
    meta = z.metadata
    assert meta.num_rows == writer.plan.checkpoints == 20 * 3
    for u in writer.plan.units:
        rows = [u.row_start + i for i in range(len(u.model_ids))]
        got = z.read_rows(u.arch_id, rows)
        assert got.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), written[u.unit_id].view(np.uint32))
    # state_dict and module give the same bytes
    u = writer.plan.units[4]
    layout = z.layout(u.arch_id)
    sd = z.state_dict(u.model_ids[1], u.epoch)
    assert torch.equal(layout.flatten(sd), torch.from_numpy(written[u.unit_id][1]))
    module = z.module(u.model_ids[1], u.epoch)
    assert not module.training
    assert torch.equal(layout.flatten(module.state_dict()), torch.from_numpy(written[u.unit_id][1]))


def test_metadata_types_and_values(filled):
    writer, _ = filled
    meta = zoo.open(writer.url).metadata
    types = {f.name: f.type for f in meta.schema}
    assert types["model_id"] == pa.int64() and types["epoch"] == pa.int64() and types["arch"] == pa.string()
    assert types["lr"] == pa.float64() and types["batch_size"] == pa.int64() and types["activation"] == pa.string()
    assert types["hidden"] == pa.list_(pa.int64()) and types["test_acc"] == pa.float64()
    rows = meta.to_pylist()
    assert [(r["model_id"], r["epoch"]) for r in rows] == [(m, e) for m in range(20) for e in (0, 1, 3)]
    spec = writer.manifest.models[7]
    row = next(r for r in rows if r["model_id"] == 7)
    for k, v in spec.hparams.items():
        assert row[k] == v, k
    assert row["status"] == "ok" and row["device"] == "cpu" and row["wall_time_s"] == 1.5
    assert row["val_acc"] is None  # not reported: null, not a made-up number


def test_batched_reads_match_zarr_in_any_order(filled):
    writer, _ = filled
    z = zoo.open(writer.url)
    arch = z.arch_ids[0]
    array = z.weights(arch)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, array.shape[0], size=200)  # includes padding rows and repeats
    expected = np.stack([np.asarray(array[int(r)]) for r in rows])
    assert z.reader(arch).direct
    assert np.array_equal(z.read_rows(arch, rows), expected)


def test_compressed_store_reads_through_zarr(store_path, manifest):
    writer = zoo.create(store_path, manifest, group_size=4, compressor="zstd")
    written = fill_units(writer, writer.plan.units[:3])
    z = zoo.open(store_path)
    u = writer.plan.units[2]
    assert not z.reader(u.arch_id).direct
    got = z.read_rows(u.arch_id, [u.row_start + i for i in range(len(u.model_ids))])
    assert np.array_equal(got, written[u.unit_id])
    assert verify(store_path).ok


def test_reopen_resumes_and_refuses_other_manifests(filled, tmp_path):
    writer, _ = filled
    again = zoo.create(writer.url, tiny_manifest(), group_size=3)
    assert again.done_units() == {u.unit_id for u in writer.plan.units}
    with pytest.raises(StoreError, match=r"created with group size 3, not 4; rerun with --group-size 3"):
        zoo.create(writer.url, tiny_manifest(), group_size=4)
    with pytest.raises(StoreError, match=r"holds zoo 'tiny' built from another manifest"):
        zoo.create(writer.url, tiny_manifest(training__lr=0.5), group_size=3)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match=r"junk: exists and is not a weightzoo store"):
        zoo.create(tmp_path / "junk", tiny_manifest())


def test_open_errors(tmp_path):
    with pytest.raises(StoreNotFoundError, match=r"nothing.zoo: no weightzoo store here"):
        zoo.open(tmp_path / "nothing.zoo")
    assert not (tmp_path / "nothing.zoo").exists()
    with pytest.raises(ZooError, match=r"no committed checkpoint for model 0 at epoch 0"):
        z = zoo.create(tmp_path / "empty.zoo", tiny_manifest())
        z.state_dict(0, 0)


def test_write_unit_rejects_bad_input(store_path, manifest):
    writer = zoo.create(store_path, manifest, group_size=3)
    u = writer.plan.units[0]
    width = writer.layout(u.arch_id).size
    with pytest.raises(ZooError, match=rf"unit 0: weights of shape \(2, {width}\); expected \(3, {width}\)"):
        writer.write_unit(u, np.zeros((2, width), np.float32), [{}] * 2)
    with pytest.raises(ZooError, match=r"unknown metadata fields \['accuracy'\]"):
        writer.write_unit(u, np.zeros((3, width), np.float32), [{"accuracy": 1.0}] * 3)
    with pytest.raises(ZooError, match=r"status 'broken'; allowed: ok, diverged"):
        writer.write_unit(u, np.zeros((3, width), np.float32), [{"status": "broken"}] * 3)
    assert writer.metadata.num_rows == 0


def test_diverged_rows_are_kept(store_path, manifest):
    writer = zoo.create(store_path, manifest, group_size=3)
    u = writer.plan.units[0]
    rows = np.full((3, writer.layout(u.arch_id).size), np.nan, np.float32)
    writer.write_unit(u, rows, [{"status": "diverged", "train_loss": float("nan")}] * 3)
    z = zoo.open(store_path)
    assert z.metadata.column("status").to_pylist() == ["diverged"] * 3
    assert np.isnan(z.read_rows(u.arch_id, [u.row_start])).all()
    assert verify(store_path).ok


WRITER = """
import sys, os, signal
import numpy as np
from conftest import tiny_manifest, fill_units
import zoo
path, first, last, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
writer = zoo.create(path, tiny_manifest(), group_size=3)
units = writer.plan.units
for u in units[first:last]:
    if u.unit_id in writer.done_units():
        continue
    rng = np.random.default_rng(u.unit_id)
    rows = rng.standard_normal((len(u.model_ids), writer.layout(u.arch_id).size)).astype(np.float32)
    die = (lambda: os.kill(os.getpid(), signal.SIGKILL)) if u.unit_id == kill_at else None
    writer.write_unit(u, rows, [{"test_acc": 0.5}] * len(u.model_ids), _after_weights=die)
"""


def test_sigkill_between_weights_and_metadata_leaves_no_half_checkpoint(store_path):
    result = _run(WRITER, str(store_path), "0", "10", "4", check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    report = verify(store_path)
    assert report.ok and report.checked == 4 * 3
    z = zoo.open(store_path)
    assert z.done_units() == {0, 1, 2, 3}  # unit 4's weights were written, but without metadata it does not exist
    assert "4 of" in report.notes[-1]
    # its fragment was written under a temporary name, never renamed: readers ignore it, verify notes it
    assert [p.name.startswith(".tmp-") for p in (store_path / "metadata").iterdir()].count(True) == 1
    assert "1 temporary metadata file(s) from an interrupted commit (ignored)" in report.notes
    # rerun: completes exactly the missing units, and the result equals an uninterrupted writer's
    _run(WRITER, str(store_path), "0", "10", "-1")
    clean = store_path.parent / "clean.zoo"
    _run(WRITER, str(clean), "0", "10", "-1")
    a, b = zoo.open(store_path), zoo.open(clean)
    assert a.done_units() == b.done_units() == set(range(10))
    arch = a.arch_ids[0]
    rows = a.metadata.column("row").to_pylist()
    assert np.array_equal(a.read_rows(arch, rows), b.read_rows(arch, rows))
    assert verify(store_path).ok


def test_two_concurrent_writers_complete_the_store(store_path):
    zoo.create(store_path, tiny_manifest(), group_size=3)
    n = len(zoo.open(store_path).plan.units)
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(store_path), str(lo), str(hi), "-1"],
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
                              stderr=subprocess.PIPE, text=True)
             for lo, hi in ((0, n // 2), (n // 2, n))]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    z = zoo.open(store_path)
    assert z.done_units() == set(range(n))
    keys = list(zip(z.metadata.column("model_id").to_pylist(), z.metadata.column("epoch").to_pylist()))
    assert len(keys) == len(set(keys)) == z.plan.checkpoints
    assert verify(store_path).ok


def flip_byte(writer, unit, offset: int, mask: int) -> None:
    """XOR one byte of the shard file holding ``unit`` (a negative offset counts from the end)."""
    array = writer.weights(unit.arch_id)
    shard = Path(writer.url) / array.path / array.metadata.encode_chunk_key((unit.row_start // 3, 0))
    data = bytearray(shard.read_bytes())
    data[offset] ^= mask
    shard.write_bytes(bytes(data))


def test_flipped_byte_is_named_by_verify(filled):
    writer, _ = filled
    u = writer.plan.units[5]
    flip_byte(writer, u, writer.layout(u.arch_id).size * 4 + 17, 0x40)  # inside slot 1's row
    report = verify(writer.url)
    assert not report.ok
    assert [(d.model_id, d.epoch) for d in report.damaged] == [(u.model_ids[1], u.epoch)]
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "verify", writer.url], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 1
    assert f"damaged: model {u.model_ids[1]} epoch {u.epoch}" in out.stdout


def test_corrupt_shard_index_damages_every_row_of_the_shard(filled):
    writer, _ = filled
    u = writer.plan.units[2]
    flip_byte(writer, u, -10, 0xFF)  # in the shard index
    report = verify(writer.url)
    assert sorted((d.model_id, d.epoch) for d in report.damaged) == sorted((m, u.epoch) for m in u.model_ids)


def test_compaction_keeps_every_row(filled):
    writer, _ = filled
    before = zoo.open(writer.url).metadata
    merged = ZooWriter(writer.url).compact()
    assert merged == len(writer.plan.units)
    files = sorted(p.name for p in (Path(writer.url) / "metadata").iterdir())
    assert len(files) == 1 and files[0].startswith("part-")
    after = zoo.open(writer.url).metadata
    assert after.equals(before)
    # new units after compaction land beside the part; a crash mid-compaction (part + old fragments) dedupes
    assert verify(writer.url).ok


def test_compaction_crash_window_dedupes(filled):
    writer, _ = filled
    before = zoo.open(writer.url).metadata
    meta_dir = Path(writer.url) / "metadata"
    saved = {p.name: p.read_bytes() for p in meta_dir.iterdir()}
    ZooWriter(writer.url).compact()
    for name, data in saved.items():  # as if the process died before removing the fragments
        (meta_dir / name).write_bytes(data)
    assert zoo.open(writer.url).metadata.equals(before)


PLAIN_READER = """
import json, sys, zlib
import numpy as np, pyarrow.parquet as pq, zarr
store = sys.argv[1]
group = zarr.open_group(store, mode="r")
attrs = group.attrs["weightzoo"]
meta = pq.read_table(store + "/metadata").to_pylist()
out = {}
for row in meta:
    array = group[attrs["architectures"][row["arch"]]["array"]]
    values = np.asarray(array[row["row"]])
    assert zlib.crc32(values.astype("<f4").tobytes()) == row["crc32"]
    layout = attrs["architectures"][row["arch"]]["layout"]["tensors"]
    first = layout[0]
    kernel = values[first["offset"]:first["offset"] + int(np.prod(first["shape"]))].reshape(first["shape"])
    out[f'{row["model_id"]}/{row["epoch"]}'] = [float(values.sum()), kernel.shape[0]]
assert not any(m.startswith(("zoo", "builders", "loaders")) for m in sys.modules), "imported weightzoo"
print(json.dumps(out))
"""


def test_plain_zarr_and_pyarrow_read_every_checkpoint(filled):
    writer, written = filled
    out = json.loads(subprocess.run([sys.executable, "-c", PLAIN_READER, writer.url], capture_output=True, text=True,
                                    check=True, cwd="/").stdout)
    assert len(out) == writer.plan.checkpoints
    first_layer = writer.layout(writer.arch_ids[0]).tensors[0].shape[0]
    for u in writer.plan.units:
        for slot, m in enumerate(u.model_ids):
            total, rows = out[f"{m}/{u.epoch}"]
            assert total == pytest.approx(float(written[u.unit_id][slot].sum()), rel=1e-6)
            assert rows == first_layer


def test_fsspec_url_store_round_trip(manifest):
    """A store behind an fsspec URL (here the in-memory filesystem) is written and read through zarr's
    fsspec store and fsspec file access: the same path an s3:// or hf:// store takes."""
    import fsspec

    url = "memory://weightzoo-test/tiny.zoo"
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)
    writer = zoo.create(url, manifest, group_size=3)
    written = fill_units(writer, writer.plan.units[:4])
    z = zoo.open(url)
    assert z.reader(z.arch_ids[0]).remote is not None  # remote: ranged reads of the shard objects
    assert z.done_units() == {0, 1, 2, 3}
    u = writer.plan.units[3]
    got = z.read_rows(u.arch_id, [u.row_start + 2, u.row_start, u.row_start + 2])
    assert np.array_equal(got, written[u.unit_id][[2, 0, 2]])
    sd = z.state_dict(u.model_ids[1], u.epoch)
    assert torch.equal(z.layout(u.arch_id).flatten(sd), torch.from_numpy(written[u.unit_id][1]))
    assert verify(url).ok
    fs.rm(url, recursive=True)


def test_verify_on_read_names_the_damaged_model_and_epoch(filled):
    writer, written = filled
    u = writer.plan.units[5]
    flip_byte(writer, u, writer.layout(u.arch_id).size * 4 + 17, 0x40)  # inside slot 1's row
    model, epoch, row = u.model_ids[1], u.epoch, u.row_start + 1
    plain = zoo.open(writer.url)
    layout = plain.layout(u.arch_id)
    # without verify the damaged row comes back silently: one value differs from what was written
    damaged = layout.flatten(plain.state_dict(model, epoch)).numpy()
    assert (damaged.view(np.uint32) != written[u.unit_id][1].view(np.uint32)).sum() == 1
    checked = zoo.open(writer.url, verify=True)
    message = rf"tiny.zoo: model {model} epoch {epoch} \({u.arch_id} row {row}\): checksum \d+ != recorded \d+"
    with pytest.raises(StoreError, match=message):
        checked.state_dict(model, epoch)
    with pytest.raises(StoreError, match=message):
        checked.module(model, epoch)
    with pytest.raises(StoreError, match=message):
        checked.read_rows(u.arch_id, [u.row_start, row])
    with pytest.raises(StoreError, match=message):
        plain.read_rows(u.arch_id, [row], verify=True)
    # the undamaged rows of that shard, and every other checkpoint, read (and check) as written
    sd = checked.state_dict(u.model_ids[0], epoch)
    assert torch.equal(layout.flatten(sd), torch.from_numpy(written[u.unit_id][0]))
    for other in writer.plan.units:
        if other.unit_id != u.unit_id:
            got = checked.read_rows(other.arch_id, [other.row_start + i for i in range(len(other.model_ids))])
            assert np.array_equal(got.view(np.uint32), written[other.unit_id].view(np.uint32))
    # padding rows (no checkpoint, so no checksum) pass
    partial = next(x for x in writer.plan.units if len(x.model_ids) < 3)
    padding = checked.read_rows(partial.arch_id, [partial.row_start + 2])
    assert not padding.any()


def test_store_damage_and_bad_requests_are_store_errors(filled):
    writer, _ = filled
    u = writer.plan.units[2]
    z = zoo.open(writer.url)
    rows = z.reader(u.arch_id).rows
    with pytest.raises(StoreError, match=rf"weights/{u.arch_id}: rows must lie in \[0, {rows}\); got -1..{rows}"):
        z.read_rows(u.arch_id, [-1, rows])
    flip_byte(writer, u, -10, 0xFF)  # an inner chunk's size in the shard index
    with pytest.raises(StoreError, match=r"c/\d+/0: shard index checksum 0x[0-9a-f]{8} != stored 0x[0-9a-f]{8} "
                                         r"\(the index that locates its rows is damaged\); run `zoo verify` on "
                                         r"the store"):
        zoo.open(writer.url).read_rows(u.arch_id, [u.row_start])
    array = writer.weights(u.arch_id)
    shard = Path(writer.url) / array.path / array.metadata.encode_chunk_key((u.row_start // 3, 0))
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(StoreError, match=r"c/\d+/0 is truncated \(20 bytes; its index alone takes 52\)"):
        zoo.open(writer.url).read_rows(u.arch_id, [u.row_start])


def test_errors_a_user_can_provoke_are_zoo_errors(filled):
    from zoo.errors import UnknownNameError
    from zoo.registry import Registry
    from zoo.store import format as fmt

    writer, _ = filled
    layout = writer.layout(writer.arch_ids[0])
    with pytest.raises(UnknownNameError, match=r"layout tensor: got 'fc1.wieght'; allowed: .*fc1.weight.* "
                                               r"\(did you mean 'fc1.weight'\?\)"):
        layout["fc1.wieght"]
    with pytest.raises(KeyError):  # still a KeyError for code that asks ``except KeyError``
        layout["nope"]
    registry: Registry[int] = Registry("thing")
    registry.register("One", 1)
    with pytest.raises(ZooError, match=r"thing 'one' is already registered; register it under another name"):
        registry.register("one", 2)
    with pytest.raises(ZooError, match=r"hyperparameter column 'epoch' collides with a store column; the store's "
                                       r"own columns are model_id, epoch, "):
        fmt.metadata_schema({"epoch": int})
    with pytest.raises(ZooError, match=r"hyperparameter column 'widths': type 'dict' has no metadata column type; "
                                       r"allowed: str, float, int, bool, list"):
        fmt.metadata_schema({"widths": dict})


def test_resume_state_of_another_group_is_a_store_error(manifest):
    from builders.population import Population

    specs = manifest.models[:2]
    pop = Population(list(specs), specs[0].architecture.layout)
    state = pop.state_dict()
    state["model_ids"] = [7, 8]
    with pytest.raises(StoreError, match=r"resume state holds models \[7, 8\], this population trains models "
                                         r"\[0, 1\]; remove the store's .build/ folder"):
        pop.load_state_dict(state)


def test_shards_written_directly_are_the_bytes_zarr_writes(tmp_path, monkeypatch):
    """The writer encodes a unit's shard itself (rows.encode_shard); the files must be byte for byte what zarr's
    sharding codec writes for the same rows: partial groups (padding rows), a row of zeros (left out, as zarr
    leaves out a chunk equal to the fill value) and a unit of zeros only (no shard file at all)."""
    import zoo.store.writer as writer_module

    manifest = tiny_manifest()  # 20 models, groups of 8: the last group of each architecture is partial
    rows = {}
    rng = np.random.default_rng(3)
    for name, direct in (("direct.zoo", True), ("zarr.zoo", False)):
        if not direct:
            monkeypatch.setattr(writer_module, "fast_path_ok", lambda array: False)
        w = zoo.create(tmp_path / name, manifest, group_size=8)
        for u in w.plan.units:
            key = u.unit_id
            if key not in rows:
                block = rng.standard_normal((len(u.model_ids), w.layout(u.arch_id).size)).astype(np.float32)
                if key == 1:
                    block[2] = 0.0  # a checkpoint of zeros
                if key == 2:
                    block[:] = 0.0  # every row the fill value
                if key == 3:
                    block[0] = -0.0  # not the fill value bit for bit: zarr keeps the row
                    block[1, :4] = [np.nan, np.inf, -np.inf, 1e-45]
                rows[key] = block
            w.write_unit(u, rows[key], [{"test_acc": 0.5}] * len(u.model_ids))
    direct_files = sorted(p.relative_to(tmp_path / "direct.zoo") for p in (tmp_path / "direct.zoo" / "weights")
                          .rglob("*") if p.is_file())
    zarr_files = sorted(p.relative_to(tmp_path / "zarr.zoo") for p in (tmp_path / "zarr.zoo" / "weights")
                        .rglob("*") if p.is_file())
    assert direct_files == zarr_files
    shards = [rel for rel in direct_files if "c" in rel.parts]
    assert len(shards) == len(rows) - 1  # one shard per unit; unit 2 (zeros only) has none
    for rel in direct_files:
        assert (tmp_path / "direct.zoo" / rel).read_bytes() == (tmp_path / "zarr.zoo" / rel).read_bytes(), rel
    z = zoo.open(tmp_path / "direct.zoo", verify=True)
    for u in z.plan.units:
        got = z.read_rows(u.arch_id, range(u.row_start, u.row_start + len(u.model_ids)))
        assert np.array_equal(got.view(np.uint32), rows[u.unit_id].view(np.uint32))


def _random_rows(writer, unit, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(unit.model_ids), writer.layout(unit.arch_id).size)).astype(np.float32)


def test_round_trip_keeps_every_bit_of_special_values(store_path, manifest):
    """NaN payloads, signed zeros, infinities and subnormals come back bit for bit, and their checksums verify."""
    writer = zoo.create(store_path, manifest, group_size=3)
    units = writer.plan.units[:2]
    blocks = [_random_rows(writer, u, u.unit_id) for u in units]
    bits = blocks[0].view(np.uint32)
    bits[0, :6] = [0x7FC00001, 0xFFF00F00, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000]  # NaNs, -0, min, +-inf
    blocks[0][1] = -0.0  # a whole row of -0.0 (not the fill value)
    blocks[1][2] = 0.0  # a whole row of +0.0 (the fill value: no inner chunk, reads as 0.0)
    writer.write_units(list(zip(units, blocks, [[{"test_acc": 0.5}] * 3] * 2)))
    z = zoo.open(store_path, verify=True)
    for u, block in zip(units, blocks):
        got = z.read_rows(u.arch_id, range(u.row_start, u.row_start + 3))
        assert np.array_equal(got.view(np.uint32), block.view(np.uint32))
        plain = np.asarray(z.weights(u.arch_id)[u.row_start:u.row_start + 3])  # zarr's own decoding agrees
        assert np.array_equal(plain.view(np.uint32), block.view(np.uint32))
    assert verify(store_path).ok


def test_write_units_is_write_unit_in_fewer_waits(tmp_path, manifest):
    """A batch commits the same files as unit-by-unit writes: shard bytes and metadata alike."""
    one, batched = (zoo.create(tmp_path / name, manifest, group_size=3) for name in ("one.zoo", "batch.zoo"))
    units = one.plan.units
    items = [(u, _random_rows(one, u, u.unit_id), [{"test_acc": 0.25, "device": "cpu"}] * len(u.model_ids))
             for u in units]
    for item in items:
        one.write_unit(*item)
    for lo in range(0, len(items), 4):
        batched.write_units(items[lo:lo + 4])
    assert_same_zoo(one.url, batched.url)
    shards = sorted(p.relative_to(tmp_path / "one.zoo") for p in (tmp_path / "one.zoo" / "weights").rglob("*")
                    if p.is_file())
    for rel in shards:
        assert (tmp_path / "one.zoo" / rel).read_bytes() == (tmp_path / "batch.zoo" / rel).read_bytes(), rel


def test_write_units_checks_every_unit_before_writing_any(store_path, manifest):
    writer = zoo.create(store_path, manifest, group_size=3)
    a, b = writer.plan.units[:2]
    good = (a, _random_rows(writer, a, 0), [{}] * 3)
    with pytest.raises(ZooError, match=r"unit 1: unknown metadata fields \['acc'\]"):
        writer.write_units([good, (b, _random_rows(writer, b, 1), [{"acc": 1.0}] * 3)])
    with pytest.raises(ZooError, match=r"units \[0\] appear twice in one batch"):
        writer.write_units([good, good])
    assert not list((store_path / "weights").rglob("c/*")) and writer.metadata.num_rows == 0


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_commit_order_data_durable_before_its_fragment_is_visible(store_path, manifest, monkeypatch):
    """For every unit: its shard and its temporary fragment are fsynced (the call returned) before the fragment
    is renamed into place, and the metadata folder is fsynced after the batch's last rename."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        events.append(("fsync", path))  # recorded once durable

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    writer = zoo.create(store_path, manifest, group_size=3)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    units = writer.plan.units[:5]
    writer.write_unit(units[0], _random_rows(writer, units[0], 0), [{}] * 3)
    writer.write_units([(u, _random_rows(writer, u, u.unit_id), [{}] * len(u.model_ids)) for u in units[1:]])
    meta = str((store_path / "metadata").resolve())
    array = writer.weights(units[0].arch_id)
    for u in units:
        shard = str((store_path / array.path / array.metadata.encode_chunk_key((u.row_start // 3, 0))).resolve())
        fragment = f"{meta}/unit-{u.unit_id:08d}.parquet"
        renamed = events.index(("rename", str(store_path / "metadata" / f"unit-{u.unit_id:08d}.parquet")))
        assert events.index(("fsync", shard)) < renamed
        tmp = [i for i, (kind, path) in enumerate(events) if kind == "fsync" and path.startswith(f"{meta}/.tmp-")
               and path.endswith(fragment.rsplit("/", 1)[-1])]
        assert len(tmp) == 1 and tmp[0] < renamed
    dir_syncs = [i for i, e in enumerate(events) if e == ("fsync", meta)]
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(dir_syncs) == 2  # one for the single unit, one for the batch of four
    assert renames[0] < dir_syncs[0] < renames[1] and renames[-1] < dir_syncs[1]
    assert verify(store_path).ok


def test_durable_false_never_fsyncs_and_keeps_the_format(tmp_path, manifest, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    durable = zoo.create(tmp_path / "durable.zoo", manifest, group_size=3)
    assert durable.durable
    fill_units(durable, durable.plan.units)
    assert len(calls) == 3 * len(durable.plan.units)  # shard, fragment, metadata folder
    calls.clear()
    fast = zoo.create(tmp_path / "fast.zoo", manifest, group_size=3, durable=False)
    fill_units(fast, fast.plan.units)
    assert calls == []
    assert_same_zoo(durable.url, fast.url)
    assert verify(fast.url).ok


BATCH_WRITER = """
import os, signal, sys
import numpy as np
from conftest import tiny_manifest
import zoo
path, kill_at_rename = sys.argv[1], int(sys.argv[2])
writer = zoo.create(path, tiny_manifest(), group_size=3)
renames = [0]
real_replace = os.replace
def replace(src, dst):
    renames[0] += 1
    if renames[0] == kill_at_rename:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
todo = [u for u in writer.plan.units if u.unit_id not in writer.done_units()]
for lo in range(0, len(todo), 4):
    batch = []
    for u in todo[lo:lo + 4]:
        rows = np.random.default_rng(u.unit_id).standard_normal((len(u.model_ids), writer.layout(u.arch_id).size))
        batch.append((u, rows.astype(np.float32), [{"test_acc": 0.5}] * len(u.model_ids)))
    writer.write_units(batch)
"""


def test_sigkill_between_the_renames_of_a_batch_commits_whole_units_only(store_path):
    """Killed after two of a batch's four fragments were renamed into place: those two units are committed in
    full, the other two are absent (their shards durable, their fragments temporary); a rerun completes exactly
    them, and the store equals one written without interruption."""
    result = _run(BATCH_WRITER, str(store_path), "7", check=False)  # the second batch's third rename
    assert result.returncode == -signal.SIGKILL, result.stderr
    z = zoo.open(store_path)
    assert z.done_units() == {0, 1, 2, 3, 4, 5}
    report = verify(store_path)
    assert report.ok and report.checked == 6 * 3
    assert "2 temporary metadata file(s) from an interrupted commit (ignored)" in report.notes
    _run(BATCH_WRITER, str(store_path), "0")
    clean = store_path.parent / "clean.zoo"
    _run(BATCH_WRITER, str(clean), "0")
    assert zoo.open(store_path).done_units() == set(range(len(z.plan.units)))
    assert_same_zoo(store_path, clean)
    assert ZooWriter(store_path).clean_temporary() == 2
    assert verify(store_path).ok


def test_a_forked_child_writes_with_its_own_helper_threads(store_path, manifest):
    """The writer's helper threads are per process: a child forked after the parent wrote commits too (no wait
    on threads that only exist in the parent)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    writer = zoo.create(store_path, manifest, group_size=3)
    u0, u1 = writer.plan.units[:2]
    writer.write_unit(u0, _random_rows(writer, u0, 0), [{}] * 3)
    child = multiprocessing.get_context("fork").Process(
        target=writer.write_unit, args=(u1, _random_rows(writer, u1, 1), [{}] * 3))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert zoo.open(store_path).done_units() == {0, 1}


def test_torch_version_is_recorded_alike_with_or_without_torch_imported():
    """Writers that never import torch (importers' workers) record the torch_version spelling a build records."""
    out = _run("""
        import sys
        from zoo.versions import torch_version
        before = torch_version()
        assert "torch" not in sys.modules
        import torch
        print(before == torch.__version__ == torch_version())
    """).stdout
    assert out.strip() == "True"
