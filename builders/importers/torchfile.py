"""``torch.save`` files read without torch: one read of the file's bytes, numpy views of its tensors.

An import of a Model Zoos population reads tens of thousands of small state dicts. ``torch.load`` costs about
a millisecond for each (its zip reader, the weights-only unpickler in Python, a tensor per storage), far more
than the 10 KB of a CNN-s checkpoint; and the reader runs in worker processes, where importing torch alone
costs seconds. So this module reads the zip archive that ``torch.save`` writes (since PyTorch 1.6) itself:

- ``archive/data.pkl`` (the pickled object), ``archive/data/<key>`` (one uncompressed record per storage),
  ``archive/byteorder``; the records are stored, never deflated, so a tensor is a numpy view of the bytes.
- The pickle is read by a restricted unpickler: the only globals it resolves are ``collections.OrderedDict``,
  torch's tensor rebuild functions and the storage types of numpy dtypes, each replaced by a local stand-in
  (nothing of torch is ever called), so it is as safe as ``torch.load(weights_only=True)``.
- Every record's CRC-32 is checked, and every tensor must lie inside its storage.

What this reader does not handle (a legacy pre-1.6 file, bfloat16 storages, compressed records, big-endian
files, any other global) is ``Unsupported``; the caller then hands the same bytes to ``torch.load``
(``builders.importers.statedicts``), so a file is still read from disk once. A file cut short, damaged or
not a ``torch.save`` archive at all raises ``Unreadable`` with the reason.

``tail_check`` is the cheap test for a download cut short: the zip's end records are the last bytes of the
file, and they say where the central directory lies; a prefix of an archive has no such end. It reads at most
``TAIL_BYTES`` bytes, so whether to leave a model out (``--skip-incomplete``) is known before anything is written,
without reading the checkpoint files twice.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory: signature, disks, entries, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries, entries, cd size, cd offset
_CENTRAL = struct.Struct("<4s4H2H3L5H2L")  # a central directory entry (46 bytes)
_LOCAL = struct.Struct("<4s5H3L2H")  # a local file header (30 bytes)
#: The end records torch writes (zip64 end record, its locator, the end of central directory), in bytes.
TAIL_BYTES = _ZIP64_EOCD.size + _ZIP64_LOCATOR.size + _EOCD.size
#: Storage types (``torch.FloatStorage``, ...) -> numpy dtypes; bfloat16 has none (``Unsupported``).
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
DAMAGED = "not a readable torch.save file, truncated or damaged"
EMPTY = "empty (0 bytes; an interrupted download?)"
#: ``tail_check``'s answer for a file that is no zip archive (a legacy ``torch.save`` file, or something else).
NOT_ZIP = "not a zip archive"


class Unreadable(Exception):
    """The file is not a complete, intact ``torch.save`` archive; ``why`` says what is wrong."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Unsupported(Exception):
    """A valid file this reader leaves to ``torch.load`` (legacy format, bfloat16, another global, ...)."""


def read_file(path: Path) -> bytes:
    """The whole file, in one read (the only time an import reads a checkpoint's bytes)."""
    with open(path, "rb", buffering=0) as f:
        return f.read()


def read_tail(f: BinaryIO, size: int, n: int) -> bytes:
    """The last ``n`` bytes (at most) of an open file of ``size`` bytes."""
    n = min(n, size)
    f.seek(size - n)
    return f.read(n)


def tail_check(path: Path) -> tuple[int, str | None]:
    """(size, what is wrong) from the file's size and its last ``TAIL_BYTES`` bytes; None when it looks whole.

    A file that is not a zip archive at all gives ``NOT_ZIP`` (a legacy ``torch.save`` file, or something else
    entirely): the caller must read it to know. A missing file raises ``FileNotFoundError``.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0, EMPTY
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return size, NOT_ZIP
        tail = read_tail(f, size, TAIL_BYTES)
    try:
        _directory_span(tail, size)
    except Unreadable as e:
        return size, e.why
    return size, None


def _directory_span(tail: bytes, size: int) -> tuple[int, int, int]:
    """(entries, offset, size) of the central directory from the archive's last bytes, checked to end where the
    end records begin (an archive with a comment, which torch never writes, is a damaged one here)."""
    if len(tail) < _EOCD.size or tail[-_EOCD.size:-_EOCD.size + 4] != b"PK\x05\x06":
        raise Unreadable(f"{DAMAGED} (the zip archive has no end record: cut short?)")
    _, _, _, _, entries, cd_size, cd_offset, comment = _EOCD.unpack_from(tail, len(tail) - _EOCD.size)
    end = size - _EOCD.size
    loc = len(tail) - _EOCD.size - _ZIP64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, _, z64_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, loc)
        rec = len(tail) - _EOCD.size - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
        if rec < 0 or z64_offset != size - (len(tail) - rec) or tail[rec:rec + 4] != b"PK\x06\x06":
            raise Unreadable(f"{DAMAGED} (inconsistent zip64 end records)")
        fields = _ZIP64_EOCD.unpack_from(tail, rec)
        entries, cd_size, cd_offset = fields[7], fields[8], fields[9]
        end = z64_offset
    if comment or cd_offset + cd_size != end:
        raise Unreadable(f"{DAMAGED} (the zip directory does not end where the end record begins: cut short?)")
    return entries, cd_offset, cd_size


def _directory(data: bytes) -> dict[str, tuple[int, int, int]]:
    """The archive's entries: name -> (offset of its local header, size, CRC-32); ``Unreadable`` when damaged."""
    entries, pos, cd_size = _directory_span(data[-TAIL_BYTES:], len(data))
    cd_end = pos + cd_size
    central = _CENTRAL.unpack_from
    out = {}
    for _ in range(entries):
        if pos + _CENTRAL.size > cd_end:
            raise Unreadable(f"{DAMAGED} (the zip directory lists more entries than it holds)")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len, _, _, _,
         local) = central(data, pos)
        if sig != b"PK\x01\x02":
            raise Unreadable(f"{DAMAGED} (zip directory entry at byte {pos})")
        pos += _CENTRAL.size
        name = data[pos:pos + name_len].decode("utf-8", "replace")
        if 0xFFFFFFFF in (csize, usize, local):
            csize, usize, local = _zip64_extra(memoryview(data)[pos + name_len:pos + name_len + extra_len], csize,
                                               usize, local)
        pos += name_len + extra_len + comment_len
        if method != 0 or flags & 1 or csize != usize:
            raise Unsupported(f"record {name!r} is compressed or encrypted")
        if local + _LOCAL.size > cd_end:
            raise Unreadable(f"{DAMAGED} (no zip record header for {name!r})")
        out[name] = (local, usize, crc)
    return out


def _record(data: bytes, name: str, entry: tuple[int, int, int]) -> memoryview:
    """The bytes of one stored record, bounds and CRC-32 checked."""
    local, size, crc = entry
    if data[local:local + 4] != ZIP_MAGIC:
        raise Unreadable(f"{DAMAGED} (no zip record header for {name!r})")
    start = local + _LOCAL.size + int.from_bytes(data[local + 26:local + 28], "little") \
        + int.from_bytes(data[local + 28:local + 30], "little")
    if start + size > len(data) - _EOCD.size:
        raise Unreadable(f"{DAMAGED} (record {name!r} runs past its end)")
    record = memoryview(data)[start:start + size]
    if zlib.crc32(record) != crc:
        raise Unreadable(f"{DAMAGED} (record {name!r} fails its CRC-32 check)")
    return record


def _zip64_extra(extra: memoryview, csize: int, usize: int, local: int) -> tuple[int, int, int]:
    """Sizes and offset from a central directory entry's zip64 extra field (those marked 0xFFFFFFFF)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, pos)
        if tag == 1:
            values = iter(struct.unpack_from(f"<{n // 8}Q", extra, pos + 4))
            usize = next(values) if usize == 0xFFFFFFFF else usize
            csize = next(values) if csize == 0xFFFFFFFF else csize
            local = next(values) if local == 0xFFFFFFFF else local
            return csize, usize, local
        pos += 4 + n
    raise Unreadable(f"{DAMAGED} (a zip64 entry without its extra field)")


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and the like: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(STORAGE_DTYPES[name])


@functools.lru_cache(maxsize=4096)
def _dense(size: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements of a tensor of ``size`` when ``stride`` is C-contiguous for it, else -1."""
    step, dense = 1, []
    for n in reversed(size):
        dense.append(step)
        step *= n
    return step if tuple(reversed(dense)) == stride and min(size, default=0) >= 0 else -1


def _view(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``, numpy's way: a view of the storage, checked to lie inside it."""
    try:
        n = _dense(size, stride)
    except TypeError:  # unhashable: not the tuples torch writes
        raise Unreadable(f"{DAMAGED} (a tensor of size {size!r}, stride {stride!r})") from None
    if n >= 0 and offset >= 0:  # contiguous: the usual case
        if offset + n > len(storage):
            raise Unreadable(f"{DAMAGED} (a tensor of {n} values at {offset} in a storage of {len(storage)})")
        return storage[offset:offset + n].reshape(size)
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride) or len(size) != len(stride):
        raise Unreadable(f"{DAMAGED} (a tensor of size {size}, stride {stride}, offset {offset})")
    if 0 in size:
        return np.empty(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise Unreadable(f"{DAMAGED} (a tensor reaches element {last} of a storage of {len(storage)})")
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride],
                                           writeable=False)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its data here."""
    return data


#: One tensor of a state dict: (name, storage key, dtype, storage elements, offset, size, stride).
Entry = tuple[str, str, np.dtype, int, int, tuple[int, ...], tuple[int, ...]]


class _Unpickler(pickle.Unpickler):
    """Resolves only ``collections.OrderedDict``, the tensor rebuild functions and storage types, each a local
    stand-in; storages are numpy views of the archive's records. Notes where each tensor came from (``origin``),
    so that a state dict's structure can be reused for the next file with the same ``data.pkl``."""

    def __init__(self, pickled: bytes, data: bytes, entries: dict[str, tuple[int, int, int]], prefix: str) -> None:
        super().__init__(io.BytesIO(pickled))
        self.data, self.entries, self.prefix = data, entries, prefix
        self.storages: dict[str, tuple[np.ndarray, np.dtype, int]] = {}
        self.keys: dict[int, str] = {}  # id(storage) -> its key
        self.origin: dict[int, tuple[str, np.dtype, int, int, tuple[int, ...], tuple[int, ...]]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        raise Unsupported(f"global {module}.{name}")

    def _rebuild_tensor(self, storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                        *_: Any) -> np.ndarray:
        tensor = _view(storage, offset, size, stride)
        key = self.keys.get(id(storage))
        if key is not None:
            self.origin[id(tensor)] = (key, storage.dtype, len(storage), offset, size, stride)
        return tensor

    def persistent_load(self, pid: Any) -> np.ndarray:
        try:
            typename, kind, key, _, numel = pid
        except (TypeError, ValueError):
            raise Unsupported(f"persistent id {pid!r}") from None
        if typename != "storage" or type(kind) is not _StorageType or not isinstance(key, str):
            raise Unsupported(f"persistent id {pid!r}")
        found = self.storages.get(key)
        if found is None:
            found = self.storages[key] = (_storage(self.data, self.entries, self.prefix, key, kind.dtype, numel),
                                          kind.dtype, numel)
            self.keys[id(found[0])] = key
        if found[1] != kind.dtype or found[2] != numel:
            raise Unsupported(f"storage {key!r} read as two types")
        return found[0]

    def plan(self, obj: Any) -> tuple[Entry, ...] | None:
        """How ``obj`` is made of the storages when it is a flat state dict (str -> tensor), else None."""
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                and id(v) in self.origin for k, v in obj.items()):
            return None
        return tuple((k, *self.origin[id(v)]) for k, v in obj.items())


def _storage(data: bytes, entries: dict[str, tuple[int, int, int]], prefix: str, key: str, dtype: np.dtype,
             numel: Any) -> np.ndarray:
    """Storage ``key``: its record as a numpy array of ``numel`` values of ``dtype``."""
    name = f"{prefix}data/{key}"
    entry = entries.get(name)
    if entry is None:
        raise Unreadable(f"{DAMAGED} (no record for storage {key!r})")
    if not isinstance(numel, int) or numel * dtype.itemsize != entry[1]:
        raise Unreadable(f"{DAMAGED} (storage {key!r} holds {entry[1]} bytes, not {numel} {dtype.name} values)")
    return np.frombuffer(_record(data, name, entry), dtype=dtype)


#: data.pkl's bytes -> the state dict it describes (``_Unpickler.plan``): the files of one population share a
#: few, so each is unpickled once per process; None for objects that are not flat state dicts.
_PLANS: dict[bytes, tuple[Entry, ...] | None] = {}
MAX_PLANS = 256


def load(data: bytes) -> Any:
    """The object a ``torch.save`` archive holds, its tensors as read-only numpy views of ``data``.

    Raises ``Unreadable`` for a damaged archive, ``Unsupported`` for what only ``torch.load`` reads. A flat state
    dict whose ``data.pkl`` this process has unpickled before (every file of a population but the first few) is
    rebuilt from the same tensor descriptions without unpickling again, as a plain dict.
    """
    if data[:4] != ZIP_MAGIC:
        raise Unsupported("not a zip archive (a legacy torch.save file?)")
    entries = _directory(data)
    pkl = next((name for name in entries if name.endswith("/data.pkl") and name.count("/") == 1), None)
    if pkl is None:
        raise Unreadable(f"{DAMAGED} (no data.pkl in the archive)")
    prefix = pkl[:-len("data.pkl")]
    order = entries.get(prefix + "byteorder")
    if order is not None and bytes(_record(data, prefix + "byteorder", order)) != b"little":
        raise Unsupported("big-endian byte order")
    pickled = bytes(_record(data, pkl, entries[pkl]))
    plan = _PLANS.get(pickled)
    if plan is not None:
        storages: dict[str, np.ndarray] = {}
        out = {}
        for name, key, dtype, numel, offset, size, stride in plan:
            storage = storages.get(key)
            if storage is None:
                storage = storages[key] = _storage(data, entries, prefix, key, dtype, numel)
            out[name] = _view(storage, offset, size, stride)
        return out
    unpickler = _Unpickler(pickled, data, entries, prefix)
    try:
        obj = unpickler.load()
    except (Unreadable, Unsupported):
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises
        raise Unreadable(f"{DAMAGED} (data.pkl: {type(e).__name__}: {e})") from None
    if len(_PLANS) < MAX_PLANS:
        _PLANS[pickled] = unpickler.plan(obj)
    return obj
