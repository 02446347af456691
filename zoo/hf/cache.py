"""The cache of imported exports, and ``open_source``: any source the datasets take, as an open zoo."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from zoo.errors import ZooError
from zoo.paths import cache_root, is_url
from zoo.store import Zoo, open_zoo

from .importing import import_export
from .sources import SPELLINGS, Export, data_files, download_export, hub_ref, local_export, read_descriptor


def cache_dir() -> Path:
    """Where exports become local stores: ``hub/`` and ``exports/`` under ``$WEIGHTZOO_CACHE`` (default
    ``~/.cache/weightzoo``)."""
    return cache_root()


def _cache_target(export: Export) -> Path:
    if export.ref is not None:
        return cache_dir() / "hub" / export.ref.cache_name
    folder = export.folder.resolve()  # a local export folder: its absolute path is its identity
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return cache_dir() / "exports" / f"{folder.name.lstrip('.') or 'export'}-{digest}.zoo"


def _rows_of_export(files: list[Path]) -> set[tuple[int, int, int]]:
    """(model id, epoch, crc32) of every checkpoint of an export, read from three columns only."""
    rows: set[tuple[int, int, int]] = set()
    for f in files:
        t = pq.read_table(f, columns=["model_id", "epoch", "crc32"])
        rows.update(zip(*(t.column(c).to_pylist() for c in ("model_id", "epoch", "crc32"))))
    return rows


def _cached_state(target: Path, desc: Mapping[str, Any], expected: set[tuple[int, int, int]]) -> str:
    """``complete`` (every row of the export present with its checksum, nothing else), ``partial`` (an
    interrupted import of this export: resume it) or ``stale`` (another export, a moved revision, a damaged
    store: start again)."""
    try:
        cached = open_zoo(target)
        attrs = desc["store_attributes"]
        if cached.attrs.get("manifest") != attrs.get("manifest") or cached.attrs.get("group_size") != attrs.get(
                "group_size"):
            return "stale"
        meta = cached.metadata
        have = set(zip(*(meta.column(c).to_pylist() for c in ("model_id", "epoch", "crc32"))))
    except (ZooError, OSError, pa.ArrowException, KeyError):
        return "stale"
    if have == expected:
        return "complete"
    return "partial" if have < expected else "stale"


def _cached_import(export: Export) -> Zoo:
    """The export imported once into the cache. Reused only when it holds every row of the export with the
    export's checksum; an interrupted import resumes; anything else is imported again from scratch."""
    desc = read_descriptor(export.folder)
    files = data_files(export, desc)
    target = _cache_target(export)
    if target.exists():
        state = _cached_state(target, desc, _rows_of_export(files))
        if state == "complete":
            return open_zoo(target)
        if state == "stale":
            shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    import_export(export, target)
    return open_zoo(target)


def open_source(src: str | Path | Zoo, *, hub: bool = False, revision: str | None = None,
                storage_options: dict | None = None, download: Callable[..., str] | None = None) -> Zoo:
    """Any source the datasets take: an open ``Zoo``; a store path or URL (read in place); an export folder or a
    Hub export (``hf://user/name[@revision]``, or ``user/name`` with ``hub``), imported once into the cache,
    keyed by (id, revision). A local path that does not exist is a ``StoreNotFoundError``, never a download."""
    ref = hub_ref(src, hub=hub, revision=revision)
    if isinstance(src, Zoo):
        return src
    if ref is not None:
        return _cached_import(download_export(ref, download))
    if revision is not None:
        raise ZooError(f"revision={revision!r} applies to Hub sources; {src} is not one ({SPELLINGS})")
    if is_url(src):
        return open_zoo(src, storage_options=storage_options)
    export = local_export(src)
    if export is not None:
        return _cached_import(export)
    return open_zoo(src, storage_options=storage_options)
