"""Export a store as a Hugging Face dataset repository folder, which ``datasets.load_dataset`` reads offline::

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

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from zoo import __version__
from zoo.columns import varied_columns
from zoo.errors import ZooError
from zoo.splits import DEFAULT_FRACTIONS, split_models
from zoo.store import Zoo, open_zoo

SHARD_BYTES = 500 * 2**20
ROW_GROUP_BYTES = 64 * 2**20
#: The export's self-description, and the Parquet column of the weights: what the import reads back.
DESCRIPTOR = "weightzoo.json"
WEIGHTS_COLUMN = "weights"


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
