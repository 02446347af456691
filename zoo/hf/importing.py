"""Re-create a store from an export, unit by unit through ``zoo.store``'s writer, every row checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from zoo.errors import ZooError
from zoo.plan import Plan, Unit
from zoo.store import ZooWriter, create
from zoo.store import format as fmt
from zoo.store.attributes import check_attributes, check_plan, stored_manifest
from zoo.store.rows import row_checksums

from .export import DESCRIPTOR, WEIGHTS_COLUMN
from .sources import Export, data_files, read_descriptor, resolve


def import_hf(src: str | Path, store: str | Path, *, hub: bool = False, revision: str | None = None,
              quiet: bool = True, storage_options: dict | None = None,
              download: Callable[..., str] | None = None) -> dict[str, Any]:
    """Re-create the store of an export (a local folder, ``hf://user/name[@revision]``, or ``user/name`` with
    ``hub``) at ``store``; resumable (committed units are skipped), and every row is checked against its
    exported checksum. The export is checked before the store is created, so a refused one writes nothing."""
    export = resolve(src, hub=hub, revision=revision, download=download)
    return import_export(export, store, quiet=quiet, storage_options=storage_options)


def import_export(export: Export, store: str | Path, *, quiet: bool = True, storage_options: dict | None = None
            ) -> dict[str, Any]:
    """``import_hf`` of an export already on this machine (also how the cache fills itself)."""
    folder = export.folder
    desc = read_descriptor(folder)
    attrs = desc["store_attributes"]
    # the descriptor is data: its attributes are checked as a store's are, and its layouts and specs are taken as
    # stored (no module is built, no factory it names is called)
    if attrs.get("format") != fmt.FORMAT_NAME or attrs.get("format_version") not in fmt.READABLE_VERSIONS:
        raise ZooError(f"{folder / DESCRIPTOR}: store_attributes of format {attrs.get('format')!r} version "
                       f"{attrs.get('format_version')!r}; this library reads {fmt.FORMAT_NAME} versions "
                       f"{', '.join(map(str, fmt.READABLE_VERSIONS))}")
    check_attributes(attrs, str(folder / DESCRIPTOR))
    manifest = stored_manifest(attrs, str(folder / DESCRIPTOR))
    files = data_files(export, desc)
    plan = Plan(manifest, attrs["group_size"], attrs.get("plan_version", 1))
    check_plan(plan, attrs, str(folder / DESCRIPTOR))
    units: dict[int, Unit] = {}
    where: dict[int, list[tuple[Path, int]]] = {}
    for f in files:
        pf = _parquet(f)
        if pf.metadata.num_rows > plan.checkpoints:
            raise ZooError(f"{f}: declares {pf.metadata.num_rows} rows; the export's plan has {plan.checkpoints} "
                           "checkpoints")
        for g in range(pf.num_row_groups):
            for unit in set(pf.read_row_group(g, columns=["unit"]).column("unit").to_pylist()):
                if not (isinstance(unit, int) and 0 <= unit < plan.unit_count):
                    raise ZooError(f"{f}: row group {g} holds unit {unit}, which the manifest's plan does not have")
                units.setdefault(unit, plan.unit(unit))
                where.setdefault(unit, []).append((f, g))
    # the export's split by model travels with the store: loaders use it unless told otherwise
    extra = {"split": desc["splits"], **{k: attrs[k] for k in ("imported_from",) if k in attrs}}
    writer = create(store, manifest, group_size=attrs.get("group_size"), compressor=attrs.get("compressor"),
                    storage_options=storage_options, extra_attrs=extra)
    done = writer.done_units()
    todo = sorted(u for u in where if u not in done)
    groups = _RowGroups()
    bar = tqdm(total=sum(len(units[u].model_ids) for u in todo), unit="checkpoint", disable=quiet, desc="import")
    for unit_id in todo:
        unit = units[unit_id]
        table = pa.concat_tables([groups.rows(f, g, unit_id) for f, g in where[unit_id]])
        _write_imported_unit(writer, unit, table, folder)
        bar.update(len(unit.model_ids))
    bar.close()
    writer.refresh()
    return {"store": writer.url, "units_written": len(todo), "units_skipped": len(where) - len(todo),
            "checkpoints": writer.metadata.num_rows}


def _parquet(f: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(f)
    except (OSError, pa.ArrowException) as e:
        raise ZooError(f"{f}: not a readable Parquet file ({e}); the export is damaged") from None


class _RowGroups:
    """The last row group read from each file: units are imported in order and exported sorted by unit, so
    every row group is read once."""

    def __init__(self) -> None:
        self.cache: dict[Path, tuple[int, pa.Table]] = {}

    def rows(self, f: Path, g: int, unit: int) -> pa.Table:
        if self.cache.get(f, (None,))[0] != g:
            self.cache[f] = (g, pq.ParquetFile(f).read_row_group(g))
        table = self.cache[f][1]
        return table.filter(pc.equal(table.column("unit"), unit))


def _write_imported_unit(writer: ZooWriter, unit: Unit, table: pa.Table, folder: Path) -> None:
    ids = table.column("model_id").to_pylist()
    if sorted(ids) != sorted(unit.model_ids) or len(set(ids)) != len(ids):
        raise ZooError(f"{folder}: unit {unit.unit_id} (epoch {unit.epoch}) has rows for models {sorted(ids)}; "
                       f"the plan expects {sorted(unit.model_ids)}")
    order = [ids.index(m) for m in unit.model_ids]
    table = table.take(pa.array(order))
    weights = table.column(WEIGHTS_COLUMN).combine_chunks()
    width = weights.type.list_size
    rows = weights.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    allowed = fmt.record_fields(writer.manifest.kind)
    records = table.select([c for c in table.column_names if c in allowed]).to_pylist()
    exported = table.column("crc32").to_pylist()
    bad = [m for m, a, b in zip(unit.model_ids, row_checksums(rows), exported) if a != b]
    if bad:
        raise ZooError(f"{folder}: checksum mismatch for model {bad[0]} at epoch {unit.epoch} (unit "
                       f"{unit.unit_id}); the export is damaged")
    writer.write_unit(unit, rows, records)
