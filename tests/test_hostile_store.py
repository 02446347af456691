"""Hostile stores: shard files and ``zarr.json`` tampered with, as a store from a stranger may be.

What is caught on every read, without ``verify=True``: a shard index whose crc32c fails, an index entry out of
the one place the direct layout puts it (two entries swapped, an offset that would wrap past a bounds check, an
inner chunk of the wrong size, a truncated or extended file), a row index that is no row of the array. What
needs ``verify=True`` (one crc32 per row read) or ``zoo verify``: a flipped byte in a row's data. A ``zarr.json``
declaring 2^27 or 2^40 rows costs nothing per declared row. Every outcome is the stored values or a
``StoreError``, never another exception.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from conftest import fill_units, tiny_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo.errors import StoreError, ZooError
from zoo.store import verify
from zoo.store.rows import RowReader

ROOT = Path(__file__).resolve().parents[1]
ARCH = "mlp"
G = 3  # rows per shard
WIDTH = 485  # the tiny manifest's mlp on 8x8 digits
ROW_BYTES = WIDTH * 4
N_INDEX = G * 16 + 4  # the index (offset, nbytes per slot) and its crc32c
EMPTY = 2**64 - 1  # zarr's marker of a missing inner chunk
CHECKSUM = r"shard index checksum 0x[0-9a-f]{8} != stored 0x[0-9a-f]{8} \(the index that locates its rows is damaged\)"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list, np.ndarray]:
    """(store, its units, every row as zarr reads it): a real store of random rows, group size 3."""
    path = tmp_path_factory.mktemp("hostile") / "tiny.zoo"
    writer = zoo.create(path, tiny_manifest(), group_size=G, durable=False)
    fill_units(writer, writer.plan.units)
    return path, writer.plan.units, np.asarray(writer.weights(ARCH)[:])


@pytest.fixture
def store(pristine, tmp_path) -> tuple[Path, list, np.ndarray]:
    """A copy of the pristine store, to tamper with."""
    path = tmp_path / "tiny.zoo"
    shutil.copytree(pristine[0], path)
    return path, pristine[1], pristine[2]


def full_unit(units):
    return next(u for u in units if len(u.model_ids) == G)


def shard_file(path: Path, shard: int) -> Path:
    return path / "weights" / ARCH / "c" / str(shard) / "0"


def index_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data[-N_INDEX:-4], dtype="<u8").reshape(G, 2).copy()


def with_index(data: bytes, index: np.ndarray, fix_crc: bool = True) -> bytes:
    """``data`` with its shard index replaced; ``fix_crc``: with a matching crc32c, as a careful forger writes."""
    body = np.asarray(index, dtype="<u8").tobytes()
    crc = google_crc32c.value(body).to_bytes(4, "little") if fix_crc else data[-4:]
    return data[:-N_INDEX] + body + crc


def tamper_index(path: Path, shard: int, edit, fix_crc: bool = True) -> None:
    f = shard_file(path, shard)
    data = f.read_bytes()
    index = index_of(data)
    edit(index)
    f.write_bytes(with_index(data, index, fix_crc))


def swap(index: np.ndarray) -> None:
    index[[0, 1]] = index[[1, 0]]


#: Where a store is read: its local files (memory maps), or behind a URL reading one row of a shard (the index
#: alone, then the row's range) or all of it (the whole object at once).
MODES = ["local", "remote-index", "remote-whole"]


def opened(path: Path, mode: str, verify: bool = False) -> tuple[zoo.Zoo, str]:
    """The store opened in ``mode`` and the name its errors give it."""
    if mode == "local":
        return zoo.open(path, verify=verify), str(path)
    fs = fsspec.filesystem("memory")
    remote = f"/hostile/{path.parent.name}/{path.name}"
    if fs.exists(remote):
        fs.rm(remote, recursive=True)
    fs.put(str(path), remote, recursive=True)
    url = f"memory://{remote}"
    return zoo.open(url, verify=verify), url


def rows_for(mode: str, u) -> list[int]:
    return [u.row_start + 1] if mode == "remote-index" else [u.row_start + i for i in range(G)]


# --- the shard index ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_flipped_index_byte_is_a_checksum_error(store, mode):
    path, units, _ = store
    u = full_unit(units)
    shard = u.row_start // G
    f = shard_file(path, shard)
    data = bytearray(f.read_bytes())
    data[-N_INDEX + 3] ^= 0x01  # the low bytes of slot 0's offset: still a plausible index, but not this one
    f.write_bytes(bytes(data))
    z, name = opened(path, mode)
    with pytest.raises(StoreError, match=rf"^{re.escape(name)}: weights/{ARCH} shard c/{shard}/0: {CHECKSUM}; run "
                                         "`zoo verify` on the store$"):
        z.read_rows(ARCH, rows_for(mode, u))


@pytest.mark.parametrize("mode", MODES)
def test_swapped_index_entries_are_refused_without_verify(store, mode):
    path, units, expected = store
    u = full_unit(units)
    shard = u.row_start // G
    rows = [u.row_start + i for i in range(G)]
    tamper_index(path, shard, swap, fix_crc=False)  # as a careless edit leaves it: the checksum fails
    with pytest.raises(StoreError, match=CHECKSUM):
        opened(path, mode)[0].read_rows(ARCH, rows_for(mode, u))
    tamper_index(path, shard, lambda index: None)  # now with a matching checksum
    # zarr alone reads the two models swapped, silently
    swapped = np.asarray(zarr.open_array(path / "weights" / ARCH, mode="r")[u.row_start:u.row_start + G])
    assert np.array_equal(swapped, expected[rows][[1, 0, 2]])
    z, name = opened(path, mode)
    assert not z.verify
    with pytest.raises(StoreError, match=rf"^{re.escape(name)}: weights/{ARCH} shard c/{shard}/0: damaged index: "
                                         rf"slot 0 points at byte {ROW_BYTES}, where this layout stores it at byte 0 "
                                         r"\(the shard's rows in slot order\); index entries were moved or swapped; "
                                         "run `zoo verify` on the store$"):
        z.read_rows(ARCH, rows_for(mode, u))
    # the other shards still read
    other = next(x for x in units if x.unit_id != u.unit_id)
    assert np.array_equal(z.read_rows(ARCH, [other.row_start]), expected[[other.row_start]])
    report = verify(str(path))
    assert sorted((d.model_id, d.epoch) for d in report.damaged) == sorted((m, u.epoch) for m in u.model_ids)


@pytest.mark.parametrize("mode", MODES)
def test_offset_near_2_64_does_not_wrap_past_the_bounds_check(store, mode):
    """Before: ``offset + nbytes`` wrapped to 0, passed ``<= file size``, and the row read as all zeros."""
    path, units, _ = store
    u = full_unit(units)
    shard = u.row_start // G
    wrapped = 2**64 - ROW_BYTES

    def edit(index):
        index[1, 0] = wrapped

    tamper_index(path, shard, edit)
    z, name = opened(path, mode)
    with pytest.raises(StoreError, match=rf"^{re.escape(name)}: weights/{ARCH} shard c/{shard}/0: damaged index: "
                                         rf"slot 1 points at byte {wrapped}, where this layout stores it at byte "
                                         rf"{ROW_BYTES} "):
        z.read_rows(ARCH, rows_for(mode, u))


@pytest.mark.parametrize("mode", MODES)
def test_missing_chunk_marker_reads_as_the_fill_value_as_zarr_does(store, mode):
    path, units, expected = store
    u = full_unit(units)
    shard = u.row_start // G
    rows = [u.row_start + i for i in range(G)]

    def drop_last(index):
        index[2] = EMPTY

    tamper_index(path, shard, drop_last)
    by_zarr = np.asarray(zarr.open_array(path / "weights" / ARCH, mode="r")[u.row_start:u.row_start + G])
    assert not by_zarr[2].any() and np.array_equal(by_zarr[:2], expected[rows[:2]])
    got = opened(path, mode)[0].read_rows(ARCH, rows)
    assert np.array_equal(got, by_zarr)

    def half_empty(index):
        index[2, 0] = EMPTY
        index[2, 1] = ROW_BYTES

    tamper_index(path, shard, half_empty)
    z, name = opened(path, mode)
    with pytest.raises(StoreError, match=rf"^{re.escape(name)}: weights/{ARCH} shard c/{shard}/0: damaged index: "
                                         rf"slot 2 holds {ROW_BYTES} bytes at byte {EMPTY}; inner chunks of "
                                         rf"{ROW_BYTES} bytes \(row_length {WIDTH} in zarr.json\) or none \(offset "
                                         r"and size 2\^64-1\) expected"):
        z.read_rows(ARCH, rows)


def test_truncated_and_extended_shards_are_refused(store):
    path, units, _ = store
    u = full_unit(units)
    shard = u.row_start // G
    f = shard_file(path, shard)
    data = f.read_bytes()
    f.write_bytes(data[:-ROW_BYTES - N_INDEX] + data[-N_INDEX:])  # the last row cut, the index kept
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: weights/{ARCH} shard c/{shard}/0: damaged "
                                         rf"index: 3 rows of {ROW_BYTES} bytes \(row_length {WIDTH} in zarr.json\) "
                                         rf"need {3 * ROW_BYTES} bytes before the index; the file has "
                                         rf"{2 * ROW_BYTES}; run `zoo verify` on the store$"):
        zoo.open(path).read_rows(ARCH, [u.row_start])
    f.write_bytes(data + b"\0" * 8)  # bytes appended: the index is no longer where it is read
    with pytest.raises(StoreError, match=CHECKSUM):
        zoo.open(path).read_rows(ARCH, [u.row_start])
    f.write_bytes(data[:30])
    with pytest.raises(StoreError, match=rf"shard c/{shard}/0 is truncated \(30 bytes; its index alone takes "
                                         rf"{N_INDEX}\)$"):
        zoo.open(path).read_rows(ARCH, [u.row_start])


def test_compressed_layout_what_zarr_catches_and_what_needs_verify(tmp_path):
    """A compressed array is read by zarr, which checks the index checksum but knows no row's place: swapped
    entries under a matching checksum read as the other model's row unless ``verify=True``."""
    path = tmp_path / "zstd.zoo"
    writer = zoo.create(path, tiny_manifest(), group_size=G, compressor="zstd", durable=False)
    written = fill_units(writer, writer.plan.units)
    u = full_unit(writer.plan.units)
    rows = [u.row_start + i for i in range(G)]
    assert not zoo.open(path).reader(ARCH).direct
    tamper_index(path, u.row_start // G, swap, fix_crc=False)
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: weights/{ARCH}: cannot read rows "
                                         rf"{rows[0]}..{rows[-1]} \(ValueError: Stored and computed checksum do not "
                                         r"match"):
        zoo.open(path).read_rows(ARCH, rows)
    tamper_index(path, u.row_start // G, lambda index: None)  # a matching checksum
    assert np.array_equal(zoo.open(path).read_rows(ARCH, rows), written[u.unit_id][[1, 0, 2]])  # not caught
    with pytest.raises(StoreError, match=rf"model {u.model_ids[0]} epoch {u.epoch} \({ARCH} row {rows[0]}\): "
                                         r"checksum \d+ != recorded \d+; the stored weights are damaged"):
        zoo.open(path, verify=True).read_rows(ARCH, rows)


# --- row data ---------------------------------------------------------------------------------------------
def test_flipped_data_byte_is_caught_by_verify_only(store):
    path, units, expected = store
    u = full_unit(units)
    row, model = u.row_start + 1, u.model_ids[1]
    f = shard_file(path, u.row_start // G)
    data = bytearray(f.read_bytes())
    data[ROW_BYTES + 101] ^= 0x10  # inside slot 1's row
    f.write_bytes(bytes(data))
    # without verify the damaged row comes back: one value differs from what was written
    plain = zoo.open(path).read_rows(ARCH, [row])
    assert (plain.view(np.uint32) != expected[[row]].view(np.uint32)).sum() == 1
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: model {model} epoch {u.epoch} \({ARCH} row "
                                         rf"{row}\): checksum \d+ != recorded \d+; the stored weights are damaged "
                                         r"\(1 of 1 rows read\); run `zoo verify` on the store$"):
        zoo.open(path, verify=True).read_rows(ARCH, [row])
    report = verify(str(path))
    assert [(d.model_id, d.epoch) for d in report.damaged] == [(model, u.epoch)]


# --- row indexes --------------------------------------------------------------------------------------------
OUTSIDE = r"rows must lie in \[0, 72\); got {lo}\.\.{hi}: row {row} is outside"
BAD_ROWS = [
    ([-1], OUTSIDE.format(lo=-1, hi=-1, row=-1)),
    ([5, 72], OUTSIDE.format(lo=5, hi=72, row=72)),
    ([10**9], OUTSIDE.format(lo=10**9, hi=10**9, row=10**9)),
    ([2**70], OUTSIDE.format(lo=2**70, hi=2**70, row=2**70)),
    (np.array([2**64 - 1], dtype=np.uint64), OUTSIDE.format(lo=2**64 - 1, hi=2**64 - 1, row=2**64 - 1)),
    ([1.5], r"row 1\.5 is not an integer; rows are integers in \[0, 72\)"),
    (np.array([2.0]), r"row 2\.0 is not an integer"),
    ([True], r"row True is not an integer"),
    (["3"], r"row '3' is not an integer"),
    ([None], r"row None is not an integer"),
]


@pytest.mark.parametrize("rows, message", BAD_ROWS, ids=[repr(r) for r, _ in BAD_ROWS])
@pytest.mark.parametrize("mode", ["local", "remote-index"])
def test_bad_row_indexes_are_store_errors_everywhere(store, mode, rows, message):
    path, _, _ = store
    z, name = opened(path, mode)
    pattern = rf"^{re.escape(name)}: weights/{ARCH}: {message}"
    reader = z.reader(ARCH)
    calls = [lambda: z.read_rows(ARCH, rows), lambda: z.read_rows(ARCH, rows, verify=True),
             lambda: z.check_rows(ARCH, rows, np.zeros((1, WIDTH), np.float32)), lambda: reader.read(rows),
             lambda: reader.read_elements(rows, np.zeros((1, 1), np.int64))]
    if mode == "local":
        calls.append(lambda: reader.views(rows))
    for call in calls:
        with pytest.raises(StoreError, match=pattern):
            call()


def test_ragged_rows_are_a_store_error(store):
    z = zoo.open(store[0])
    with pytest.raises(StoreError, match=r"weights/mlp: rows \[\[0\], \[1, 2\]\]: not a sequence of integers"):
        z.read_rows(ARCH, [[0], [1, 2]])


def test_metadata_row_beyond_the_array_is_a_store_error_under_verify(store):
    """Before: ``Zoo.check_rows`` sized its tables by the array and indexed them by metadata rows: IndexError."""
    path, units, expected = store
    u = full_unit(units)
    fragment = path / "metadata" / f"unit-{u.unit_id:08d}.parquet"
    table = pq.read_table(fragment)
    rows = table.column("row").to_pylist()
    rows[0] = 10**9
    pq.write_table(table.set_column(table.schema.get_field_index("row"), "row",
                                    pa.array(rows, type=table.schema.field("row").type)), fragment)
    z = zoo.open(path, verify=True)
    arch, row = z.locate(u.model_ids[0], u.epoch)
    assert row == 10**9
    with pytest.raises(StoreError, match=rf"weights/{ARCH}: rows must lie in \[0, 72\); got 1000000000\.\.1000000000: "
                                         "row 1000000000 is outside"):
        z.read_rows(arch, [row])
    others = [u.row_start + 1, u.row_start + 2]
    assert np.array_equal(z.read_rows(ARCH, others), expected[others])  # the other rows still check
    report = verify(str(path))
    assert any(d.model_id == u.model_ids[0] and "metadata names row 1000000000" in d.reason for d in report.damaged)


# --- declared sizes -----------------------------------------------------------------------------------------
def set_array_json(path: Path, rows: int | None = None, width: int | None = None) -> None:
    """Rewrite ``weights/mlp/zarr.json`` to declare ``rows`` and/or ``width`` (shape and chunk shapes alike)."""
    f = path / "weights" / ARCH / "zarr.json"
    meta = json.loads(f.read_text())
    if rows is not None:
        meta["shape"][0] = rows
    if width is not None:
        meta["shape"][1] = width
        meta["chunk_grid"]["configuration"]["chunk_shape"][1] = width
        meta["codecs"][0]["configuration"]["chunk_shape"][1] = width
    f.write_text(json.dumps(meta))


def test_row_length_disagreeing_with_the_shard_files_is_a_store_error(store):
    path, _, _ = store
    set_array_json(path, width=WIDTH + 1)
    reader = RowReader(zarr.open_group(path, mode="r")[f"weights/{ARCH}"], path, store=str(path))
    assert reader.direct
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: weights/{ARCH} shard c/0/0: damaged index: "
                                         rf"slot 0 holds {ROW_BYTES} bytes at byte 0; inner chunks of "
                                         rf"{ROW_BYTES + 4} bytes \(row_length {WIDTH + 1} in zarr.json\)"):
        reader.read([0])
    with pytest.raises(StoreError):  # the store's attributes say otherwise, or its shards do
        zoo.open(path).read_rows(ARCH, [0])


PROBE = r"""
import json, resource, sys
from pathlib import Path
import numpy as np, zarr
from zoo.errors import StoreError
from zoo.store.rows import RowReader
import zoo

path, rows, width, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
expected = np.load(sys.argv[5])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = {}
reader = RowReader(zarr.open_group(path, mode="r")["weights/mlp"], path, store=str(path))
def attempt(name, call):
    try:
        out[name] = call()
    except StoreError as e:
        out[name] = "StoreError: " + str(e)
attempt("real", lambda: bool(np.array_equal(reader.read([0, 1, 4, 70]), expected[[0, 1, 4, 70]])))
attempt("missing shard", lambda: bool(not reader.read([rows - 1]).any()))  # no shard file: the fill value
attempt("views", lambda: len(reader.views([rows - 2, 3]) or []))
attempt("elements", lambda: reader.read_elements([rows - 1, 2], np.zeros((2, 1), np.int64)).tolist())
attempt("past the end", lambda: reader.read([rows]))
attempt("zoo", lambda: bool(np.array_equal(zoo.open(path).read_rows("mlp", [0]), expected[[0]])))
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmPeak:"):
        out["vm_peak"] = int(line.split()[1]) * 1024
print(json.dumps(out))
"""


def _probe(path: Path, expected: Path, rows: int, width: int, limit: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "MALLOC_ARENA_MAX": "2",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE), str(path), str(rows), str(width), str(limit),
                          str(expected)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def benign_peak(pristine, tmp_path_factory) -> int:
    """Address space a read of the untampered store takes (imports included), measured, not guessed."""
    where = tmp_path_factory.mktemp("probe")
    np.save(where / "expected.npy", pristine[2])
    result = _probe(pristine[0], where / "expected.npy", 72, WIDTH, 0)
    assert result["real"] is True and result["zoo"] is True, result
    return result["vm_peak"]


#: The address space limit over the benign read's peak (a table per declared row of 2^27 rows takes 1 GiB), and
#: what a hostile read may take beyond the benign one.
MARGIN, FEW_MB = 64 << 20, 16 << 20


@pytest.mark.parametrize("rows", [2**27, 2**40])
@pytest.mark.parametrize("compressed", [False, True], ids=["direct", "zstd"])
def test_declared_rows_cost_nothing_per_declared_row(pristine, tmp_path, benign_peak, rows, compressed):
    path = tmp_path / "tiny.zoo"
    if compressed:
        writer = zoo.create(path, tiny_manifest(), group_size=G, compressor="zstd", durable=False)
        fill_units(writer, writer.plan.units)
        expected = np.asarray(writer.weights(ARCH)[:])
    else:
        shutil.copytree(pristine[0], path)
        expected = pristine[2]
    np.save(tmp_path / "expected.npy", expected)
    set_array_json(path, rows=rows)
    result = _probe(path, tmp_path / "expected.npy", rows, WIDTH, benign_peak + MARGIN)
    assert result["real"] is True and result["missing shard"] is True and result["views"] in (0, 2)
    assert result["elements"] == [[0.0], [float(expected[2, 0])]]
    assert result["past the end"] == (f"StoreError: {path}: weights/{ARCH}: rows must lie in [0, {rows}); got "
                                      f"{rows}..{rows}: row {rows} is outside")
    assert result["zoo"] is True or result["zoo"].startswith("StoreError: ")  # its attributes say 72 rows
    assert result["vm_peak"] <= benign_peak + FEW_MB


def test_declared_width_of_2_40_is_a_store_error_not_an_allocation(pristine, tmp_path, benign_peak):
    path = tmp_path / "tiny.zoo"
    shutil.copytree(pristine[0], path)
    np.save(tmp_path / "expected.npy", pristine[2])
    set_array_json(path, rows=2**27, width=2**40)
    result = _probe(path, tmp_path / "expected.npy", 2**27, 2**40, benign_peak + MARGIN)
    assert result["real"].startswith(f"StoreError: {path}: weights/{ARCH} shard c/0/0: damaged index: slot 0 holds "
                                     f"{ROW_BYTES} bytes at byte 0; inner chunks of {2**42} bytes (row_length "
                                     f"{2**40} in zarr.json)")
    assert result["missing shard"] == (f"StoreError: {path}: weights/{ARCH}: 1 rows of row_length {2**40} (declared "
                                       "by its zarr.json) do not fit in memory")
    assert result["zoo"].startswith("StoreError: ")


# --- fuzzing ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_store(pristine, tmp_path_factory):
    """One copy of the store mutated in place by each example (and restored after it), local and remote."""
    path = tmp_path_factory.mktemp("fuzz") / "tiny.zoo"
    shutil.copytree(pristine[0], path)
    fs = fsspec.filesystem("memory")
    remote = "/hostile-fuzz/tiny.zoo"
    if fs.exists(remote):
        fs.rm(remote, recursive=True)
    fs.put(str(path), remote, recursive=True)
    yield path, remote, pristine[1], pristine[2]
    fs.rm(remote, recursive=True)


INTERESTING = st.sampled_from([0, 4, ROW_BYTES, 2 * ROW_BYTES, 3 * ROW_BYTES, ROW_BYTES - 4, 2**32, 2**63,
                               2**64 - ROW_BYTES, 2**64 - 1])
MUTATIONS = st.one_of(
    st.tuples(st.just("flip-index"), st.integers(1, N_INDEX), st.integers(1, 255)),
    st.tuples(st.just("flip-data"), st.integers(0, 3 * ROW_BYTES - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 3 * ROW_BYTES + N_INDEX - 1)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    # an index entry rewritten under a matching checksum: past the crc32c, into the entry checks
    st.tuples(st.just("entry"), st.integers(0, G - 1), st.integers(0, 1), INTERESTING),
)


def mutate(data: bytes, mutation: tuple) -> bytes:
    kind = mutation[0]
    if kind == "flip-index" or kind == "flip-data":
        at = len(data) - mutation[1] if kind == "flip-index" else mutation[1] % max(1, len(data) - N_INDEX)
        out = bytearray(data)
        out[at] ^= mutation[2]
        return bytes(out)
    if kind == "truncate":
        return data[:mutation[1] % len(data)]
    if kind == "extend":
        return data + mutation[1]
    _, slot, field, value = mutation
    index = index_of(data)
    index[slot, field] = value
    return with_index(data, index)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS, remote=st.booleans(), partial=st.booleans())
def test_a_mutated_shard_reads_its_rows_or_refuses(fuzz_store, mutation, remote, partial):
    """Equal values or a ``StoreError``, never another exception; without ``verify=True`` too, except that a
    flipped data byte then comes back in its row (one value differs)."""
    path, remote_root, units, expected = fuzz_store
    u = next(x for x in units if (len(x.model_ids) < G) == partial)
    shard = u.row_start // G
    f = shard_file(path, shard)
    original = f.read_bytes()
    mutated = mutate(original, mutation)
    fs = fsspec.filesystem("memory")
    target = f"{remote_root}/weights/{ARCH}/c/{shard}/0"
    try:
        if remote:
            fs.pipe_file(target, mutated)
        else:
            f.write_bytes(mutated)
        url = f"memory://{remote_root}" if remote else path
        rows = [u.row_start + i for i in range(G)]
        for check in (True, False):
            for batch in (rows, [rows[1]], [rows[0]]):
                try:
                    got = zoo.open(url, verify=check).read_rows(ARCH, batch)
                except ZooError:
                    continue
                assert got.shape == (len(batch), WIDTH)
                differ = int((got.view(np.uint32) != expected[batch].view(np.uint32)).sum())
                assert differ == 0 or (not check and mutation[0] == "flip-data" and differ == 1), mutation
    finally:
        if remote:
            fs.pipe_file(target, original)
        else:
            f.write_bytes(original)
