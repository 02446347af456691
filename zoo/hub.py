"""Hugging Face datasets: export a store as a Hub dataset repository, import one back, publish with the Hub.

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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from . import __version__
from .errors import ZooError
from .manifest import Manifest
from .store import Zoo, ZooWriter, create, open_zoo
from .store import format as fmt
from .store.reader import is_url
from .store.writer import row_checksums

SHARD_BYTES = 500 * 2**20
ROW_GROUP_BYTES = 64 * 2**20
DESCRIPTOR = "weightzoo.json"
WEIGHTS_COLUMN = "weights"


# --- export ---------------------------------------------------------------------------------------------
def export_hf(store: str | Path | Zoo, outdir: str | Path, *, split_fractions: Mapping[str, float] | None = None,
              seed: int = 0, shard_bytes: int = SHARD_BYTES, row_group_bytes: int = ROW_GROUP_BYTES,
              quiet: bool = True) -> dict[str, Any]:
    """Write ``store`` as a Hugging Face dataset repository in ``outdir`` (a new or empty folder).

    Written into a temporary sibling folder and renamed into place, so a failed export leaves nothing.
    """
    from loaders.splits import DEFAULT_FRACTIONS, split_models  # loaders builds on zoo: imported late

    z = store if isinstance(store, Zoo) else open_zoo(store)
    out = Path(outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooError(f"{out}: exists and is not empty; choose a new output folder")
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
        (tmp / "README.md").write_text(dataset_card(z, files, counts))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"outdir": str(out), "checkpoints": total, "files": sum(len(f) for a in files.values()
                                                                     for f in a.values()),
            "configs": list(files), "rows": counts}


def _write_split(z: Zoo, arch: str, width: int, table: pa.Table, folder: Path, split: str, shard_bytes: int,
                 row_group_bytes: int, bar) -> list[str]:
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


def dataset_card(z: Zoo, files: Mapping[str, Mapping[str, list[str]]], counts: Mapping[str, Mapping[str, int]]
                 ) -> str:
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
    lines += ["", f"# {m.name}", "", m.zoo.get("description") or "A model zoo built with weightzoo.", "",
              "## Summary", "",
              "| | |", "|---|---|",
              f"| models | {info['models']:,} ({info['models_with_checkpoints']:,} with checkpoints) |",
              f"| checkpoints | {info['checkpoints']:,} of {info['checkpoints_planned']:,} planned |",
              f"| checkpoint epochs | {', '.join(str(e) for e in info['checkpoint_epochs'])} |",
              f"| dataset | {ds.get('name')} |",
              f"| training | {m.training.get('optimizer')}, lr {m.training.get('lr')}, "
              f"{m.training.get('epochs')} epochs, batch {m.training.get('batch_size')} |",
              f"| varied | {', '.join(sorted(m.hparam_columns())) or 'seed only'} |",
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
        lines += [f"## Layout of `{arch}` ({z.attrs['architectures'][arch]['architecture']['name']}, "
                  f"{layout.size:,} values per row)", "",
                  "| tensor | shape | offset | role |", "|---|---|---|---|"]
        lines += [f"| {t.name} | {tuple(t.shape)} | {t.offset} | {t.role} |" for t in layout.tensors]
        lines.append("")
    first = next(iter(files))
    lines += ["## Load", "", "With `datasets`:", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("REPO_OR_PATH", "{first}", split="train").with_format("torch")',
              'weights = ds[0]["weights"]            # torch.float32 vector', "```", "",
              "With weightzoo (`pip install weightzoo`): symmetry-augmented batches in every learner's format",
              "(flat, SANE tokens, NFN, DWSNets, graphs), and the weights back as `nn.Module`s:", "",
              "```python", "from loaders import ZooDataset", "",
              'ds = ZooDataset("REPO_OR_PATH", view="tokens", split="train", augment=("permute",))',
              "```", "", "or `zoo import hf REPO_OR_PATH my.zoo` for the chunked store.", ""]
    citation = m.zoo.get("citation")
    lines += ["## Citation", "", "This zoo reproduces:" if citation else "", "",
              f"> {citation}" if citation else "No citation given in the manifest.", "",
              f"Built and exported with weightzoo {__version__}.", ""]
    return "\n".join(lines)


# --- import -----------------------------------------------------------------------------------------------
def resolve_source(src: str | Path, *, revision: str | None = None,
                   download: Callable[..., str] | None = None) -> Path:
    """An export folder, or a Hub dataset id (``user/name``) fetched with ``huggingface_hub``."""
    path = Path(src)
    if path.exists():
        if not (path / DESCRIPTOR).exists():
            raise ZooError(f"{path}: no {DESCRIPTOR}; not a weightzoo export (zoo export hf STORE OUTDIR)")
        return path
    text = str(src)
    if not looks_like_hub_id(text):
        raise ZooError(f"{src}: neither an export folder nor a Hub dataset id (user/name)")
    if download is None:
        from huggingface_hub import snapshot_download as download
    try:
        return Path(download(repo_id=text, repo_type="dataset", revision=revision))
    except Exception as e:  # the Hub client's many network/auth errors, reported in one voice
        raise ZooError(f"{src}: could not download the Hub dataset: {type(e).__name__}: {e}") from None


def looks_like_hub_id(text: str) -> bool:
    """``user/name`` that is not a local path (stores end in ``.zoo``; paths start with ``.``, ``/`` or ``~``)."""
    return (text.count("/") == 1 and not Path(text).exists() and not text.endswith(".zoo")
            and not text.startswith((".", "/", "~")) and not any(c in text for c in " :\\"))


def read_descriptor(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / DESCRIPTOR).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ZooError(f"{folder / DESCRIPTOR}: {e}") from None
    if data.get("format") != "weightzoo-hf" or "store_attributes" not in data:
        raise ZooError(f"{folder / DESCRIPTOR}: not a weightzoo export descriptor")
    return data


def import_hf(src: str | Path, store: str | Path, *, revision: str | None = None, quiet: bool = True,
              storage_options: dict | None = None, download: Callable[..., str] | None = None) -> dict[str, Any]:
    """Re-create the store of an export (folder or Hub dataset id) at ``store``; resumable (committed units
    are skipped), and every row is checked against its exported checksum."""
    folder = resolve_source(src, revision=revision, download=download)
    desc = read_descriptor(folder)
    attrs = desc["store_attributes"]
    manifest = Manifest.from_dict(attrs["manifest"], source=str(folder / DESCRIPTOR))
    files = [folder / f for a in desc["files"].values() for fs in a.values() for f in fs]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ZooError(f"{folder}: data files listed in {DESCRIPTOR} are missing: {missing[:3]}")
    # the export's split by model travels with the store: loaders use it unless told otherwise
    extra = {"split": desc["splits"], **{k: attrs[k] for k in ("imported_from",) if k in attrs}}
    writer = create(store, manifest, group_size=attrs["group_size"], compressor=attrs.get("compressor"),
                    storage_options=storage_options, extra_attrs=extra)
    done = writer.done_units()
    units = {u.unit_id: u for u in writer.plan.units}
    where: dict[int, list[tuple[Path, int]]] = {}
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            for unit in set(pf.read_row_group(g, columns=["unit"]).column("unit").to_pylist()):
                if unit not in units:
                    raise ZooError(f"{f}: row group {g} holds unit {unit}, which the manifest's plan does not have")
                where.setdefault(unit, []).append((f, g))
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


def _write_imported_unit(writer: ZooWriter, unit, table: pa.Table, folder: Path) -> None:
    ids = table.column("model_id").to_pylist()
    if sorted(ids) != sorted(unit.model_ids) or len(set(ids)) != len(ids):
        raise ZooError(f"{folder}: unit {unit.unit_id} (epoch {unit.epoch}) has rows for models {sorted(ids)}; "
                       f"the plan expects {sorted(unit.model_ids)}")
    order = [ids.index(m) for m in unit.model_ids]
    table = table.take(pa.array(order))
    weights = table.column(WEIGHTS_COLUMN).combine_chunks()
    width = weights.type.list_size
    rows = weights.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    records = table.select([c for c in table.column_names if c in fmt.RECORD_FIELDS]).to_pylist()
    exported = table.column("crc32").to_pylist()
    bad = [m for m, a, b in zip(unit.model_ids, row_checksums(rows), exported) if a != b]
    if bad:
        raise ZooError(f"{folder}: checksum mismatch for model {bad[0]} at epoch {unit.epoch} (unit "
                       f"{unit.unit_id}); the export is damaged")
    writer.write_unit(unit, rows, records)


def cache_dir() -> Path:
    """Where Hub zoos become local stores: ``$WEIGHTZOO_CACHE`` or ``~/.cache/weightzoo``."""
    return Path(os.environ.get("WEIGHTZOO_CACHE", Path.home() / ".cache" / "weightzoo"))


def open_source(src: str | Path | Zoo, *, storage_options: dict | None = None, revision: str | None = None,
                download: Callable[..., str] | None = None) -> Zoo:
    """A store from a path or URL; else an export folder or Hub dataset id, imported once into the cache
    (later calls reuse it: the import skips committed units)."""
    if isinstance(src, Zoo):
        return src
    path = Path(str(src))
    if is_url(src) or not (path.exists() and (path / DESCRIPTOR).exists() or looks_like_hub_id(str(src))):
        return open_zoo(src, storage_options=storage_options)
    folder = resolve_source(src, revision=revision, download=download)
    desc = read_descriptor(folder)
    key = hashlib.sha256(json.dumps(desc["store_attributes"]["manifest"], sort_keys=True).encode()).hexdigest()
    name = str(src).rstrip("/").replace("/", "--").replace(":", "")[-80:]
    target = cache_dir() / "hub" / f"{name}-{key[:12]}.zoo"
    if target.exists():
        cached = open_zoo(target)
        if cached.metadata.num_rows == sum(n for c in desc["rows"].values() for n in c.values()):
            return cached  # complete: no need to scan the export again
    import_hf(folder, target)
    return open_zoo(target)


# --- publish ----------------------------------------------------------------------------------------------
def push(store: str | Path | Zoo, repo_id: str, *, private: bool = False, token: str | None = None,
         api: Any = None, quiet: bool = True, **export_options: Any) -> str:
    """Export ``store`` to a temporary folder and upload it as the Hub dataset ``repo_id``.

    The token comes from ``token``, else ``HF_TOKEN`` / ``huggingface-cli login`` (huggingface_hub's usual
    lookup). Returns the repository URL."""
    if api is None:
        from huggingface_hub import HfApi
        api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "export"
        export_hf(store, folder, quiet=quiet, **export_options)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                          commit_message=f"Upload model zoo with weightzoo {__version__}")
    return str(url)

