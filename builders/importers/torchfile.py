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
- Every record's CRC-32 is checked, and every tensor must lie inside its storage, its element count backed by
  the storage's bytes (a stride-0 view of 65,536 x 65,536 values over a few bytes is refused, not inflated).
- Before any unpickler runs, ``check_pickle`` walks the pickle's opcodes (``pickletools.genops``) on a stack of its
  own: memo indices, frame and argument lengths, and the storages its persistent ids declare must be backed by the
  file's bytes (the C unpickler preallocates its memo for the largest index it meets: ``LONG_BINPUT 2**28`` asks
  for 4 GB), and a global that is neither one of the above nor one ``torch.load(weights_only=True)`` may accept
  is refused as ``Unsafe``, naming it. ``check_for_torch`` applies the same walk (and the archive's bounds) to the
  bytes handed to ``torch.load``, a legacy file's pickles included.

What this reader does not handle (a legacy pre-1.6 file, bfloat16 storages, compressed records, big-endian
files, any other global) is ``Unsupported``; the caller then hands the same bytes to ``torch.load``
(``builders.importers.statedicts``), so a file is still read from disk once. A file cut short, damaged or
not a ``torch.save`` archive at all raises ``Unreadable`` with the reason; a file refused as hostile (a global
that could run code, sizes its bytes do not back) raises ``Unsafe``, an ``Unreadable`` whose reason says so.

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
import pickletools
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import safepaths

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
#: What an ``Unsafe`` file's reason begins with.
REFUSED = "refused:"
#: Globals outside torch that ``torch.load(weights_only=True)`` accepts (its ``_get_allowed_globals``); the rest of
#: what it accepts lies in ``torch`` itself. Any other global is refused before torch sees the file.
TORCH_ALLOWS = {("collections", "OrderedDict"), ("collections", "Counter"), ("_codecs", "encode"),
                ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "complex")}
#: Bytes per element of torch's storage types (those ``STORAGE_DTYPES`` lacks included), for the storages a
#: pickle declares; an unknown one counts as 1.
STORAGE_ITEMSIZE = {**{name: np.dtype(t).itemsize for name, t in STORAGE_DTYPES.items()}, "BFloat16Storage": 2,
                    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QInt8Storage": 1, "QUInt8Storage": 1,
                    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1}
#: The most a compressed record (never written by ``torch.save``, read by ``torch.load``) may declare per byte it
#: holds: deflate's own limit is about 1,032.
DEFLATE_RATIO = 1032


class Unreadable(Exception):
    """The file is not a complete, intact ``torch.save`` archive; ``why`` says what is wrong."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Unsafe(Unreadable):
    """A file refused as hostile: a global that could run code, or sizes that its bytes do not back."""


class Unsupported(Exception):
    """A valid file this reader leaves to ``torch.load`` (legacy format, bfloat16, another global, ...)."""


def unsafe_global(module: str, name: str) -> Unsafe:
    """The refusal of a pickle that names the global ``module.name``."""
    return Unsafe(f"{REFUSED} an unsafe pickle (it names the global {module}.{name}; only tensors and plain "
                  "containers are read)")


def read_file(path: Path) -> bytes:
    """The whole file, in one read (the only time an import reads a checkpoint's bytes); a link or a special file
    (a FIFO would block) is ``safepaths.Refused`` without being opened."""
    return safepaths.read_regular(path)


def read_tail(f: BinaryIO, size: int, n: int) -> bytes:
    """The last ``n`` bytes (at most) of an open file of ``size`` bytes."""
    n = min(n, size)
    f.seek(size - n)
    return f.read(n)


def tail_check(path: Path) -> tuple[int, str | None]:
    """(size, what is wrong) from the file's size and its last ``TAIL_BYTES`` bytes; None when it looks whole.

    A file that is not a zip archive at all gives ``NOT_ZIP`` (a legacy ``torch.save`` file, or something else
    entirely): the caller must read it to know. A missing file raises ``FileNotFoundError``; a link or a special
    file is ``safepaths.Refused``, never opened.
    """
    with os.fdopen(safepaths.open_regular(path), "rb", buffering=0) as f:
        size, why, tail = _zip_tail(f)
    if tail is None:
        return size, why
    try:
        _directory_span(tail, size)
    except Unreadable as e:
        return size, e.why
    return size, None


def _zip_tail(f: BinaryIO) -> tuple[int, str | None, bytes | None]:
    """(size, why not, the last ``TAIL_BYTES`` bytes) of an open file: ``EMPTY`` or ``NOT_ZIP`` with no tail, or
    the tail of what starts as a zip archive."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        return 0, EMPTY, None
    if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
        return size, NOT_ZIP, None
    return size, None, read_tail(f, size, TAIL_BYTES)


#: (data.pkl, the sizes of the storage records) already found sound by ``scan_check`` in this process: the files
#: of a population share a few.
_SOUND: set[tuple[bytes, frozenset[tuple[str, int]]]] = set()


def scan_check(path: Path) -> tuple[int, str | None]:
    """``tail_check``, and for an archive that looks whole, what the reader would refuse without reading a tensor:
    the central directory and ``data.pkl`` are read (a few hundred bytes) and ``data.pkl`` is walked
    (``check_pickle``) and unpickled against the records' sizes (``_SizeUnpickler``: every tensor inside its
    storage), so a hostile or damaged file is known before anything is written (``--skip-incomplete`` leaves its
    model out). What only the whole file shows (a record's CRC-32) or only torch reads is left to ``load``.
    """
    with os.fdopen(safepaths.open_regular(path), "rb", buffering=0) as f:
        size, why, tail = _zip_tail(f)
        if tail is None:
            return size, why
        try:
            entries, cd_offset, cd_size = _directory_span(tail, size)
            f.seek(cd_offset)
            directory = _central(memoryview(f.read(cd_size)), entries, cd_offset, size)
            pkl = next((name for name in directory if name.endswith("/data.pkl") and name.count("/") == 1), None)
            if pkl is None:
                raise Unreadable(f"{DAMAGED} (no data.pkl in the archive)")
            local, usize, crc, method, csize, flags = directory[pkl]
            if method != 0 or flags & 1 or csize != usize:
                return size, None  # compressed: torch reads it (check_for_torch bounds it first)
            f.seek(local)
            header = f.read(_LOCAL.size)
            if len(header) < _LOCAL.size or header[:4] != ZIP_MAGIC:
                raise Unreadable(f"{DAMAGED} (no zip record header for {pkl!r})")
            f.seek(local + _LOCAL.size + int.from_bytes(header[26:28], "little")
                   + int.from_bytes(header[28:30], "little"))
            pickled = f.read(min(usize, max(cd_offset - f.tell(), 0)))
            if len(pickled) != usize or zlib.crc32(pickled) != crc:
                raise Unreadable(f"{DAMAGED} (record {pkl!r} runs past its end or fails its CRC-32 check)")
            _check_sizes(pickled, directory, pkl[:-len("data.pkl")], size)
        except Unsupported:
            return size, None  # what only torch reads: it is checked (check_for_torch) when it is read
        except Unreadable as e:
            return size, e.why
        except Exception as e:  # noqa: BLE001 - a damaged archive must not end in another exception
            return size, f"{DAMAGED} ({type(e).__name__}: {e})"
    return size, None


def _check_sizes(pickled: bytes, directory: dict[str, ZipEntry], prefix: str, size: int) -> None:
    """``data.pkl`` walked and unpickled against the storage records' sizes (no tensor bytes read)."""
    sizes = frozenset((name, e[1]) for name, e in directory.items() if name.startswith(prefix + "data/"))
    if (pickled, sizes) in _SOUND:
        return
    check_pickle(pickled, budget=size)
    unpickler = _SizeUnpickler(pickled, b"", {name: (e[0], e[1], e[2]) for name, e in directory.items()}, prefix)
    try:
        unpickler.load()
    except (Unreadable, Unsupported):
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises
        raise Unreadable(f"{DAMAGED} (data.pkl: {type(e).__name__}: {e})") from None
    if len(_SOUND) < MAX_PLANS:
        _SOUND.add((pickled, sizes))


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


#: One entry of an archive's directory: (offset of its local header, size, CRC-32, method, stored size, flags).
ZipEntry = tuple[int, int, int, int, int, int]


def _entries(data: bytes) -> dict[str, ZipEntry]:
    """Every entry of the archive's central directory, bounds checked; ``Unreadable`` when damaged."""
    entries, pos, cd_size = _directory_span(data[-TAIL_BYTES:], len(data))
    return _central(memoryview(data)[pos:pos + cd_size], entries, pos, len(data))


def _central(cd: memoryview, entries: int, cd_offset: int, size: int) -> dict[str, ZipEntry]:
    """The ``entries`` entries of the central directory ``cd`` (which begins at byte ``cd_offset`` of a file of
    ``size`` bytes)."""
    pos, out = 0, {}
    for _ in range(entries):
        if pos + _CENTRAL.size > len(cd):
            raise Unreadable(f"{DAMAGED} (the zip directory lists more entries than it holds)")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len, _, _, _,
         local) = _CENTRAL.unpack_from(cd, pos)
        if sig != b"PK\x01\x02":
            raise Unreadable(f"{DAMAGED} (zip directory entry at byte {cd_offset + pos})")
        pos += _CENTRAL.size
        if pos + name_len + extra_len + comment_len > len(cd):
            raise Unreadable(f"{DAMAGED} (zip directory entry at byte {cd_offset + pos - _CENTRAL.size} runs past "
                             "the directory)")
        name = bytes(cd[pos:pos + name_len]).decode("utf-8", "replace")
        if 0xFFFFFFFF in (csize, usize, local):
            csize, usize, local = _zip64_extra(cd[pos + name_len:pos + name_len + extra_len], name, csize, usize,
                                               local)
        pos += name_len + extra_len + comment_len
        if local + _LOCAL.size > cd_offset or csize > size:
            raise Unreadable(f"{DAMAGED} (no zip record header for {name!r})")
        out[name] = (local, usize, crc, method, csize, flags)
    return out


def _directory(data: bytes) -> dict[str, tuple[int, int, int]]:
    """The archive's entries: name -> (offset of its local header, size, CRC-32); ``Unreadable`` when damaged,
    ``Unsupported`` when a record is compressed or encrypted (``torch.save`` stores them)."""
    out = {}
    for name, (local, usize, crc, method, csize, flags) in _entries(data).items():
        if method != 0 or flags & 1 or csize != usize:
            raise Unsupported(f"record {name!r} is compressed or encrypted")
        out[name] = (local, usize, crc)
    return out


def _record(data: bytes, name: str, entry: tuple[int, ...], size: int | None = None) -> memoryview:
    """The bytes of one stored record (``size`` of them: its stored size), bounds and CRC-32 checked."""
    local, usize, crc = entry[:3]
    size = usize if size is None else size
    if data[local:local + 4] != ZIP_MAGIC:
        raise Unreadable(f"{DAMAGED} (no zip record header for {name!r})")
    start = local + _LOCAL.size + int.from_bytes(data[local + 26:local + 28], "little") \
        + int.from_bytes(data[local + 28:local + 30], "little")
    if start + size > len(data) - _EOCD.size:
        raise Unreadable(f"{DAMAGED} (record {name!r} runs past its end)")
    record = memoryview(data)[start:start + size]
    if size == usize and zlib.crc32(record) != crc:
        raise Unreadable(f"{DAMAGED} (record {name!r} fails its CRC-32 check)")
    return record


def _zip64_extra(extra: memoryview, name: str, csize: int, usize: int, local: int) -> tuple[int, int, int]:
    """Sizes and offset from a central directory entry's zip64 extra field (those marked 0xFFFFFFFF); a field too
    short for the values it must hold is ``Unreadable``."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, pos)
        if tag == 1:
            wanted = (usize == 0xFFFFFFFF) + (csize == 0xFFFFFFFF) + (local == 0xFFFFFFFF)
            if n < 8 * wanted or pos + 4 + 8 * wanted > len(extra):
                raise Unreadable(f"{DAMAGED} (the zip64 extra field of {name!r} holds {min(n, len(extra) - pos - 4)} "
                                 f"bytes, not the {8 * wanted} of its {wanted} 64-bit size(s))")
            values = iter(struct.unpack_from(f"<{wanted}Q", extra, pos + 4))
            usize = next(values) if usize == 0xFFFFFFFF else usize
            csize = next(values) if csize == 0xFFFFFFFF else csize
            local = next(values) if local == 0xFFFFFFFF else local
            return csize, usize, local
        pos += 4 + n
    raise Unreadable(f"{DAMAGED} (zip64 entry {name!r} without its extra field)")


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
    if n >= 0 and isinstance(offset, int) and offset >= 0:  # contiguous: the usual case
        if offset + n > len(storage):
            raise Unreadable(f"{DAMAGED} (a tensor of {n} values at {offset} in a storage of {len(storage)})")
        return storage[offset:offset + n].reshape(size)
    if (not isinstance(offset, int) or offset < 0 or not all(isinstance(s, int) and s >= 0 for s in (*size, *stride))
            or len(size) != len(stride)):
        raise Unreadable(f"{DAMAGED} (a tensor of size {size}, stride {stride}, offset {offset})")
    if 0 in size:
        return np.empty(size, storage.dtype)
    n = 1
    for s in size:
        n *= s
    if n > len(storage) - offset:  # overlapping views (stride 0 among them) of more values than the storage holds
        raise Unsafe(f"{REFUSED} a tensor of size {size} (stride {stride}) views {n} values of a storage of "
                     f"{len(storage)} from offset {offset}; a tensor's values must be backed by its storage's bytes")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise Unreadable(f"{DAMAGED} (a tensor reaches element {last} of a storage of {len(storage)})")
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride],
                                           writeable=False)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its data here."""
    return data


# --- the pickle, checked before it is unpickled ---------------------------------------------------------------
def torch_may_read(module: str, name: str) -> bool:
    """Whether ``module.name`` is a global this reader leaves to ``torch.load(weights_only=True)`` to judge (torch's
    own, and ``TORCH_ALLOWS``); any other one is refused as unsafe."""
    return module == "torch" or module.startswith("torch.") or (module, name) in TORCH_ALLOWS


class _Global:
    """A global on ``check_pickle``'s stack (a storage type, to size the storages persistent ids declare)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


_OPAQUE = object()  # a value check_pickle does not follow
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_VALUES = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
                     "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES",
                     "SHORT_BINBYTES", "BINBYTES8", "FLOAT", "BINFLOAT"})
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
#: Opcodes no torch.save file holds and that reach outside the pickle (the copyreg registry, out-of-band data).
_REFUSED_OPS = frozenset({"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"})


def check_pickle(pickled: bytes | BinaryIO, *, budget: int, declared: dict[str, int] | None = None) -> None:
    """Walk one pickle to its ``STOP`` without running it; ``Unsafe`` (or ``Unreadable``) for what no unpickler may
    be handed.

    Tracks the stack as ``pickletools`` describes each opcode: a memo index (``PUT``, ``BINPUT``, ``LONG_BINPUT``;
    ``MEMOIZE`` takes the next) must be below the opcodes read so far, a ``GET`` must name a set index, a frame and
    every counted argument must fit in the bytes left (``genops`` reads them), the storages the persistent ids
    declare (``('storage', type, key, location, numel)``) may hold ``budget`` bytes at most, all together
    (``declared``: key -> bytes, shared between the pickles of one file), and every global (``GLOBAL``, ``INST``,
    ``STACK_GLOBAL``) must be this reader's or one torch judges (``torch_may_read``). ``pickled`` is the bytes, or a
    stream positioned at the pickle (left after its ``STOP``).
    """
    f = io.BytesIO(pickled) if isinstance(pickled, (bytes, bytearray, memoryview)) else pickled
    start = f.tell()
    size = f.seek(0, io.SEEK_END) - start
    f.seek(start)
    declared = {} if declared is None else declared
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    ops = 0

    def damaged(what: str) -> Unreadable:
        return Unreadable(f"{DAMAGED} (pickle opcode {ops} at byte {f.tell() - start}: {what})")

    def pop(n: int) -> list[Any]:
        if n > len(stack) - (marks[-1] if marks else 0):
            raise damaged("pops an empty stack")
        out = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return out

    try:
        for op, arg, _ in pickletools.genops(f):
            ops += 1
            name = op.name
            if name in _MEMO_PUT or name == "MEMOIZE":
                index = len(memo) if name == "MEMOIZE" else arg
                if not isinstance(index, int) or not 0 <= index < ops or index > size:
                    raise Unsafe(f"{REFUSED} a pickle that puts memo index {index} in {ops} opcodes of {size} bytes "
                                 "(an unpickler would allocate a memo that large; only what the file's bytes back is "
                                 "read)")
                if not stack or (marks and len(stack) == marks[-1]):
                    raise damaged("memoizes an empty stack")
                memo[index] = stack[-1]
            elif name in _MEMO_GET:
                if arg not in memo:
                    raise damaged(f"gets memo index {arg}, never put")
                stack.append(memo[arg])
            elif name == "FRAME":
                if not isinstance(arg, int) or arg > size:
                    raise Unsafe(f"{REFUSED} a pickle frame of {arg} bytes in a pickle of {size}")
            elif name in _REFUSED_OPS:
                raise Unsafe(f"{REFUSED} an unsafe pickle (opcode {name}, which reaches outside the file; only "
                             "tensors and plain containers are read)")
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not (torch_may_read(module, attr)):
                    raise unsafe_global(module, attr)
                if name == "INST":
                    if not marks:
                        raise damaged("INST without a mark")
                    del stack[marks.pop():]
                stack.append(_Global(module, attr) if name == "GLOBAL" else _OPAQUE)
            elif name == "STACK_GLOBAL":
                module, attr = pop(2)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise Unsafe(f"{REFUSED} an unsafe pickle (a global whose name is computed, not written; only "
                                 "tensors and plain containers are read)")
                if not torch_may_read(module, attr):
                    raise unsafe_global(module, attr)
                stack.append(_Global(module, attr))
            elif name == "MARK":
                marks.append(len(stack))
            elif name in _VALUES:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in _TUPLES:
                stack.append(tuple(pop(_TUPLES[name])))
            elif name == "TUPLE":
                if not marks:
                    raise damaged("TUPLE without a mark")
                k = marks.pop()
                items = tuple(stack[k:])
                del stack[k:]
                stack.append(items)
            elif name in ("BINPERSID", "PERSID"):
                pid = pop(1)[0] if name == "BINPERSID" else arg
                _check_storage(pid, budget, declared)
                stack.append(_OPAQUE)
            elif name == "STOP":
                pop(1)
            else:  # what the opcode takes and leaves, as pickletools says
                before = op.stack_before
                if pickletools.markobject in before:
                    if not marks:
                        raise damaged(f"{name} without a mark")
                    k = marks.pop()
                    below = before.index(pickletools.markobject)
                    if below > k - (marks[-1] if marks else 0):
                        raise damaged("pops an empty stack")
                    del stack[k - below:]
                else:
                    pop(len(before))
                stack.extend(_OPAQUE for s in op.stack_after if s is not pickletools.markobject)
    except (Unreadable, Unsupported):
        raise
    except Exception as e:  # noqa: BLE001 - genops: an unknown opcode, an argument cut short, no STOP
        raise damaged(f"{type(e).__name__}: {e}") from None


def _check_storage(pid: Any, budget: int, declared: dict[str, int]) -> None:
    """A persistent id's storage: ``('storage', type, key, location, numel, ...)``, its bytes within ``budget``
    with the others'; any other id is left to the reader that meets it (this one refuses it)."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return
    kind, key, numel = pid[1], pid[2], pid[4]
    itemsize = STORAGE_ITEMSIZE.get(kind.name, 1) if isinstance(kind, _Global) else 1
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise Unreadable(f"{DAMAGED} (storage {key!r} of {numel!r} values)")
    nbytes = numel * itemsize
    if not isinstance(key, str) or declared.get(key, nbytes) != nbytes:
        raise Unreadable(f"{DAMAGED} (storage {key!r} declared with two sizes)")
    declared[key] = nbytes
    total = sum(declared.values())
    if total > budget:
        raise Unsafe(f"{REFUSED} storage {key!r} declares {numel} values ({nbytes} bytes), {total} bytes in all, "
                     f"but the file holds {budget}; a storage must be backed by the file's bytes")


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
        if not torch_may_read(module, name):  # check_pickle refused it already; a second line of defence
            raise unsafe_global(module, name)
        raise Unsupported(f"global {module}.{name}")

    def _rebuild_tensor(self, storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                        *_: Any) -> np.ndarray:
        tensor = _view(storage, offset, size, stride)
        key = self.keys.get(id(storage))
        if key is not None:
            self.origin[id(tensor)] = (key, storage.dtype, len(storage), offset, size, stride)
        return tensor

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, key, numel = _storage_id(pid)
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


def _storage_id(pid: Any) -> tuple[Any, str, Any]:
    """``(kind, key, numel)`` of a pickle's persistent id ``("storage", kind, key, location, numel)``; any other id
    is ``Unsupported`` (``numel`` is checked against the record by ``_storage_entry``)."""
    try:
        typename, kind, key, _, numel = pid
    except (TypeError, ValueError):
        raise Unsupported(f"persistent id {pid!r}") from None
    if typename != "storage" or type(kind) is not _StorageType or not isinstance(key, str):
        raise Unsupported(f"persistent id {pid!r}")
    return kind, key, numel


def _storage_entry(entries: dict[str, tuple[int, int, int]], prefix: str, key: str, dtype: np.dtype,
                   numel: Any) -> tuple[str, tuple[int, int, int]]:
    """Storage ``key``'s record name and entry, checked to hold exactly ``numel`` values of ``dtype`` (what both
    readers check before a storage, real or a stand-in, exists)."""
    name = f"{prefix}data/{key}"
    entry = entries.get(name)
    if entry is None:
        raise Unreadable(f"{DAMAGED} (no record for storage {key!r})")
    if not isinstance(numel, int) or numel * dtype.itemsize != entry[1]:
        raise Unreadable(f"{DAMAGED} (storage {key!r} holds {entry[1]} bytes, not {numel} {dtype.name} values)")
    return name, entry


def _storage(data: bytes, entries: dict[str, tuple[int, int, int]], prefix: str, key: str, dtype: np.dtype,
             numel: Any) -> np.ndarray:
    """Storage ``key``: its record as a numpy array of ``numel`` values of ``dtype``."""
    name, entry = _storage_entry(entries, prefix, key, dtype, numel)
    return np.frombuffer(_record(data, name, entry), dtype=dtype)


class _SizeUnpickler(_Unpickler):
    """``_Unpickler`` whose storages are stand-ins of the records' sizes (one value repeated), so that every tensor's
    place in its storage is checked without reading the storage."""

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, key, numel = _storage_id(pid)
        _storage_entry(self.entries, self.prefix, key, kind.dtype, numel)
        return np.lib.stride_tricks.as_strided(np.zeros(1, kind.dtype), shape=(numel,), strides=(0,),
                                               writeable=False)


#: data.pkl's bytes -> the state dict it describes (``_Unpickler.plan``): the files of one population share a
#: few, so each is unpickled once per process; None for objects that are not flat state dicts.
_PLANS: dict[bytes, tuple[Entry, ...] | None] = {}
MAX_PLANS = 256


def load(data: bytes) -> Any:
    """The object a ``torch.save`` archive holds, its tensors as read-only numpy views of ``data``.

    Raises ``Unreadable`` for a damaged archive (``Unsafe`` for a hostile one), ``Unsupported`` for what only
    ``torch.load`` reads, and nothing else. A flat state dict whose ``data.pkl`` this process has unpickled before
    (every file of a population but the first few) is rebuilt from the same tensor descriptions without unpickling
    again, as a plain dict.
    """
    try:
        return _load(data)
    except (Unreadable, Unsupported):
        raise
    except Exception as e:  # noqa: BLE001 - a damaged archive must not end in another exception
        raise Unreadable(f"{DAMAGED} ({type(e).__name__}: {e})") from None


def _load(data: bytes) -> Any:
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
    if pickled not in _PLANS:  # a data.pkl this process read before was checked then
        check_pickle(pickled, budget=len(data))
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


def check_for_torch(data: bytes) -> None:
    """What must hold before ``data`` goes to ``torch.load(weights_only=True)``: every pickle in it passes
    ``check_pickle`` (its storages backed by the file's bytes), and a zip archive's records are bounded (a compressed
    one may declare ``DEFLATE_RATIO`` bytes per byte it holds). Raises ``Unreadable`` (``Unsafe``) and nothing else.

    A legacy (pre-1.6) file is five pickles in a row (magic number, protocol, system info, the object, its storage
    keys) and then the storages' bytes; each pickle is checked, the storages within the file's size.
    """
    try:
        if data[:4] == ZIP_MAGIC:
            _check_zip_for_torch(data)
            return
        f = io.BytesIO(data)
        declared: dict[str, int] = {}
        for _ in range(5):
            check_pickle(f, budget=len(data), declared=declared)
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file must not end in another exception
        raise Unreadable(f"{DAMAGED} ({type(e).__name__}: {e})") from None


def _check_zip_for_torch(data: bytes) -> None:
    entries = _entries(data)
    total = 0
    for name, (_, usize, _, method, csize, flags) in entries.items():
        if flags & 1:
            raise Unreadable(f"{DAMAGED} (record {name!r} is encrypted)")
        if method not in (0, 8) or (method == 0 and usize != csize):
            raise Unreadable(f"{DAMAGED} (record {name!r}: compression method {method}, {csize} bytes for {usize})")
        if usize > DEFLATE_RATIO * csize + 1024:
            raise Unsafe(f"{REFUSED} record {name!r} declares {usize} bytes from {csize} compressed ones (more than "
                         f"deflate's {DEFLATE_RATIO}:1 allows; a zip bomb?)")
        total += usize
    pkl = next((name for name in entries if name.endswith("/data.pkl") and name.count("/") == 1), None)
    if pkl is None:
        raise Unreadable(f"{DAMAGED} (no data.pkl in the archive)")
    local, usize, crc, method, csize, _ = entries[pkl]
    stored = _record(data, pkl, entries[pkl], size=csize)
    if method == 8:
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        pickled = inflate.decompress(stored, usize + 1)
        if len(pickled) != usize or zlib.crc32(pickled) != crc:
            raise Unreadable(f"{DAMAGED} (record {pkl!r} does not inflate to its {usize} bytes)")
    else:
        pickled = bytes(stored)
    check_pickle(pickled, budget=total)
