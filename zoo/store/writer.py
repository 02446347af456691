"""Writing a zoo: create a store for a manifest, commit units, compact metadata.

Commit protocol (DESIGN.md section 3): a unit's weights are written as one
whole shard and flushed; only then is its metadata fragment written under a
temporary name and renamed into place. A checkpoint exists if and only if its
metadata row exists, so a crash at any instant leaves no half checkpoint and
a rerun redoes exactly the units without metadata. Units own disjoint shards
and fragment files, so concurrent writers never touch the same file.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
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
from ..plan import Plan, Unit
from . import format as fmt
from .reader import Zoo, is_url, local_path
from .rows import encode_shard, fast_path_ok, row_checksums

if TYPE_CHECKING:
    import torch

CODECS = {"zstd": lambda: zarr.codecs.ZstdCodec(level=3), "blosc": lambda: zarr.codecs.BloscCodec()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ZooWriter(Zoo):
    """A store opened for writing units."""

    read_only = False

    def __init__(self, path: str | Path, *, storage_options: dict | None = None) -> None:
        super().__init__(path, storage_options=storage_options)
        self.group = self._open_group(mode="r+")

    # --- the commit protocol -------------------------------------------------------------
    def write_unit(self, unit: Unit, weights: np.ndarray | torch.Tensor, records: Sequence[Mapping[str, Any]],
                   *, _after_weights: Callable[[], None] | None = None) -> None:
        """Commit one unit: ``weights`` is (models of the unit, row_length); one record per model.

        A record gives the checkpoint's metrics and provenance (see ``format.METRIC_COLUMNS`` and
        ``RUN_COLUMNS``) and ``status``; ids, row, checksum and hyperparameters are filled in here.
        """
        if not isinstance(weights, np.ndarray):  # a torch tensor (torch is not imported to ask)
            weights = weights.detach().cpu().numpy()
        weights = np.ascontiguousarray(weights, dtype="<f4")
        layout_size = self.attrs["architectures"][unit.arch_id]["layout"]["size"]
        n = len(unit.model_ids)
        if weights.shape != (n, layout_size):
            raise ZooError(f"unit {unit.unit_id}: weights of shape {weights.shape}; expected ({n}, {layout_size})")
        if len(records) != n:
            raise ZooError(f"unit {unit.unit_id}: {len(records)} metadata records for {n} models")
        allowed = fmt.RECORD_FIELDS
        for rec in records:
            unknown = set(rec) - allowed
            if unknown:
                raise ZooError(f"unit {unit.unit_id}: unknown metadata fields {sorted(unknown)}; "
                               f"allowed: {', '.join(sorted(allowed))}")
            if rec.get("status", "ok") not in fmt.STATUSES:
                raise ZooError(f"unit {unit.unit_id}: status {rec['status']!r}; allowed: {', '.join(fmt.STATUSES)}")

        # 1. weights: the unit's whole shard, padded to the group size, then flushed
        g = self.attrs["group_size"]
        block = np.zeros((g, layout_size), dtype="<f4")
        block[:n] = weights
        array = self.weights(unit.arch_id)
        if self.local is not None and fast_path_ok(array):
            self._write_shard(array, unit.row_start // g, block)
        else:
            array[unit.row_start:unit.row_start + g] = block
        if self.local is not None:
            shard_key = array.metadata.encode_chunk_key((unit.row_start // g, 0))
            shard = self.local / array.path / shard_key
            if shard.exists():
                _fsync(shard)
        if _after_weights is not None:
            _after_weights()

        # 2. metadata: fragment written to a temporary name, flushed, renamed into place
        table = self._records_table(unit, weights, records)
        self._write_fragment(fmt.fragment_name(unit.unit_id), table)
        self.refresh()

    def _write_shard(self, array: zarr.Array, shard: int, block: np.ndarray) -> None:
        """The unit's shard file, encoded here (``rows.encode_shard``, the same bytes zarr writes) and written
        in one call; a shard zarr would leave out (every row the fill value) is removed, as zarr removes it."""
        assert self.local is not None
        path = self.local / array.path / array.metadata.encode_chunk_key((shard, 0))
        data = encode_shard(block)
        if data is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def _records_table(self, unit: Unit, weights: np.ndarray, records: Sequence[Mapping[str, Any]]) -> pa.Table:
        schema = self.schema
        n = len(unit.model_ids)
        columns: dict[str, list] = {name: [None] * n for name in schema.names}
        fixed = {"epoch": unit.epoch, "arch": unit.arch_id, "unit": unit.unit_id, "group": unit.group,
                 "weightzoo_version": __version__, "torch_version": _torch_version()}
        for name, value in fixed.items():
            columns[name] = [value] * n
        columns["model_id"] = list(unit.model_ids)
        columns["row"] = [unit.row_start + slot for slot in range(n)]
        columns["crc32"] = row_checksums(weights).tolist()
        columns["status"] = [rec.get("status", "ok") for rec in records]
        for slot, (model_id, rec) in enumerate(zip(unit.model_ids, records)):
            for k, v in rec.items():
                if k != "status":
                    columns[k][slot] = v
            for k, v in self.manifest.models[model_id].hparams.items():
                columns[k][slot] = v
        return pa.Table.from_pydict(columns, schema=schema)

    def _write_fragment(self, name: str, table: pa.Table) -> None:
        fs, root = self.fs
        directory = f"{root}/{fmt.METADATA_DIR}"
        if self.local is not None:
            os.makedirs(directory, exist_ok=True)
            tmp = Path(directory) / f"{fmt.TMP_PREFIX}{uuid.uuid4().hex}-{name}"
            pq.write_table(table, tmp)
            _fsync(tmp)
            os.replace(tmp, Path(directory) / name)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        else:  # object stores publish a whole object atomically on PUT
            with fs.open(f"{directory}/{name}", "wb") as f:
                pq.write_table(table, f)

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
        "units": len(plan.units),
        "compressor": compressor,
        "architectures": archs,
        "metadata": {"directory": fmt.METADATA_DIR, "schema": [[f.name, str(f.type)] for f in
                                                               fmt.metadata_schema(manifest.hparam_columns())]},
    }


def create(path: str | Path, manifest: Manifest, *, group_size: int | None = None, compressor: str | None = None,
           storage_options: dict | None = None, extra_attrs: Mapping[str, Any] | None = None) -> ZooWriter:
    """Create a store for ``manifest``, or reopen it when it already holds the same zoo (resume).

    ``extra_attrs`` join the self-description of a store this call creates (``imported_from``, ``split``).
    An existing store built from another manifest or group size is an error, never overwritten.
    """
    plan = Plan(manifest, group_size)
    if compressor is not None and compressor not in CODECS:
        raise ZooError(f"compressor {compressor!r}; allowed: {', '.join(sorted(CODECS))} or none")
    try:
        existing = ZooWriter(path, storage_options=storage_options)
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
        return existing
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
    return ZooWriter(path, storage_options=storage_options)


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


def _torch_version() -> str:
    """torch's version without importing it (a store written from numpy rows never needs torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    return _installed_torch()


@functools.cache
def _installed_torch() -> str:
    """The installed distribution's version (reading package metadata costs milliseconds: once per process)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"
