"""Writing a zoo: create a store for a manifest, commit units, compact metadata.

Commit protocol (docs/design.md §3): a unit's weights are written as one
whole shard and flushed; only then is its metadata fragment written under a
temporary name and renamed into place. A checkpoint exists if and only if its
metadata row exists, so a crash at any instant leaves no half checkpoint and
a rerun redoes exactly the units without metadata. Units own disjoint shards
and fragment files, so concurrent writers never touch the same file.

Speed without loosening that order: a helper thread writes and fsyncs the
shard while this thread encodes the fragment (checksums, Arrow columns,
Parquet bytes in memory) and writes and fsyncs it under its temporary name;
the rename waits for both. ``write_units`` commits a batch that way with one
fsync of the metadata folder. ``durable=False`` (opt-in) skips every fsync.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from .. import __version__
from ..errors import StoreError, ZooError
from ..manifest import Manifest
from ..paths import is_url, local_path
from ..plan import Plan, Unit
from ..versions import torch_version
from . import format as fmt
from .reader import Zoo
from .rows import fast_path_ok, row_checksums, shard_parts

if TYPE_CHECKING:
    import torch

CODECS = {"zstd": lambda: zarr.codecs.ZstdCodec(level=3), "blosc": lambda: zarr.codecs.BloscCodec()}


#: Parquet options of a unit's fragment (a few dozen rows, read whole): no compression, dictionaries or statistics,
#: which cost more to write than they save on so few rows (``benchmarks/store.py``). Compacted parts keep pyarrow's
#: defaults. Either is plain Parquet of the same schema; readers see no difference.
FRAGMENT_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, parts: Sequence[Any]) -> None:
    """Write every buffer of ``parts`` to ``fd``, in order (``os.write`` may write less than it is given)."""
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


def _write_file(path: Path, parts: Sequence[Any], durable: bool) -> None:
    """Create (or replace) ``path`` holding ``parts``, flushed to disk when ``durable`` before this returns."""
    fd = os.open(path, _CREATE, 0o666)
    try:
        _write_all(fd, parts)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str | Path) -> None:
    """Make renames, creations and removals of entries in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parquet_options(name: str) -> Mapping[str, Any]:
    """A unit fragment's cheap options, or pyarrow's defaults for any other metadata file (compacted parts)."""
    return FRAGMENT_OPTIONS if fmt.unit_of_fragment(name) is not None else {}


def _parquet_bytes(table: pa.Table, options: Mapping[str, Any]) -> pa.Buffer:
    """``table`` as the bytes of one Parquet file (encoded in memory: the file is then written in one call)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


_POOL_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _io_pool() -> ThreadPoolExecutor:
    """This process's helper threads for writing and flushing shard files (a forked child, which has none of its
    parent's threads, starts its own)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="weightzoo-io")
        return _POOL[1]


def _write_shard(path: Path, rows: np.ndarray, shard_rows: int, durable: bool) -> None:
    """Create (or replace) the shard file whose first slots hold ``rows``, encoded by ``rows.shard_parts`` (the
    bytes zarr writes) and flushed to disk when ``durable``. A shard of only the fill value has no file (zarr
    writes none): an old one is removed."""
    parts = shard_parts(rows, shard_rows)
    if parts is None:
        if path.exists():
            path.unlink()
            if durable:
                _fsync_dir(path.parent)
        return
    if not path.parent.is_dir():  # the shard's folder (c/<shard>/) is new
        path.parent.mkdir(parents=True, exist_ok=True)
    _write_file(path, parts, durable)


def _flush_file(path: Path) -> None:
    """Flush a file written by someone else (zarr) to disk; a missing file (zarr wrote none) is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ZooWriter(Zoo):
    """A store opened for writing units.

    ``durable`` (default True): each commit waits until the unit's shard and then its metadata are on disk
    (``fsync``), so a power loss or kernel crash never leaves a checkpoint whose weights were lost. ``False``
    skips every ``fsync`` for a bulk write that can be redone: the commit order still holds for a process that
    dies (the kernel keeps what was written), but after a power loss or kernel crash a committed unit may have lost
    its weights or be lost itself; ``zoo verify`` names such rows by their checksums.
    """

    read_only = False

    def __init__(self, path: str | Path, *, storage_options: dict | None = None, durable: bool = True) -> None:
        super().__init__(path, storage_options=storage_options)
        self.group = self._open_group(mode="r+")
        self.durable = bool(durable)
        self._direct: dict[str, bool] = {}  # arch -> shards encoded here (fast_path_ok), asked once per array
        self._hparams: dict[tuple[int, ...], dict[str, pa.Array]] = {}  # model ids -> hyperparameter columns

    def adopt(self, manifest: Manifest) -> ZooWriter:
        """Take the caller's ``manifest`` (equal to the stored one) as this writer's: a build then builds modules
        from the manifest it was given (its own, trusted), not from the store's copy (data). Returns self."""
        if self.attrs["manifest"] != manifest.to_dict():
            raise StoreError(f"{self.url}: the store holds another manifest than the one given")
        self.__dict__["manifest"] = manifest
        return self

    # --- the commit protocol -------------------------------------------------------------
    def write_unit(self, unit: Unit, weights: np.ndarray | torch.Tensor, records: Sequence[Mapping[str, Any]],
                   *, _after_weights: Callable[[], None] | None = None) -> None:
        """Commit one unit: ``weights`` is (models of the unit, row_length); one record per model.

        A record gives the checkpoint's metrics and provenance (see ``format.METRIC_COLUMNS`` and
        ``RUN_COLUMNS``) and ``status``; ids, row, checksum and hyperparameters are filled in here.
        """
        self.write_units([(unit, weights, records)], _after_weights=_after_weights)

    def write_units(self, batch: Iterable[tuple[Unit, np.ndarray | torch.Tensor, Sequence[Mapping[str, Any]]]],
                    *, _after_weights: Callable[[], None] | None = None) -> None:
        """Commit several units, each as ``write_unit`` would: every shard is written and made durable before any
        fragment of the batch is renamed into place, and the metadata folder is flushed once for the batch. A
        crash leaves each unit committed or absent. Every unit is checked before anything is written.

        ``_after_weights`` (tests) runs once the weights are durable, before any fragment is renamed into place.
        """
        items = [self._checked(unit, weights, records) for unit, weights, records in batch]
        ids = [unit.unit_id for unit, _, _ in items]
        if len(set(ids)) != len(ids):
            raise ZooError(f"units {sorted({i for i in ids if ids.count(i) > 1})} appear twice in one batch")
        if not items:
            return
        if self.local is None:  # an object store publishes each object whole and durable on PUT
            for unit, weights, _ in items:
                self._write_weights_zarr(unit, weights)
            if _after_weights is not None:
                _after_weights()
            for unit, weights, records in items:
                table = self._records_table(unit, records, row_checksums(weights))
                self._put_fragment(fmt.fragment_name(unit.unit_id), table)
            self.refresh()
            return

        # 1. weights: each unit's whole shard written and flushed by helper threads (file writes and fsync release
        #    the GIL) while this thread encodes the metadata and writes it to temporary files
        directory = self.local / fmt.METADATA_DIR
        shards: list[Future[None]] = []
        staged: list[tuple[Path, Path]] = []
        try:
            try:
                for unit, weights, _ in items:
                    shards.append(self._start_weights(unit, weights))
                directory.mkdir(parents=True, exist_ok=True)
                for unit, weights, records in items:
                    table = self._records_table(unit, records, row_checksums(weights))
                    payload = _parquet_bytes(table, FRAGMENT_OPTIONS)
                    name = fmt.fragment_name(unit.unit_id)
                    tmp = directory / f"{fmt.TMP_PREFIX}{uuid.uuid4().hex}-{name}"
                    staged.append((tmp, directory / name))
                    _write_file(tmp, [payload], self.durable)
            finally:
                wait(shards)  # no shard is still being written once this returns, whatever failed
            for shard in shards:
                shard.result()  # each shard durable (or the first failure raised): no fragment is visible before
            if _after_weights is not None:
                _after_weights()
            # 2. metadata: each fragment renamed into place, then the folder flushed once for the batch
            for tmp, final in staged:
                os.replace(tmp, final)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        if self.durable:
            _fsync_dir(directory)
        self.refresh()

    def _checked(self, unit: Unit, weights: np.ndarray | torch.Tensor, records: Sequence[Mapping[str, Any]]
                 ) -> tuple[Unit, np.ndarray, Sequence[Mapping[str, Any]]]:
        """The unit's rows as a C-contiguous little-endian float32 array, after checking shapes and records."""
        if not isinstance(weights, np.ndarray):  # a torch tensor (torch is not imported to ask)
            weights = weights.detach().cpu().numpy()
        weights = np.ascontiguousarray(weights, dtype="<f4")
        layout_size = self.attrs["architectures"][unit.arch_id]["layout"]["size"]
        n = len(unit.model_ids)
        if weights.shape != (n, layout_size):
            raise ZooError(f"unit {unit.unit_id}: weights of shape {weights.shape}; expected ({n}, {layout_size})")
        if len(records) != n:
            raise ZooError(f"unit {unit.unit_id}: {len(records)} metadata records for {n} models")
        allowed = fmt.record_fields(self.manifest.kind)
        for rec in records:
            unknown = set(rec) - allowed
            if unknown:
                raise ZooError(f"unit {unit.unit_id}: unknown metadata fields {sorted(unknown)}; "
                               f"allowed: {', '.join(sorted(allowed))}")
            if rec.get("status", "ok") not in fmt.STATUSES:
                raise ZooError(f"unit {unit.unit_id}: status {rec['status']!r}; allowed: {', '.join(fmt.STATUSES)}")
        return unit, weights, records

    def _start_weights(self, unit: Unit, weights: np.ndarray) -> Future[None]:
        """Start writing the unit's shard (a local store) on a helper thread; the future is done once it is durable.

        The direct layout's shard is encoded by the writer itself (``rows.shard_parts``, the bytes zarr writes) and
        written in one go; any other layout (compressed) is written through zarr here, then flushed there."""
        assert self.local is not None
        array = self.weights(unit.arch_id)
        g = self.attrs["group_size"]
        path = self.local / array.path / array.metadata.encode_chunk_key((unit.row_start // g, 0))
        direct = self._direct.get(unit.arch_id)
        if direct is None:
            direct = self._direct[unit.arch_id] = fast_path_ok(array)
        if direct:
            return _io_pool().submit(_write_shard, path, weights, g, self.durable)
        self._write_weights_zarr(unit, weights)
        if self.durable:
            return _io_pool().submit(_flush_file, path)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _write_weights_zarr(self, unit: Unit, weights: np.ndarray) -> None:
        """The unit's rows, padded to the group size, written through zarr (compressed arrays, object stores)."""
        g = self.attrs["group_size"]
        block = np.zeros((g, weights.shape[1]), dtype="<f4")
        block[:len(weights)] = weights
        self.weights(unit.arch_id)[unit.row_start:unit.row_start + g] = block

    def _hparam_columns(self, model_ids: tuple[int, ...]) -> dict[str, pa.Array]:
        """The hyperparameter columns of these models (the same for every epoch of a group: built once)."""
        columns = self._hparams.get(model_ids)
        if columns is None:
            hparams = [self.manifest.models[m].hparams for m in model_ids]
            own = {**fmt.ID_COLUMNS, **fmt.METRIC_COLUMNS, **fmt.RUN_COLUMNS, **fmt.KIND_COLUMNS[self.manifest.kind]}
            columns = {f.name: pa.array([h.get(f.name) for h in hparams], f.type)
                       for f in self.schema if f.name not in own}
            if len(self._hparams) >= 256:  # a build moves through its groups in order: keep the recent ones
                self._hparams.clear()
            self._hparams[model_ids] = columns
        return columns

    def _records_table(self, unit: Unit, records: Sequence[Mapping[str, Any]], checksums: np.ndarray) -> pa.Table:
        """The unit's metadata rows, built column by column in the schema's order; ``checksums``: the rows'
        ``row_checksums``."""
        n = len(unit.model_ids)
        filled: dict[str, Any] = {
            "model_id": np.asarray(unit.model_ids, dtype=np.int64),
            "row": np.arange(unit.row_start, unit.row_start + n, dtype=np.int64),
            "crc32": checksums,
            "status": [rec.get("status", "ok") for rec in records],
        }
        defaults = {"epoch": unit.epoch, "arch": unit.arch_id, "unit": unit.unit_id, "group": unit.group,
                    "weightzoo_version": __version__, "torch_version": torch_version()}
        hparams = self._hparam_columns(unit.model_ids)
        given = set().union(*records) if records else set()
        arrays: list[pa.Array] = []
        for f in self.schema:
            name = f.name
            if name in hparams:
                arrays.append(hparams[name])
            elif name in filled:
                arrays.append(pa.array(filled[name], f.type))
            elif name in given:  # reported by at least one record (a record may also set a provenance default)
                default = defaults.get(name)
                arrays.append(pa.array([rec.get(name, default) for rec in records], f.type))
            elif name in defaults:
                arrays.append(pa.array([defaults[name]] * n, f.type))
            else:
                arrays.append(pa.nulls(n, f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _put_fragment(self, name: str, table: pa.Table) -> None:
        """A metadata file of a remote store, published whole (object stores make a PUT visible atomically)."""
        fs, root = self.fs
        with fs.open(f"{root}/{fmt.METADATA_DIR}/{name}", "wb") as f:
            f.write(_parquet_bytes(table, _parquet_options(name)))

    def _write_fragment(self, name: str, table: pa.Table) -> None:
        """A metadata file written to a temporary name, flushed, renamed into place, and the rename flushed; always
        durable (compaction removes fragments once this returns: their rows must not live only in the cache)."""
        if self.local is None:
            self._put_fragment(name, table)
            return
        directory = self.local / fmt.METADATA_DIR
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{fmt.TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        try:
            _write_file(tmp, [_parquet_bytes(table, _parquet_options(name))], durable=True)
            os.replace(tmp, directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)

    # --- maintenance --------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge unit fragments into one Parquet part; returns how many fragments were merged.

        The part is renamed into place before any fragment is removed; a crash in between
        leaves both, and readers skip fragments whose units a part already covers.
        """
        fs, _ = self.fs
        fragments = [f for f in self.metadata_files() if fmt.unit_of_fragment(f.rsplit("/", 1)[-1]) is not None]
        if not fragments:
            return 0
        schema = self.schema
        table = pa.concat_tables([pq.read_table(f, filesystem=fs, schema=schema) for f in fragments])
        table = table.sort_by([("unit", "ascending"), ("row", "ascending")])
        self._write_fragment(f"{fmt.PART_PREFIX}{uuid.uuid4().hex}.parquet", table)
        fs.rm(fragments)  # one call: object stores delete a list in bulk requests
        self.refresh()
        return len(fragments)

    def clean_temporary(self) -> int:
        """Remove temporary files left by writers that died mid-commit."""
        fs, root = self.fs
        try:
            names = fs.ls(f"{root}/{fmt.METADATA_DIR}", detail=False)
        except FileNotFoundError:
            return 0
        tmp = [n for n in names if n.rsplit("/", 1)[-1].startswith(fmt.TMP_PREFIX)]
        for n in tmp:
            fs.rm(n)
        return len(tmp)


def _store_attributes(manifest: Manifest, plan: Plan, compressor: str | None) -> dict[str, Any]:
    archs = {}
    for arch_id, arch in manifest.architectures.items():
        archs[arch_id] = {"architecture": arch.to_dict(), "layout": arch.layout.to_dict(),
                          "symmetry": arch.symmetry.to_dict(), "rows": plan.rows(arch_id),
                          "array": f"{fmt.WEIGHTS_GROUP}/{arch_id}"}
    return {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "library_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": manifest.to_dict(),
        "manifest_source": manifest.source,
        "group_size": plan.group_size,
        "plan_version": plan.version,
        "checkpoint_epochs": list(plan.epochs),
        "models": len(manifest.models),
        "units": plan.unit_count,
        "compressor": compressor,
        "architectures": archs,
        "metadata": {"directory": fmt.METADATA_DIR, "schema": [
            [f.name, str(f.type)] for f in fmt.metadata_schema(manifest.hparam_columns(), manifest.kind)]},
    }


def create(path: str | Path, manifest: Manifest, *, group_size: int | None = None, compressor: str | None = None,
           storage_options: dict | None = None, extra_attrs: Mapping[str, Any] | None = None,
           durable: bool = True) -> ZooWriter:
    """Create a store for ``manifest``, or reopen it when it already holds the same zoo (resume).

    ``extra_attrs`` join the self-description of a store this call creates (``imported_from``, ``split``).
    ``durable=False`` commits units without waiting for the disk (see ``ZooWriter``): only for a bulk write that
    can be redone after a power loss.
    An existing store built from another manifest or group size is an error, never overwritten.
    """
    plan = Plan(manifest, group_size)
    if compressor is not None and compressor not in CODECS:
        raise ZooError(f"compressor {compressor!r}; allowed: {', '.join(sorted(CODECS))} or none")
    try:
        existing = ZooWriter(path, storage_options=storage_options, durable=durable)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        same_manifest = existing.attrs["manifest"] == manifest.to_dict()
        if not same_manifest:
            raise StoreError(f"{path}: the store holds zoo {existing.manifest.name!r} built from another manifest "
                             f"({existing.attrs.get('manifest_source')}); choose a new output path")
        if group_size is not None and existing.attrs["group_size"] != group_size:
            raise StoreError(f"{path}: the store was created with group size {existing.attrs['group_size']}, "
                             f"not {group_size}; rerun with --group-size {existing.attrs['group_size']}")
        _create_arrays(existing.group, existing.attrs)  # a creator that died between group and arrays
        return existing.adopt(manifest)
    if not is_url(path):
        local = local_path(path)
        if local.exists() and (not local.is_dir() or any(local.iterdir())):
            raise StoreError(f"{path}: exists and is not a weightzoo store; choose a new output path")
    else:
        fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        try:
            occupied = fs.exists(root) and bool(fs.ls(root, detail=False, refresh=True))
        except (FileNotFoundError, PermissionError):
            occupied = False  # a missing bucket or an unlistable prefix: creating below names the problem
        if occupied:
            raise StoreError(f"{path}: exists and is not a weightzoo store; choose a new output path")
    attrs = {**_store_attributes(manifest, plan, compressor), **(extra_attrs or {})}
    try:
        store = (zarr.storage.LocalStore(local_path(path)) if not is_url(path) else
                 zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}))
        group = zarr.open_group(store, mode="w-", attributes={fmt.ATTRS_KEY: attrs})
        _create_arrays(group, attrs)
    except (FileNotFoundError, PermissionError) as e:  # e.g. no such bucket, no write permission
        raise StoreError(f"{path}: cannot create a store here ({type(e).__name__}: {e})") from None
    return ZooWriter(path, storage_options=storage_options, durable=durable).adopt(manifest)


def _create_arrays(group: zarr.Group, attrs: dict[str, Any]) -> None:
    """One (rows, row_length) float32 array per layout; a shard = one unit, an inner chunk = one row."""
    weights = group.require_group(fmt.WEIGHTS_GROUP)
    compressor = attrs["compressor"]
    for arch_id, arch_attrs in attrs["architectures"].items():
        if arch_id in weights:
            continue
        width = arch_attrs["layout"]["size"]
        weights.create_array(arch_id, shape=(arch_attrs["rows"], width), dtype="float32",
                             chunks=(1, width), shards=(attrs["group_size"], width), fill_value=0.0,
                             compressors=CODECS[compressor]() if compressor else None,
                             dimension_names=("row", "param"), attributes={"layout": arch_attrs["layout"]})

