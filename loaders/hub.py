"""Hugging Face datasets: export a store as a Hub dataset repository, import one back, publish with the Hub.

Why this lives in ``loaders`` (DESIGN section 1): the export *consumes* a store, reading its rows and metadata
as every loader does, and ``open_source`` is how the datasets accept an export or a Hub id. The import writes
a store only through ``zoo.store``'s public writer API (``create``, ``ZooWriter.write_unit``), which any program
may call. Loaders may import ``zoo``, never ``builders``; ``zoo`` reaches this module only from the CLI, lazily,
inside its ``export``, ``push`` and ``import hf`` commands.

An export is a folder ``datasets.load_dataset`` reads offline::

    OUTDIR/
      README.md                           dataset card: YAML header (configs, license, tags, size) + body
      weightzoo.json                      the store's self-description (manifest, layouts, group size, splits)
      data/<arch>/<split>-00000-of-00003.parquet

One config per architecture, splits by model (train/val/test, every checkpoint of a model in one split). A
Parquet row is one checkpoint: the weights as a fixed-size ``list<float32>`` column beside the typed metadata
columns of the store, sorted by unit (shards <= 500 MB, row groups <= 64 MB), so the import reads each row
group once and re-creates the store unit by unit with bounded memory. ``weightzoo.json`` makes the round
trip exact: the same manifest and group size give the same plan, rows and checksums (verified on import).

Sources are explicit, because a name that merely looks like ``user/name`` must never download a stranger's
data: a local path (a store, or an export folder holding ``weightzoo.json``; a path that does not exist is an
error), ``hf://user/name[@revision]`` or a bare ``user/name`` with ``hub=True`` (an exported dataset repository,
downloaded with ``huggingface_hub``), or a store URL read in place through fsspec (``s3://``, ``https://``, and
``hf://datasets/user/repo/path.zoo``: a first component ``datasets`` is a store uploaded as files). The
descriptor comes from whoever published the export, so every data file it names must lie inside the export
folder (no absolute path, no ``..``, no symlink leading out), checked before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from zoo import __version__
from zoo.architectures.cache import cache_root
from zoo.columns import varied_columns
from zoo.errors import StoreNotFoundError, ZooError
from zoo.plan import Plan, Unit
from zoo.splits import DEFAULT_FRACTIONS, split_models
from zoo.store import Zoo, ZooWriter, create, open_zoo
from zoo.store import format as fmt
from zoo.store.attributes import check_attributes, check_plan, check_split, stored_manifest
from zoo.store.reader import is_url, local_path
from zoo.store.rows import row_checksums

SHARD_BYTES = 500 * 2**20
ROW_GROUP_BYTES = 64 * 2**20
DESCRIPTOR = "weightzoo.json"
WEIGHTS_COLUMN = "weights"
HUB_SCHEME = "hf://"
#: ``user/name`` as the Hub spells repository ids (each part starts with a letter or digit).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_SPELLINGS = ("an exported dataset repository is hf://user/name[@revision] (or user/name with hub=True / --hub); "
              "a store uploaded as files is hf://datasets/user/repo/path.zoo")


def _hf() -> ModuleType:
    """``huggingface_hub``, imported only by what talks to the Hub (it is the ``hf`` extra)."""
    try:
        import huggingface_hub
    except ModuleNotFoundError:
        raise ZooError("the Hugging Face Hub needs huggingface_hub, which is not installed: install weightzoo with "
                       "its hf extra (pip install -e \".[hf]\" in a clone of its repository)") from None
    return huggingface_hub


# --- export ---------------------------------------------------------------------------------------------
def export_hf(store: str | Path | Zoo, outdir: str | Path, *, split_fractions: Mapping[str, float] | None = None,
              seed: int = 0, shard_bytes: int = SHARD_BYTES, row_group_bytes: int = ROW_GROUP_BYTES,
              quiet: bool = True, repo_id: str | None = None) -> dict[str, Any]:
    """Write ``store`` as a Hugging Face dataset repository in ``outdir`` (a new or empty folder).

    Written into a temporary sibling folder and renamed into place, so a failed export leaves nothing; an
    occupied ``outdir`` is refused before anything is read. ``repo_id`` (set by ``push``) names the Hub
    repository in the dataset card's loading examples."""
    out = Path(outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooError(f"{out}: exists and is not an empty folder; choose a new output folder")
    z = store if isinstance(store, Zoo) else open_zoo(store)
    meta = z.metadata
    if meta.num_rows == 0:
        raise ZooError(f"{z.url}: no committed checkpoints to export")
    fractions = dict(split_fractions or DEFAULT_FRACTIONS)
    parts = split_models(meta.column("model_id").to_pylist(), fractions, seed)
    split_of = {m: name for name, ids in parts.items() for m in ids}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        files: dict[str, dict[str, list[str]]] = {}
        counts: dict[str, dict[str, int]] = {}
        total = meta.num_rows
        bar = tqdm(total=total, unit="checkpoint", disable=quiet, desc="export")
        for arch in z.arch_ids:
            width = z.layout(arch).size
            arch_meta = meta.filter(pc.equal(meta.column("arch"), arch))
            splits = np.array([split_of[m] for m in arch_meta.column("model_id").to_pylist()], dtype=object)
            files[arch], counts[arch] = {}, {}
            for split in parts:
                table = arch_meta.filter(pa.array(splits == split))
                if table.num_rows == 0:
                    continue
                table = table.sort_by([("unit", "ascending"), ("row", "ascending")])
                names = _write_split(z, arch, width, table, tmp / "data" / arch, split, shard_bytes,
                                     row_group_bytes, bar)
                files[arch][split] = [f"data/{arch}/{n}" for n in names]
                counts[arch][split] = table.num_rows
        bar.close()
        descriptor = {"format": "weightzoo-hf", "format_version": 1, "library_version": __version__,
                      "store_attributes": z.attrs, "split_fractions": fractions, "split_seed": seed,
                      "splits": {k: sorted(v) for k, v in parts.items()}, "files": files, "rows": counts,
                      "weights_column": WEIGHTS_COLUMN}
        (tmp / DESCRIPTOR).write_text(json.dumps(descriptor, indent=1))
        (tmp / "README.md").write_text(dataset_card(z, files, counts, repo_id=repo_id))
        try:
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except OSError as e:  # another process filled or took the folder meanwhile
            raise ZooError(f"{out}: cannot move the export into place ({e.strerror}); choose a new output "
                           "folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"outdir": str(out), "checkpoints": total, "files": sum(len(f) for a in files.values()
                                                                     for f in a.values()),
            "configs": list(files), "rows": counts}


def _write_split(z: Zoo, arch: str, width: int, table: pa.Table, folder: Path, split: str, shard_bytes: int,
                 row_group_bytes: int, bar: tqdm) -> list[str]:
    row_bytes = 4 * width + 512
    per_shard = max(1, shard_bytes // row_bytes)
    per_group = max(1, min(per_shard, row_group_bytes // row_bytes))
    n_shards = -(-table.num_rows // per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    weights_type = pa.list_(pa.float32(), width)
    names = []
    for s in range(n_shards):
        name = f"{split}-{s:05d}-of-{n_shards:05d}.parquet"
        part = table.slice(s * per_shard, per_shard)
        schema = part.schema.append(pa.field(WEIGHTS_COLUMN, weights_type))
        with pq.ParquetWriter(folder / name, schema) as writer:
            for g in range(0, part.num_rows, per_group):
                chunk = part.slice(g, per_group)
                rows = z.read_rows(arch, np.asarray(chunk.column("row").to_pylist(), dtype=np.int64))
                values = pa.array(rows.reshape(-1), type=pa.float32())
                weights = pa.FixedSizeListArray.from_arrays(values, width)
                writer.write_table(chunk.append_column(WEIGHTS_COLUMN, weights), row_group_size=per_group)
                bar.update(chunk.num_rows)
        names.append(name)
    return names


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def dataset_card(z: Zoo, files: Mapping[str, Mapping[str, list[str]]], counts: Mapping[str, Mapping[str, int]],
                 *, repo_id: str | None = None) -> str:
    """README.md of the export: the Hub's YAML header, then what the zoo is and how to load it."""
    m = z.manifest
    license_ = str(m.zoo.get("license") or "unknown").lower()
    total = sum(sum(c.values()) for c in counts.values())
    lines = ["---", f"license: {license_}", f"pretty_name: {json.dumps(m.name)}", "tags:",
             "- weight-space-learning", "- model-zoo", "- neural-network-weights", "- weightzoo",
             "size_categories:", f"- {_size_category(total)}", "configs:"]
    for i, (arch, splits) in enumerate(files.items()):
        lines.append(f"- config_name: {arch}")
        if i == 0:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split in splits:
            lines += [f"  - split: {split}", f"    path: data/{arch}/{split}-*.parquet"]
    lines.append("---")
    info = z.info()
    ds = m.dataset
    # the same question zoo report answers: which hyperparameters take more than one value in the stored rows
    varied, _ = varied_columns(z.metadata, m.hparam_columns())
    lines += ["", f"# {m.name}", "", m.zoo.get("description") or "A model zoo built with weightzoo.", "",
              "## Summary", "",
              "| | |", "|---|---|",
              f"| models | {info['models']:,} ({info['models_with_checkpoints']:,} with checkpoints) |",
              f"| checkpoints | {info['checkpoints']:,} of {info['checkpoints_planned']:,} planned |",
              f"| checkpoint epochs | {', '.join(str(e) for e in info['checkpoint_epochs'])} |",
              f"| dataset | {ds.get('name')} |",
              f"| training | {m.training.get('optimizer')}, lr {m.training.get('lr')}, "
              f"{m.training.get('epochs')} epochs, batch {m.training.get('batch_size')} |",
              f"| varied | {', '.join(sorted(varied)) or 'nothing (one configuration)'} |",
              f"| statuses | {', '.join(f'{k}: {v:,}' for k, v in info['status'].items())} |"]
    if info.get("final_test_acc"):
        f = info["final_test_acc"]
        lines.append(f"| final test accuracy (epoch {f['epoch']}) | {f['min']:.3f} - {f['max']:.3f}, "
                     f"median {f['median']:.3f} |")
    lines += ["", "Splits are by model (every checkpoint of a model is in one split): "
              + ", ".join(f"{s} {n:,}" for c in counts.values() for s, n in c.items()) + " checkpoints.", ""]
    lines += ["## Columns", "",
              "One row per checkpoint: `weights` (the flat float32 parameter vector, fixed length per config), "
              "`model_id`, `epoch`, `status` (`ok` or `diverged`), metrics (`train_loss`, `train_acc`, `val_loss`, "
              "`val_acc`, `test_loss`, `test_acc`, `gen_gap`), provenance, and one column per hyperparameter. "
              "`crc32` is the checksum of the row's little-endian float32 bytes.", ""]
    for arch in files:
        layout = z.layout(arch)
        lines += [f"## Layout of `{arch}` ({z.architecture(arch).name}, "
                  f"{layout.size:,} values per row)", "",
                  "| tensor | shape | offset | role |", "|---|---|---|---|"]
        lines += [f"| {t.name} | {tuple(t.shape)} | {t.offset} | {t.role} |" for t in layout.tensors]
        lines.append("")
    first = next(iter(files))
    repo = repo_id or "REPO_ID"
    lines += ["## Load", "", "With `datasets`:", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("{repo}", "{first}", split="train").with_format("torch")',
              'weights = ds[0]["weights"]            # torch.float32 vector', "```", "",
              "With weightzoo (not on PyPI: install it from its repository, `pip install -e \".[hf]\"` in a "
              "clone): symmetry-augmented batches in every learner's format (flat, SANE tokens, NFN, DWSNets, "
              "graphs), and the weights back as `nn.Module`s:", "",
              "```python", "from loaders import ZooDataset", "",
              f'ds = ZooDataset("hf://{repo}", view="tokens", split="train", augment=("permute",))',
              "```", "", f"or `zoo import hf hf://{repo} my.zoo` for the chunked store.", ""]
    citation = m.zoo.get("citation")
    if citation:
        lines += ["## Citation", "", "This zoo reproduces:", "", f"> {citation}", ""]
    lines += [f"Built and exported with weightzoo {__version__}.", ""]
    return "\n".join(lines)


# --- sources ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubRef:
    """An exported dataset repository on the Hub: ``repo_id`` at ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    @property
    def url(self) -> str:
        """``hf://repo_id[@revision]``: the form ``hub_ref`` reads back."""
        return HUB_SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")

    @property
    def cache_name(self) -> str:
        """The cache folder of this (id, revision): readable, never hidden (an id starts with a letter or
        digit), one folder level (``/`` in a revision such as ``refs/pr/1`` is quoted)."""
        name = self.repo_id.replace("/", "--")
        return f"{name}@{quote(self.revision, safe='')}.zoo" if self.revision else f"{name}.zoo"


def hub_ref(src: str | Path | Zoo, *, hub: bool = False, revision: str | None = None) -> HubRef | None:
    """The Hub export ``src`` names (``hf://user/name[@revision]``, or ``user/name[@revision]`` with ``hub``),
    or None for a local path or a store URL (``hf://datasets/...`` included)."""
    if isinstance(src, Zoo):
        if hub:
            raise ZooError(f"hub=True: {src.url} is an open store, not a Hub dataset id")
        return None
    text = str(src)
    if text.startswith(HUB_SCHEME):
        rest = text[len(HUB_SCHEME):]
        if rest.split("/", 1)[0] == "datasets":
            if hub:
                raise ZooError(f"{text}: a store URL read through fsspec; hub=True takes user/name")
            return None  # a store uploaded as files, read in place by fsspec's HfFileSystem
    elif hub:
        rest = text
    else:
        return None
    repo_id, at, named = rest.rstrip("/").partition("@")
    if not _REPO_ID.fullmatch(repo_id) or (at and not named):
        raise ZooError(f"{text}: not a Hub source; {_SPELLINGS}")
    rev = unquote(named) if named else None
    if rev is not None and revision is not None and rev != revision:
        raise ZooError(f"{text}: names revision {rev!r}, but revision={revision!r} was given; give one")
    rev = rev or revision
    if rev is not None and (not rev.strip() or any(c.isspace() or not c.isprintable() for c in rev)):
        raise ZooError(f"revision {rev!r}: expected a branch, tag or commit (no spaces)")
    return HubRef(repo_id, rev)


@dataclass(frozen=True)
class _Export:
    """An export folder on this machine; ``root`` bounds where its files may resolve (the folder itself, or
    for a Hub download the repository's cache folder, whose snapshot files are symlinks into its blobs)."""

    folder: Path
    root: Path
    ref: HubRef | None = None


def _download(ref: HubRef, download: Callable[..., str] | None) -> _Export:
    if download is None:
        download = _hf().snapshot_download
    try:
        folder = Path(download(repo_id=ref.repo_id, repo_type="dataset", revision=ref.revision))
    except Exception as e:  # the Hub client's many network/auth errors, reported in one voice
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ZooError(f"{ref.url}: could not download the Hub dataset: {type(e).__name__}: {first}") from None
    if not (folder / DESCRIPTOR).is_file():
        raise ZooError(f"{ref.url}: the Hub dataset has no {DESCRIPTOR}; not a weightzoo export (zoo export hf / "
                       "zoo push make one)")
    snapshots = folder.parent
    root = snapshots.parent if snapshots.name == "snapshots" else folder  # huggingface_hub's cache layout
    return _Export(folder, root, ref)


def _local_export(src: str | Path) -> _Export | None:
    """The export folder ``src`` names, None for a store; a path that does not exist is an error, never a
    download."""
    path = local_path(src)
    if not path.exists():
        raise StoreNotFoundError(f"{src}: no such file or folder (a store, or an export folder with {DESCRIPTOR}); "
                                 f"{_SPELLINGS}")
    return _Export(path, path) if (path / DESCRIPTOR).is_file() else None


def resolve_source(src: str | Path, *, hub: bool = False, revision: str | None = None,
                   download: Callable[..., str] | None = None) -> Path:
    """The export folder of ``src``: a local export folder, or a Hub export (``hf://user/name[@revision]``, or
    ``user/name`` with ``hub``) downloaded with ``huggingface_hub``."""
    return _resolve(src, hub=hub, revision=revision, download=download).folder


def _resolve(src: str | Path, *, hub: bool, revision: str | None, download: Callable[..., str] | None) -> _Export:
    ref = hub_ref(src, hub=hub, revision=revision)
    if ref is not None:
        return _download(ref, download)
    if is_url(src):
        raise ZooError(f"{src}: a store URL; an export to import is a local folder with {DESCRIPTOR} or a Hub "
                       f"dataset ({_SPELLINGS})")
    if revision is not None:
        raise ZooError(f"revision={revision!r} applies to Hub sources; {src} is a local path ({_SPELLINGS})")
    export = _local_export(src)
    if export is None:
        raise ZooError(f"{src}: no {DESCRIPTOR}; not a weightzoo export (zoo export hf STORE OUTDIR makes one)")
    return export


def read_descriptor(folder: Path) -> dict[str, Any]:
    """``weightzoo.json`` of an export folder, with the fields the import relies on checked for type."""
    path = folder / DESCRIPTOR
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZooError(f"{path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != "weightzoo-hf" or not isinstance(
            data.get("store_attributes"), dict):
        raise ZooError(f"{path}: not a weightzoo export descriptor (format 'weightzoo-hf' with store_attributes)")
    for key in ("files", "rows", "splits"):
        if not isinstance(data.get(key), dict):
            raise ZooError(f"{path}: field {key!r} must be an object, got {type(data.get(key)).__name__}")
    check_split(data["splits"], f"{path}: field 'splits'")
    for arch, splits in data["files"].items():
        if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
            raise ZooError(f"{path}: files[{arch!r}] must map split names to lists of file names")
    return data


def data_files(export: _Export, desc: Mapping[str, Any]) -> list[Path]:
    """The data files the descriptor names, each checked to lie inside the export folder.

    The descriptor is the publisher's: an absolute path, a ``..`` or a symlink leading out would make the import
    read any file of this machine into the new store."""
    path = export.folder / DESCRIPTOR
    root = export.root.resolve()
    out = []
    for arch, splits in desc["files"].items():
        for split, names in splits.items():
            for name in names:
                where = f"{path}: files[{arch!r}][{split!r}] entry {name!r}"
                if not isinstance(name, str) or not name:
                    raise ZooError(f"{where}: expected a relative file name inside the export folder")
                rel = PurePosixPath(name)
                if (rel.is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
                        or "\\" in name or ".." in rel.parts):
                    raise ZooError(f"{where}: outside the export folder {export.folder}; only relative paths "
                                   "below it are allowed (no absolute path, no '..')")
                full = export.folder / rel
                if not full.resolve().is_relative_to(root):
                    raise ZooError(f"{where}: a symlink leading out of the export folder {export.folder} (to "
                                   f"{full.resolve()}); only files inside it are allowed")
                if not full.is_file():
                    raise ZooError(f"{where}: missing; the export is incomplete")
                out.append(full)
    return out


# --- import -----------------------------------------------------------------------------------------------
def import_hf(src: str | Path, store: str | Path, *, hub: bool = False, revision: str | None = None,
              quiet: bool = True, storage_options: dict | None = None,
              download: Callable[..., str] | None = None) -> dict[str, Any]:
    """Re-create the store of an export (a local folder, ``hf://user/name[@revision]``, or ``user/name`` with
    ``hub``) at ``store``; resumable (committed units are skipped), and every row is checked against its
    exported checksum. The export is checked before the store is created, so a refused one writes nothing."""
    export = _resolve(src, hub=hub, revision=revision, download=download)
    return _import(export, store, quiet=quiet, storage_options=storage_options)


def _import(export: _Export, store: str | Path, *, quiet: bool = True, storage_options: dict | None = None
            ) -> dict[str, Any]:
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


# --- the cache of imported exports --------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where exports become local stores: ``hub/`` and ``exports/`` under ``$WEIGHTZOO_CACHE`` (default
    ``~/.cache/weightzoo``)."""
    return cache_root()


def _cache_target(export: _Export) -> Path:
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


def _cached_import(export: _Export) -> Zoo:
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
    _import(export, target)
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
        return _cached_import(_download(ref, download))
    if revision is not None:
        raise ZooError(f"revision={revision!r} applies to Hub sources; {src} is not one ({_SPELLINGS})")
    if is_url(src):
        return open_zoo(src, storage_options=storage_options)
    export = _local_export(src)
    if export is not None:
        return _cached_import(export)
    return open_zoo(src, storage_options=storage_options)


# --- publish ----------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def check_hub_access(api: Any, token: str | None, endpoint: str) -> str:
    """Fail in one line before any work: no token, an unreachable Hub, or a refused token. Returns the user."""
    if not token:
        raise ZooError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was exported")
    try:
        who = api.whoami(token=token)
    except Exception as e:  # the client's network and HTTP errors, told apart by whether a response came back
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ZooError(f"the Hub at {endpoint} refused the token (HTTP {status}): check HF_TOKEN or run "
                           "`hf auth login`; nothing was exported") from None
        if status is not None:
            raise ZooError(f"the Hub at {endpoint} answered HTTP {status} to the token check ({_first_line(e)}); "
                           "nothing was exported") from None
        raise ZooError(f"the Hub at {endpoint} is unreachable ({_first_line(e)}): check the network, or "
                       "HF_ENDPOINT; nothing was exported") from None
    return str(who.get("name", "")) if isinstance(who, Mapping) else ""


def push(store: str | Path | Zoo, repo_id: str, *, private: bool = False, token: str | None = None,
         endpoint: str | None = None, api: Any = None, quiet: bool = True, **export_options: Any) -> str:
    """Export ``store`` to a temporary folder and upload it as the Hub dataset ``repo_id``.

    The store, the repository id, the token (``token``, else ``HF_TOKEN`` / ``hf auth login``) and the Hub's
    reachability (``endpoint``, else ``HF_ENDPOINT``) are checked first, so a push that cannot succeed fails in
    one line before exporting anything. Returns the repository URL."""
    if not _REPO_ID.fullmatch(repo_id):
        raise ZooError(f"repo id {repo_id!r}: expected user/name (letters, digits, '-', '_', '.')")
    z = store if isinstance(store, Zoo) else open_zoo(store)
    # read here, not from huggingface_hub's constants, which are fixed when it is first imported
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    if api is None or token is None:
        hf = _hf()
        token = token or hf.get_token()
        if api is None:
            api = hf.HfApi(endpoint=endpoint, token=token)
    check_hub_access(api, token, endpoint)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "export"
        export_hf(z, folder, quiet=quiet, repo_id=repo_id, **export_options)
        try:
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                              commit_message=f"Upload model zoo with weightzoo {__version__}")
        except Exception as e:  # permissions, quota, network lost mid-way: one line, the export is discarded
            raise ZooError(f"{repo_id}: the upload to {endpoint} failed ({_first_line(e)})") from None
    return str(url)
