"""Batched row reads: one planned read per shard, never one zarr call per row.

zarr-python reads a sharded array chunk by chunk through asyncio; for rows of
a few kilobytes that costs far more than the bytes (about 600 rows/s measured,
against ~100,000 rows/s from a memmap). For the layout this library writes
(uncompressed sharded arrays of one-row inner chunks) a row is a contiguous
byte range whose offset the shard index gives. ``RowReader`` groups the
requested rows by shard, keeps each shard's index (read and checked once) in
a table of the shards touched, keeps each shard memory-mapped between batches, and
copies rows that are adjacent on disk as one block (a sequential read is one
copy per shard). A row copied out of a warm mapping costs about what a numpy
memmap costs; a ``pread`` per row measured twice that (a syscall each).

A remote store (an fsspec URL) with the same layout is read the same way over
byte ranges: each shard's index once (one suffix range request), then the
batch's rows as one range request per run of rows close together in their
shard, all of a batch's requests issued concurrently (``fs.cat_ranges``). A
shard whose index is not known yet and of which the batch wants at least half
the rows is fetched whole in one request, index included (a streamed epoch:
one request per shard, even in fresh DataLoader workers). zarr's own path
costs a request per row and one per shard index on every call, about 100
rows/s from a local S3 endpoint.

Anything else (compressed arrays) goes through zarr's own orthogonal
selection, still one call per batch (per shard for an array declaring more
than ``ZARR_SELECTION_MAX_ROWS`` rows: zarr's selection allocates a table per
declared chunk).

A store is data from a stranger, so every shard index is checked before a row
is read through it, once per shard: its crc32c, then every entry against the
only place this layout can put it (the shard's present rows in slot order from
byte 0, each ``row_length * 4`` bytes), compared exactly, so no entry can wrap
past a bounds check, point into another row or outside the file. State is
kept per shard touched, never per declared row: a ``zarr.json`` may declare
2^40 rows over three shard files.
"""

from __future__ import annotations

import mmap
import os
import resource
import stat
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fsspec
import google_crc32c  # zarr's own dependency: the crc32c of its sharding codec's index
import numpy as np
import zarr

from ..errors import StoreError

EMPTY = np.uint64(2**64 - 1)
INDEX_CHECKSUM_BYTES = 4  # crc32c appended to the shard index by zarr's default index codecs


def fast_path_ok(array: zarr.Array) -> bool:
    """True when the array is exactly the layout the direct reader understands."""
    meta: dict[str, Any] = array.metadata.to_dict()  # JSON of zarr's metadata, inspected key by key
    codecs = meta.get("codecs", [])
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        return False
    conf = codecs[0]["configuration"]
    inner = [c["name"] for c in conf["codecs"]]
    index = [c["name"] for c in conf["index_codecs"]]
    return (inner == ["bytes"] and conf["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
            and index == ["bytes", "crc32c"] and conf.get("index_location", "end") == "end"
            and tuple(conf["chunk_shape"])[1] == array.shape[1] and tuple(conf["chunk_shape"])[0] == 1
            and meta["data_type"] == "float32" and meta.get("chunk_key_encoding", {}).get("name") == "default")


#: Rows of one shard closer than this many bytes are fetched by one range request (the gap is read and dropped).
REMOTE_MAX_GAP = 1 << 20

NOT_LOADED = -1
ABSENT = -2  # no shard file, or an inner chunk left empty (all fill value)

#: Above this many declared rows a compressed array is read a shard at a time: zarr's orthogonal selection
#: allocates two int64 tables of one entry per chunk of the dimension (2^27 rows: 2 GB) before reading anything.
ZARR_SELECTION_MAX_ROWS = 1 << 18


class ShardTable:
    """Element offset of every row of the shards read so far, looked up for a whole batch at once.

    Sized by the shards actually touched (a sorted array of their numbers, and one table row per shard file
    found), never by the rows a ``zarr.json`` declares; a missing shard costs one entry, not a table row."""

    def __init__(self, shard_rows: int) -> None:
        self.shard_rows = shard_rows
        self.clear()

    def clear(self) -> None:
        """Forget every shard (they are read again on next use)."""
        self._keys = np.empty(0, dtype=np.int64)  # shard numbers, sorted
        self._where = np.empty(0, dtype=np.int64)  # the row of _table holding each, or ABSENT
        self._table = np.empty((0, self.shard_rows), dtype=np.int64)
        self._used = 0

    def lookup(self, shards: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Offsets of (shard, slot) pairs: NOT_LOADED where the shard is not read yet, ABSENT for no value."""
        keys = self._keys
        if not keys.size:
            return np.full(shards.shape, NOT_LOADED, dtype=np.int64)
        pos = np.searchsorted(keys, shards)
        np.minimum(pos, keys.size - 1, out=pos)
        where = np.where(keys[pos] == shards, self._where[pos], NOT_LOADED)
        present = where >= 0
        if present.all():
            return self._table[where, slots]
        offsets = where
        offsets[present] = self._table[where[present], slots[present]]
        return offsets

    def __getitem__(self, key: tuple[int, int]) -> int:
        shard, slot = key
        return int(self.lookup(np.array([shard], dtype=np.int64), np.array([slot], dtype=np.int64))[0])

    def add(self, entries: dict[int, np.ndarray | None]) -> None:
        """Record shards read: shard -> its slots' offsets, or None for a shard without a file."""
        entries = {s: e for s, e in entries.items() if s not in self}
        if not entries:
            return
        present = [s for s, e in entries.items() if e is not None]
        if self._used + len(present) > len(self._table):
            grown = np.empty((max(2 * len(self._table), self._used + len(present)), self.shard_rows), np.int64)
            grown[:self._used] = self._table[:self._used]
            self._table = grown
        where = []
        for offsets in entries.values():
            if offsets is None:
                where.append(ABSENT)
            else:
                self._table[self._used] = offsets
                where.append(self._used)
                self._used += 1
        new = np.fromiter(entries, dtype=np.int64, count=len(entries))
        order = np.argsort(new)
        at = np.searchsorted(self._keys, new[order])
        self._keys = np.insert(self._keys, at, new[order])
        self._where = np.insert(self._where, at, np.asarray(where, dtype=np.int64)[order])

    def __contains__(self, shard: int) -> bool:
        i = int(np.searchsorted(self._keys, shard))
        return i < self._keys.size and int(self._keys[i]) == shard


def _raise_open_file_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class RowReader:
    """Reads batches of rows of one weights array."""

    def __init__(self, array: zarr.Array, local_root: Path | None, max_open: int = 4096,
                 remote: tuple[fsspec.AbstractFileSystem, str] | None = None, store: str | None = None) -> None:
        """``remote``: (filesystem, store root) of a store behind a URL, for ranged reads of its shards;
        ``store``: the store as errors name it (default: its root)."""
        self.array = array
        self.root = Path(local_root) if local_root is not None else None
        self.store = store if store is not None else str(self.root if self.root is not None
                                                         else remote[1] if remote is not None else "")
        if array.ndim != 2:
            raise StoreError(f"{self.store}: {array.path}: shape {array.shape}; a weights array has 2 dimensions "
                             "(rows, row_length)")
        self.rows, self.width = array.shape
        self.shard_rows = array.shards[0] if array.shards else array.chunks[0]
        self.n_shards = -(-self.rows // self.shard_rows)
        self.fill = float(array.fill_value)
        self.direct = self.root is not None and fast_path_ok(array)
        self.remote = remote if (remote is not None and self.root is None and fast_path_ok(array)) else None
        self.max_open = max_open
        self._reset()

    def _reset(self) -> None:
        self._offsets = ShardTable(self.shard_rows)  # element offset of every row of the shards read so far
        self._maps: dict[int, mmap.mmap] = {}
        self._arrays: dict[int, np.ndarray] = {}  # float32 view of each mapped shard

    def __getstate__(self) -> dict:
        # memory maps do not cross process boundaries (DataLoader workers): remap lazily there
        state = self.__dict__.copy()
        del state["_offsets"], state["_maps"], state["_arrays"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _unmap_all(self) -> None:
        self._arrays.clear()  # the only exported views: the maps can close now
        while self._maps:
            self._maps.popitem()[1].close()
        self._offsets.clear()

    def close(self) -> None:
        """Unmap shards and forget cached indexes (call after the store changed)."""
        self._unmap_all()
        self._reset()

    def _key(self, shard: int) -> str:
        return self.array.metadata.encode_chunk_key((shard, 0))

    def _name(self, shard: int) -> str:
        """How errors name a shard: the store, the array and the shard file in it."""
        return f"{self.store}: {self.array.path} shard {self._key(shard)}"

    def _shard_path(self, shard: int) -> Path:
        assert self.root is not None, "shard files are read only on the direct path (a local store)"
        return self.root / self.array.path / self._key(shard)

    def _alloc(self, n: int, fill: bool = False) -> np.ndarray:
        """``n`` rows of the declared width; a width no memory holds is the store's error, not a crash."""
        try:
            if fill:
                return np.full((n, self.width), self.fill, dtype=np.float32)
            return np.empty((n, self.width), dtype=np.float32)
        except (MemoryError, ValueError):
            raise StoreError(f"{self.store}: {self.array.path}: {n} rows of row_length {self.width} (declared by its "
                             "zarr.json) do not fit in memory") from None

    def _parse_index(self, shard: int, tail: bytes, data_bytes: int | None) -> np.ndarray:
        """Each slot's element offset in the shard (ABSENT: no value) from the shard's last bytes (the index and
        its crc32c), refusing an index whose checksum fails or whose entries are not where this layout puts
        them. ``data_bytes``: the bytes before the index (None: unknown, a remote index read alone; the range
        reads of its rows then check the object's size)."""
        body, stored = tail[:-INDEX_CHECKSUM_BYTES], int.from_bytes(tail[-INDEX_CHECKSUM_BYTES:], "little")
        computed = google_crc32c.value(body)
        if computed != stored:
            raise StoreError(f"{self._name(shard)}: shard index checksum {computed:#010x} != stored {stored:#010x} "
                             "(the index that locates its rows is damaged); run `zoo verify` on the store")
        index = np.frombuffer(body, dtype="<u8").reshape(self.shard_rows, 2)
        offsets, nbytes = index[:, 0], index[:, 1]
        row_bytes = self.width * 4
        empty = offsets == EMPTY  # zarr's marker of a missing inner chunk: the fill value
        expect = f"row_length {self.width} in zarr.json"
        if row_bytes >= 2**62:
            raise StoreError(f"{self._name(shard)}: {expect}: rows of at most 2^60 values are readable")
        wrong = np.flatnonzero(np.where(empty, nbytes != EMPTY, nbytes != np.uint64(row_bytes)))
        if wrong.size:
            slot = int(wrong[0])
            raise StoreError(f"{self._name(shard)}: damaged index: slot {slot} holds {int(nbytes[slot])} bytes at "
                             f"byte {int(offsets[slot])}; inner chunks of {row_bytes} bytes ({expect}) or none "
                             "(offset and size 2^64-1) expected; run `zoo verify` on the store")
        present = np.flatnonzero(~empty)
        need = present.size * row_bytes  # Python ints: nothing wraps
        limit = data_bytes if data_bytes is not None else 2**63 - 1
        if need > limit:
            raise StoreError(f"{self._name(shard)}: damaged index: {present.size} rows of {row_bytes} bytes ({expect}) "
                             f"need {need} bytes before the index; the file has {data_bytes}; run `zoo verify` on "
                             "the store")
        # the layout puts a shard's present rows in slot order from byte 0: exactly one place for every entry
        moved = np.flatnonzero(offsets[present] != np.arange(present.size, dtype=np.uint64) * np.uint64(row_bytes))
        if moved.size:
            j = int(moved[0])
            raise StoreError(f"{self._name(shard)}: damaged index: slot {int(present[j])} points at byte "
                             f"{int(offsets[present[j]])}, where this layout stores it at byte {j * row_bytes} (the "
                             "shard's rows in slot order); index entries were moved or swapped; run `zoo verify` on "
                             "the store")
        elements = np.full(self.shard_rows, ABSENT, dtype=np.int64)
        elements[present] = np.arange(present.size, dtype=np.int64) * self.width
        return elements

    def _map_limit(self) -> int:
        return min(self.max_open, _raise_open_file_limit(self.max_open + 256) - 256)

    def _load(self, shards: list[int]) -> None:
        """Map shard files and record their rows' element offsets (each index checked once, here)."""
        found: dict[int, np.ndarray | None] = {}
        try:
            for shard in shards:
                found[shard] = self._map(shard)
        finally:
            self._offsets.add(found)  # shards mapped before a damaged one stay usable

    def _map(self, shard: int) -> np.ndarray | None:
        """Map one shard file; its slots' element offsets, or None without a file (every row the fill value)."""
        path = self._shard_path(shard)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: a FIFO planted as a shard cannot hang
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self._name(shard)}: cannot open {path} ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{self._name(shard)}: {path} is not a regular file")
            size = st.st_size
            n_index = self.shard_rows * 16 + INDEX_CHECKSUM_BYTES
            if size < n_index:
                raise StoreError(f"{self._name(shard)} is truncated ({size} bytes; its index alone takes {n_index})")
            try:
                mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except OSError as e:
                raise StoreError(f"{self._name(shard)}: cannot map {path} ({e.strerror})") from None
        finally:
            os.close(fd)
        try:
            offsets = self._parse_index(shard, mm[size - n_index:], size - n_index)
        except StoreError:
            mm.close()
            raise
        self._maps[shard] = mm
        self._arrays[shard] = np.frombuffer(mm, dtype="<f4", count=(size - n_index) // 4)
        return offsets

    def read(self, rows: np.ndarray | Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """Rows in the order asked (repeats allowed) as a (len(rows), width) float32 array."""
        rows = self._checked(rows)
        if not rows.size:
            return out if out is not None else np.empty((0, self.width), dtype=np.float32)
        if self.remote is not None:
            return self._read_remote(rows, out)
        if not self.direct:
            return self._read_zarr(rows, out)
        shards, offsets = self._locate(rows)  # before allocating: the shard indexes check the declared width
        if out is None:
            out = self._alloc(rows.size)
        width = self.width
        absent = offsets == ABSENT
        # runs of requested rows that are adjacent on disk too (same shard, consecutive offsets)
        brk = np.flatnonzero((shards[1:] != shards[:-1]) | (offsets[1:] != offsets[:-1] + width)
                             | absent[1:] | absent[:-1]) + 1
        offs, shard_list = offsets.tolist(), shards.tolist()
        arrays = self._arrays
        if 4 * (brk.size + 1) <= rows.size and out.flags.c_contiguous:
            # mostly sequential: one block copy per run
            flat = out.reshape(-1)
            for a, b in zip([0, *brk.tolist()], [*brk.tolist(), rows.size]):
                lo, n = a * width, (b - a) * width
                if offs[a] >= 0:
                    flat[lo:lo + n] = arrays[shard_list[a]][offs[a]:offs[a] + n]
                else:
                    flat[lo:lo + n] = self.fill
        else:
            # scattered: one view per row, gathered by a single C loop
            fill = np.full(width, self.fill, dtype=np.float32)
            views = [arrays[sh][o:o + width] if o >= 0 else fill for sh, o in zip(shard_list, offs)]
            if out.flags.c_contiguous:
                np.concatenate(views, out=out.reshape(-1))
            else:
                np.stack(views, out=out)
        return out

    def _read_zarr(self, rows: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """Rows of any other layout through zarr (which checks each shard index's crc32c itself)."""
        uniq, inverse = np.unique(rows, return_inverse=True)
        try:
            if self.rows <= ZARR_SELECTION_MAX_ROWS:
                block = np.asarray(self.array.get_orthogonal_selection((uniq, slice(None))))
            else:  # one slice per shard: zarr's slices allocate by the rows read, not by the rows declared
                block = self._alloc(uniq.size)
                brk = np.flatnonzero(np.diff(uniq // self.shard_rows)) + 1
                for run in np.split(np.arange(uniq.size), brk):
                    lo, hi = int(uniq[run[0]]), int(uniq[run[-1]]) + 1
                    block[run] = np.asarray(self.array[lo:hi])[uniq[run] - lo]
        except StoreError:
            raise
        except Exception as e:  # zarr reports a damaged shard (bad index checksum, short file) in many types
            raise StoreError(f"{self.store}: {self.array.path}: cannot read rows {uniq[0]}..{uniq[-1]} "
                             f"({type(e).__name__}: {e}); run `zoo verify` on the store") from e
        return np.take(block, inverse, axis=0, out=out)

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, element offset in its mapped shard or ABSENT) of every row of a local store, mapping shards
        on first use."""
        shards, slots = np.divmod(rows, self.shard_rows)
        offsets = self._offsets.lookup(shards, slots)
        missing = offsets == NOT_LOADED
        if missing.any():
            need = np.unique(shards[missing]).tolist()
            if len(self._maps) + len(need) > self._map_limit():
                self._unmap_all()  # each map holds a file descriptor: start over rather than run out
                need = np.unique(shards).tolist()
            self._load(need)
            offsets = self._offsets.lookup(shards, slots)
        return shards, offsets

    def views(self, rows: np.ndarray | Sequence[int]) -> list[np.ndarray] | None:
        """Each row as a read-only view into its memory-mapped shard (nothing copied: a consumer reads the bytes
        once, where it needs them), or None where rows are not read from local memory maps. A row never
        written is an array of the fill value."""
        if not self.direct:
            return None
        rows = self._checked(rows)
        shards, offsets = self._locate(rows)
        width, arrays = self.width, self._arrays
        return [arrays[sh][o:o + width] if o >= 0 else np.full(width, self.fill, dtype=np.float32)
                for sh, o in zip(shards.tolist(), offsets.tolist())]

    def read_elements(self, rows: np.ndarray | Sequence[int], positions: np.ndarray) -> np.ndarray:
        """``out[b, j]`` = value ``positions[b, j]`` of row ``rows[b]``: a window of a large row reads only its
        own values (local: from the memory maps; remote: one range request per cluster of positions, all issued
        concurrently; other layouts: whole rows, then the positions)."""
        rows = self._checked(rows)
        positions = np.asarray(positions, dtype=np.int64).reshape(rows.size, -1)
        if positions.size and (positions.min() < 0 or positions.max() >= self.width):
            raise StoreError(f"{self.store}: {self.array.path}: positions must lie in [0, {self.width})")
        out = np.empty(positions.shape, dtype=np.float32)
        if self.remote is not None:
            return self._read_elements_remote(rows, positions, out)
        if not self.direct:
            return np.take_along_axis(self.read(rows), positions, axis=1)
        shards, offsets = self._locate(rows)
        for b, (sh, o) in enumerate(zip(shards.tolist(), offsets.tolist())):
            if o >= 0:
                np.take(self._arrays[sh], positions[b] + o, out=out[b])
            else:
                out[b] = self.fill
        return out

    def check_shard(self, shard: int) -> None:
        """Read and check one shard's index as a read would (its crc32c, every entry in its place), raising the
        ``StoreError`` a read of its rows would raise; nothing for layouts zarr reads (it checks them itself)."""
        if shard in self._offsets:
            return
        if self.direct:
            if len(self._maps) >= self._map_limit():
                self._unmap_all()
            self._load([shard])
        elif self.remote is not None:
            self._load_remote([shard], whole=False)

    def checked_rows(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """``rows`` as a flat int64 array; a ``StoreError`` naming the store and the row unless every one is an
        integer in [0, rows) (a float, a bool or a string is no row index, and is never truncated into one)."""
        return self._checked(rows)

    def _checked(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        where = f"{self.store}: {self.array.path}"
        try:
            arr = (rows if isinstance(rows, np.ndarray) else np.asarray(rows)).reshape(-1)
        except (ValueError, TypeError) as e:
            raise StoreError(f"{where}: rows {rows!r:.80}: not a sequence of integers ({e})") from None
        if arr.dtype.kind not in "iu":
            values = arr.tolist()
            for value in values:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise StoreError(f"{where}: row {value!r:.40} is not an integer; rows are integers in "
                                     f"[0, {self.rows})")
            outside = [v for v in values if not 0 <= v < self.rows]  # Python ints beyond int64 land here
            if outside:
                raise StoreError(f"{where}: rows must lie in [0, {self.rows}); got {min(values)}..{max(values)}: "
                                 f"row {outside[0]} is outside")
            return np.asarray(values, dtype=np.int64)
        if arr.size:
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi >= self.rows:
                first = arr[(arr < 0) | (arr >= self.rows)][0]
                raise StoreError(f"{where}: rows must lie in [0, {self.rows}); got {lo}..{hi}: row {first} is "
                                 "outside")
        return arr.astype(np.int64, copy=False)

    # --- remote stores: byte ranges of shard objects ------------------------------------------------
    def _remote_fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        assert self.remote is not None, "ranged reads are only for a remote store of the direct layout"
        return self.remote

    def _remote_path(self, shard: int) -> str:
        fs, root = self._remote_fs()
        return f"{root}/{self.array.path}/{self._key(shard)}"

    def _load_remote(self, shards: list[int], whole: bool) -> dict[int, bytes]:
        """Fetch the indexes of ``shards`` concurrently: the last bytes of each object, or (``whole``) each
        object entirely, returned as shard -> bytes so that its rows need no second request."""
        fs, _ = self._remote_fs()
        n_index = self.shard_rows * 16 + INDEX_CHECKSUM_BYTES
        paths = [self._remote_path(s) for s in shards]
        starts = [0 if whole else -n_index] * len(paths)  # "bytes=0-" asks for no size first, unlike a plain GET
        blobs = fs.cat_ranges(paths, starts, [None] * len(paths), on_error="return")
        fetched: dict[int, bytes] = {}
        found: dict[int, np.ndarray | None] = {}
        try:
            for shard, path, blob in zip(shards, paths, blobs):
                if isinstance(blob, FileNotFoundError):
                    found[shard] = None
                    continue
                if isinstance(blob, BaseException):
                    raise StoreError(f"{self._name(shard)}: cannot read {path} ({type(blob).__name__}: {blob})"
                                     ) from blob
                if len(blob) < n_index or (not whole and len(blob) != n_index):
                    raise StoreError(f"{self._name(shard)} is truncated ({len(blob)} bytes, expected an index of "
                                     f"{n_index})")
                # from an index alone the data section's size is unknown: the range reads check it instead
                found[shard] = self._parse_index(shard, blob[len(blob) - n_index:],
                                                 len(blob) - n_index if whole else None)
                if whole:
                    fetched[shard] = blob
        finally:
            self._offsets.add(found)
        return fetched

    def _read_remote(self, rows: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        uniq, inverse = np.unique(rows, return_inverse=True)
        shards, slots = np.divmod(uniq, self.shard_rows)
        offsets = self._offsets.lookup(shards, slots)
        fetched: dict[int, bytes] = {}
        if (offsets == NOT_LOADED).any():
            need, wanted = np.unique(shards[offsets == NOT_LOADED], return_counts=True)
            whole = 2 * wanted >= min(self.shard_rows, self.rows)
            if (~whole).any():
                self._load_remote(need[~whole].tolist(), whole=False)
            if whole.any():
                fetched = self._load_remote(need[whole].tolist(), whole=True)
            offsets = self._offsets.lookup(shards, slots)
        present = np.flatnonzero(offsets >= 0)
        copies: list[tuple[int, bytes | np.ndarray, int]] = []  # (block row, buffer, element offset in it)
        if fetched:
            local = np.isin(shards[present], list(fetched))
            copies += [(k, fetched[int(shards[k])], int(offsets[k])) for k in present[local].tolist()]
            present = present[~local]
        if present.size:
            order = present[np.lexsort((offsets[present], shards[present]))]  # by shard, then by position in it
            row_bytes = self.width * 4
            starts = offsets[order] * 4
            # one request per run of rows in one shard whose byte ranges are adjacent or close
            brk = np.flatnonzero((shards[order][1:] != shards[order][:-1])
                                 | (starts[1:] - (starts[:-1] + row_bytes) > REMOTE_MAX_GAP)) + 1
            runs = np.split(np.arange(order.size), brk)
            paths = [self._remote_path(int(shards[order[r[0]]])) for r in runs]
            lo = [int(starts[r[0]]) for r in runs]
            hi = [int(starts[r[-1]]) + row_bytes for r in runs]
            fs, _ = self._remote_fs()
            blobs = fs.cat_ranges(paths, lo, hi, on_error="return")  # one concurrent batch of requests
            for r, path, a, b, blob in zip(runs, paths, lo, hi, blobs):
                shard = int(shards[order[r[0]]])
                if isinstance(blob, BaseException):
                    raise StoreError(f"{self._name(shard)}: cannot read bytes {a}..{b} of {path} "
                                     f"({type(blob).__name__}: {blob})") from blob
                if len(blob) != b - a:
                    raise StoreError(f"{self._name(shard)}: {len(blob)} bytes at {a}, expected {b - a} (truncated?)")
                data = np.frombuffer(blob, dtype="<f4")
                copies += [(int(order[k]), data, (int(starts[k]) - a) // 4) for k in r.tolist()]
        # allocated once the bytes are here: a row's width is then backed by bytes read
        block = self._alloc(uniq.size, fill=True)
        for k, buf, o in copies:
            block[k] = np.frombuffer(buf, dtype="<f4", count=self.width, offset=4 * o)
        return np.take(block, inverse, axis=0, out=out)

    def _remote_offsets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shards, slots = np.divmod(rows, self.shard_rows)
        offsets = self._offsets.lookup(shards, slots)
        if (offsets == NOT_LOADED).any():
            self._load_remote(np.unique(shards[offsets == NOT_LOADED]).tolist(), whole=False)
            offsets = self._offsets.lookup(shards, slots)
        return shards, offsets

    def _read_elements_remote(self, rows: np.ndarray, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
        shards, offsets = self._remote_offsets(rows)
        gap = REMOTE_MAX_GAP // 16 // 4  # elements: windows are small, so close values share a request
        requests = []  # (sample, positions wanted, run start, run stop) per range request
        for b in range(rows.size):
            if offsets[b] < 0:
                out[b] = self.fill
                continue
            wanted = np.unique(positions[b])
            brk = np.flatnonzero(np.diff(wanted) > gap) + 1
            for run in np.split(wanted, brk):
                requests.append((b, int(run[0]), int(run[-1]) + 1))
        if not requests:
            return out
        fs, _ = self._remote_fs()
        paths = [self._remote_path(int(shards[b])) for b, _, _ in requests]
        lo = [4 * (int(offsets[b]) + a) for b, a, _ in requests]
        hi = [4 * (int(offsets[b]) + z) for b, _, z in requests]
        blobs = fs.cat_ranges(paths, lo, hi, on_error="return")
        pieces: dict[int, list[tuple[int, np.ndarray]]] = {}
        for (b, a, z), path, blob in zip(requests, paths, blobs):
            if isinstance(blob, BaseException):
                raise StoreError(f"{self._name(int(shards[b]))}: cannot read bytes {4 * a}.. of {path} "
                                 f"({type(blob).__name__}: {blob})") from blob
            if len(blob) != 4 * (z - a):
                raise StoreError(f"{self._name(int(shards[b]))}: {len(blob)} bytes, expected {4 * (z - a)} "
                                 "(truncated?)")
            pieces.setdefault(b, []).append((a, np.frombuffer(blob, dtype="<f4")))
        for b, parts in pieces.items():
            starts = np.array([a for a, _ in parts])
            which = np.searchsorted(starts, positions[b], side="right") - 1
            flat = np.concatenate([data for _, data in parts])
            base = np.cumsum([0] + [len(data) for _, data in parts])[:-1]
            out[b] = flat[base[which] + positions[b] - starts[which]]
        return out


# --- checksums on read ----------------------------------------------------------------------------------
def row_checksums(rows: np.ndarray) -> np.ndarray:
    """``zlib.crc32`` of each row's little-endian float32 bytes (the metadata's ``crc32`` column), as int64."""
    rows = np.ascontiguousarray(rows, dtype="<f4").reshape(len(rows), -1)
    return np.fromiter((zlib.crc32(r.data) for r in rows), dtype=np.int64, count=len(rows))


def check_rows(values: np.ndarray, expected: np.ndarray, describe: Callable[[int], str], where: str) -> None:
    """Raise a ``StoreError`` naming the first row of ``values`` whose checksum differs from ``expected``
    (negative entries: a row without a recorded checksum, not checked). ``describe(i)`` names row ``i``
    (model, epoch, array row); ``where`` names the store."""
    expected = np.asarray(expected, dtype=np.int64)
    checked = np.flatnonzero(expected >= 0)
    if not checked.size:
        return
    got = row_checksums(values[checked])
    bad = np.flatnonzero(got != expected[checked])
    if bad.size:
        i = int(checked[bad[0]])
        raise StoreError(f"{where}: {describe(i)}: checksum {int(got[bad[0]])} != recorded {int(expected[i])}; the "
                         f"stored weights are damaged ({bad.size} of {checked.size} rows read); run `zoo verify` on "
                         "the store")


def shard_parts(rows: np.ndarray, shard_rows: int) -> tuple[memoryview, bytes] | None:
    """The shard whose first ``len(rows)`` slots hold ``rows`` (the other slots: the fill value 0), as two buffers
    to write one after the other: the present rows, then the index and its crc32c. ``rows`` is used in place when
    every row is present (no copy); ``None`` means zarr would write no shard file at all (every slot the fill
    value). The bytes are ``encode_shard``'s."""
    rows = np.ascontiguousarray(rows, dtype="<f4")
    n = len(rows)
    if n > shard_rows:
        raise ValueError(f"{n} rows do not fit a shard of {shard_rows}")
    present = rows.view("<u4").any(axis=1)  # False where every value is +0.0 bit for bit, as zarr compares
    kept = int(present.sum())
    if not kept:
        return None
    nbytes = rows.shape[1] * 4
    index = np.full((shard_rows, 2), EMPTY, dtype="<u8")
    index[:n][present, 0] = np.arange(kept, dtype=np.uint64) * np.uint64(nbytes)
    index[:n][present, 1] = nbytes
    index_bytes = index.tobytes()
    checksum = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    data = rows if kept == n else rows[present]
    return data.data.cast("B"), index_bytes + checksum


def encode_shard(block: np.ndarray) -> bytes | None:
    """One whole shard of 1-row inner chunks, byte for byte as zarr's ``sharding_indexed`` codec writes it (the
    layout ``fast_path_ok`` accepts): the present rows in order, then the index of (offset, nbytes) pairs and its
    crc32c. A row equal to the fill value (+0.0 bit for bit; a row of -0.0 is kept) is left out (index entry
    empty), as zarr does without ``write_empty_chunks``; ``None`` means zarr would write no shard file at all.
    Encoding here costs one copy, where zarr's async codec pipeline costs tens of milliseconds per shard
    (``benchmarks/store.py``); the writer uses ``shard_parts``, which skips even that copy."""
    parts = shard_parts(block, len(block))
    return None if parts is None else b"".join(parts)
