"""What every importer shares: the manifest of an imported population, and the all-or-nothing write.

An importer is an ``ImportSource``: it reads a published zoo's own format, validates all of it, and hands
this module (1) one configuration per model (``{'section.field': value, 'seed':
int}``, in the manifest's terms) and (2) two callbacks that give the rows and
the metrics of the models of one unit of work. Here the configurations become a
manifest whose population lists every model explicitly (``population.models``;
values shared by all models move into the sections), or the zoo's published
manifest when that describes exactly the same models, and the store is written
unit by unit through ``ZooWriter.write_unit``, so imported zoos get the same
commit protocol, checksums, views and augmentations as built ones. The rows come
as a call (``rows_job``); a source whose rows are read from many files (Model Zoos)
makes it picklable (``parallel``), and worker processes then read and commit units
side by side, as concurrent writers of disjoint units do (``workers.py``).

Nothing half-written: importers validate what decides the store's manifest before anything is created
(configurations, which models are complete), a unit is committed only once all of its rows are read and checked,
and if writing still fails (a damaged file, a tensor of the wrong shape, a full disk) a store this call created
is removed again. Ctrl-C keeps what is committed; rerunning the same import resumes it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
from tqdm.auto import tqdm

from zoo.errors import StoreNotFoundError, ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.paths import is_url, local_path
from zoo.plan import Unit
from zoo.store import ZooWriter, create, open_zoo
from zoo.versions import torch_version

from .workers import Workers, worker_count

#: Key under the store's ``weightzoo`` attributes that records where an imported zoo came from.
IMPORT_ATTR = "imported_from"
_MISSING = object()
#: (source ids, epoch) -> a call returning float32 rows (len(ids), row_length) in the registered layout's order;
#: picklable when worker processes are to run it.
JobFn = Callable[[Sequence[int], int], Callable[[], np.ndarray]]
#: (source id, epoch) -> the checkpoint's metrics (store metric/provenance columns; missing ones stay null).
RecordFn = Callable[[int, int], Mapping[str, Any]]


@dataclass
class ImportReport:
    """What an import did (``to_dict`` is what ``zoo import --json`` prints)."""

    format: str
    source: str
    store: str
    zoo: str = ""
    manifest: str = "explicit"  # "published" when the zoo's published manifest describes exactly these models
    models: int = 0
    checkpoints: int = 0
    checkpoint_epochs: list[int] = field(default_factory=list)
    architectures: dict[str, int] = field(default_factory=dict)  # arch id -> trainable parameters
    units_written: int = 0
    units_skipped: int = 0
    skipped_models: list[str] = field(default_factory=list)  # incomplete source models left out
    skipped_reasons: dict[str, str] = field(default_factory=dict)  # skipped model -> why (the file, what is wrong)
    diverged_checkpoints: int = 0
    workers: int = 1  # processes that read and committed the units (1: the importing process itself)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON types (nested lists and dicts are copies)."""
        return asdict(self)


# --- values --------------------------------------------------------------------------------------------
def is_number(v: Any) -> bool:
    """A JSON/CSV number (bools are ints to Python, not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_metric(value: Any) -> float | None:
    """A metric as float; None stays None (not measured); NaN and inf are kept: they are what the source says."""
    if value is None:
        return None
    return float(value)


def metrics_record(*, train_loss=None, train_acc=None, val_loss=None, val_acc=None, test_loss=None,
                   test_acc=None, wall_time_s=None) -> dict[str, Any]:
    """The store's metric columns of one checkpoint, unmeasured ones None, and ``gen_gap`` (train minus test
    accuracy) added when both accuracies are known."""
    rec = {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
           "test_loss": test_loss, "test_acc": test_acc, "wall_time_s": wall_time_s}
    rec = {k: as_metric(v) for k, v in rec.items()}
    if rec["train_acc"] is not None and rec["test_acc"] is not None:
        rec["gen_gap"] = rec["train_acc"] - rec["test_acc"]
    return rec


def slug(text: str, fallback: str = "imported") -> str:
    """A valid zoo name from a folder name: lowercase letters, digits, '.', '_', '-'."""
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return out or fallback


def read_base_manifest(manifest: str | Path | Manifest | None) -> Manifest | None:
    """The published manifest an importer may reuse: loaded from a path, passed through, or None."""
    if manifest is None or isinstance(manifest, Manifest):
        return manifest
    return load_manifest(manifest)


# --- the manifest of an imported population ------------------------------------------------------------
def population_manifest(sections: Mapping[str, Mapping[str, Any]], configs: Sequence[Mapping[str, Any]],
                        checkpoint_epochs: Sequence[int], source: str) -> Manifest:
    """A manifest listing ``configs`` (one per model, in model-id order) explicitly.

    ``sections`` gives the zoo, dataset, architecture and training tables; a value every model shares is
    written into its section, and only values that differ between models go into ``population.models``,
    so a population that varies in three hyperparameters reads as three columns, not thirty. Units group
    any models of one layout (``population.grouping = "architecture"``): one unit per model and epoch, as
    the Small CNN Zoo's per-model dropout rates would give otherwise, means 270,000 shard and metadata files.
    """
    if not configs:
        raise ZooError(f"{source}: no models to import")
    paths = sorted({p for c in configs for p in c if p != "seed"})
    shared, varying = {}, []
    for path in paths:
        values = [c.get(path, _MISSING) for c in configs]
        if any(v is _MISSING for v in values):
            raise ZooError(f"{source}: {path} is known for some models only")  # importers fill defaults
        first = json.dumps(values[0], sort_keys=True)
        if all(json.dumps(v, sort_keys=True) == first for v in values):
            shared[path] = values[0]
        else:
            varying.append(path)
    data: dict[str, Any] = {name: dict(sections.get(name, {})) for name in ("zoo", "dataset", "architecture",
                                                                            "training")}
    for path, value in shared.items():
        section, _, key = path.partition(".")
        data[section][key] = value
    # nothing trains in an import: any models of one layout may share a unit (fewer, fuller shards)
    data["population"] = {"models": [{"seed": int(c["seed"]), **{p: c[p] for p in varying}} for c in configs],
                          "grouping": "architecture"}
    epochs = sorted(int(e) for e in checkpoint_epochs)
    data["checkpoints"] = {"epochs": "all" if epochs == list(range(data["training"]["epochs"] + 1)) else epochs}
    return Manifest.from_dict(data, source=source)


def match_published(explicit: Manifest, published: Manifest) -> list[int] | None:
    """Published model id of each imported model when ``published`` expands to exactly the same models.

    Models are compared by every hyperparameter (seed included) and the checkpoint epochs; equal
    models are matched in order. None when the populations differ in any way.
    """
    if published.checkpoint_epochs != explicit.checkpoint_epochs:
        return None
    if len(published.models) != len(explicit.models):
        return None
    pool: dict[str, deque[int]] = defaultdict(deque)
    for m in published.models:
        pool[json.dumps(m.hparams, sort_keys=True)].append(m.model_id)
    ids = []
    for m in explicit.models:
        queue = pool.get(json.dumps(m.hparams, sort_keys=True))
        if not queue:
            return None
        ids.append(queue.popleft())
    return ids


def choose_manifest(explicit: Manifest, published: Manifest | None) -> tuple[Manifest, list[int], str]:
    """(manifest to store, source index of each model id, "published" or "explicit")."""
    if published is not None:
        ids = match_published(explicit, published)
        if ids is not None:
            order = [0] * len(ids)
            for source_index, model_id in enumerate(ids):
                order[model_id] = source_index
            return published, order, "published"
    return explicit, list(range(len(explicit.models))), "explicit"


# --- the importers' interface ------------------------------------------------------------------------------
class ImportSource(ABC):
    """A published zoo in its own format, read and validated (in ``__init__``) as far as the store's manifest
    depends on it before anything is written; ``write`` then commits it unit by unit (``rows`` may check more of
    a unit before it is committed: the checkpoint files of Model Zoos).

    ``__init__`` sets ``src``, ``base`` (the zoo's published manifest or None), ``skipped`` (source models left
    out as incomplete), ``skipped_reasons`` (each one's reason: the missing epochs, or the file and what is wrong
    with it) and, through ``choose``, the manifest to store and each model's source index.
    """

    format: ClassVar[str]
    #: Whether ``rows_job`` returns calls that worker processes can run (picklable, holding no open source).
    parallel: ClassVar[bool] = False
    #: License and citation of the published zoo (the store's when no published manifest says otherwise).
    LICENSE: ClassVar[str]
    CITATION: ClassVar[str]
    src: Path
    base: Manifest | None
    skipped: list[str]
    skipped_reasons: dict[str, str]
    explicit: Manifest  # every imported model, listed (``population_manifest``)
    manifest: Manifest  # what the store keeps: ``explicit``, or ``base`` when that describes the same models
    order: list[int]  # source index of each model id
    kind: str  # "published" or "explicit"

    @abstractmethod
    def rows(self, sources: Sequence[int], epoch: int) -> np.ndarray:
        """The checkpoints of source models ``sources`` at ``epoch``, as rows of the registered layout."""

    def rows_job(self, sources: Sequence[int], epoch: int) -> Callable[[], np.ndarray]:
        """A call that returns ``rows(sources, epoch)``; with ``parallel``, one a worker process can run."""
        return functools.partial(self.rows, list(sources), epoch)

    @abstractmethod
    def record(self, source: int, epoch: int) -> Mapping[str, Any]:
        """The metrics of one checkpoint (store columns; missing ones stay null)."""

    @abstractmethod
    def model_names(self) -> list[str]:
        """Each source model's name in the source (a folder or run), by source index."""

    def choose(self, explicit: Manifest) -> None:
        """Keep ``explicit``, and the manifest the store will keep (the published one when it matches)."""
        self.explicit = explicit
        self.manifest, self.order, self.kind = choose_manifest(explicit, self.base)

    def sections(self, *, name: str | None, default_name: str, description: str, dataset: Mapping[str, Any],
                 architecture: Mapping[str, Any], training: Mapping[str, Any], epochs: int, note: str = ""
                 ) -> dict[str, dict[str, Any]]:
        """The zoo, dataset, architecture and training tables of the imported population: the published
        manifest's where given (else the arguments), named and described for this import (``description``, the
        source folder, then ``note``)."""
        base = self.base.to_dict() if self.base else {}
        zoo = dict(base.get("zoo", {"license": self.LICENSE, "citation": self.CITATION}))
        zoo["name"] = name or (self.base.name if self.base else default_name)
        recipe = f"; dataset and recipe defaults from {self.base.source}" if self.base else ""
        zoo["description"] = f"{description} {self.src.resolve()}{note}{recipe}."
        return {"zoo": zoo, "dataset": dict(base.get("dataset", dataset)),
                "architecture": dict(base.get("architecture", architecture)),
                "training": {**base.get("training", training), "epochs": epochs}}

    def imported_from(self) -> dict[str, Any]:
        """What the store records of its origin (``IMPORT_ATTR``)."""
        names = self.model_names()
        return {"format": self.format, "source": str(self.src.resolve()), "manifest": self.kind,
                "models": [names[s] for s in self.order], "skipped": self.skipped,
                "skipped_reasons": dict(self.skipped_reasons)}

    def write(self, store: str | Path, *, group_size: int | None = None, quiet: bool = True,
              workers: int | Workers | None = None) -> ImportReport:
        """Create (or resume) ``store`` and commit every checkpoint; see ``write_import``. ``workers``: the
        processes that read and commit units (``Workers``, such as those that read the source), or how many to
        start (default one per CPU; 0 or 1: this process); a source that is not ``parallel`` uses this process."""
        if not isinstance(workers, Workers):
            with Workers(worker_count(workers) if self.parallel else 1) as started:
                return self.write(store, group_size=group_size, quiet=quiet, workers=started)
        report = ImportReport(self.format, str(self.src), str(store), manifest=self.kind,
                              skipped_models=self.skipped, skipped_reasons=dict(self.skipped_reasons))
        return write_import(store, self.manifest, self.order, rows=self.rows_job, record=self.record,
                            imported_from=self.imported_from(), report=report, group_size=group_size, quiet=quiet,
                            workers=workers if self.parallel else None)


# --- writing ---------------------------------------------------------------------------------------------
def _state(store: str | Path) -> str:
    """What is at ``store`` now: "store", "absent", "empty" (an empty folder) or "other"."""
    try:
        open_zoo(store)
        return "store"
    except StoreNotFoundError:
        pass
    if is_url(store):
        fs, root = fsspec.core.url_to_fs(str(store))
        if not fs.exists(root):
            return "absent"
        return "empty" if fs.isdir(root) and not fs.ls(root) else "other"
    local = local_path(store)
    if not local.exists():
        return "absent"
    return "empty" if local.is_dir() and not any(local.iterdir()) else "other"


def _remove(store: str | Path, state: str) -> None:
    """Undo what this import created at ``store`` (an empty folder given as the target stays, emptied)."""
    if is_url(store):
        fs, root = fsspec.core.url_to_fs(str(store))
        if fs.exists(root):
            fs.rm(root, recursive=True)
        return
    local = local_path(store)
    if local.exists():
        shutil.rmtree(local)
    if state == "empty":
        local.mkdir()


def write_import(store: str | Path, manifest: Manifest, order: Sequence[int], *, rows: JobFn, record: RecordFn,
                 imported_from: Mapping[str, Any], report: ImportReport, group_size: int | None = None,
                 quiet: bool = True, workers: Workers | None = None) -> ImportReport:
    """Create (or resume) ``store`` for ``manifest`` and commit every unit; ``order[model_id]`` is the source id.

    ``rows(sources, epoch)`` gives the call that reads a unit's rows. With ``workers`` (``workers.Workers``, entered
    by the caller before anything opened the store) of more than one process, worker processes each read a unit
    and commit it themselves, as concurrent writers of disjoint units do (``ZooWriter.write_unit``: weights, then
    the metadata fragment), so reading, encoding and waiting for the disk all run in parallel; this process hands
    out the units, with their metrics, and compacts the metadata at the end. Each unit is committed whole or not
    at all, in whatever order the workers finish. A store this call created is removed if anything fails before
    the last unit is committed (once the workers have stopped); one that existed (a resumed import) keeps its
    committed units, and a rerun writes the others.
    """
    start = time.perf_counter()
    runner = workers if workers is not None else Workers(1)  # None: this process
    before = _state(store)
    try:
        writer = create(store, manifest, group_size=group_size, extra_attrs={IMPORT_ATTR: dict(imported_from)})
        plan = writer.plan
        done = writer.done_units()
        todo = [u for u in plan.units if u.unit_id not in done]
        report.units_skipped = len(plan.units) - len(todo)
        parallel = runner.parallel(len(todo))
        report.workers = min(runner.workers, len(todo)) if parallel else 1
        key = uuid.uuid4().hex  # this import, to the workers' cached writers
        shared = {"torch_version": torch_version()}  # once: every worker records the same

        def job(unit: Unit) -> Callable[[], int]:
            sources = [order[m] for m in unit.model_ids]
            read = rows(sources, unit.epoch)
            records = [{**record(s, unit.epoch), **shared} for s in sources]
            if parallel:
                return functools.partial(_commit_in_worker, writer.url, key, unit, read, records)
            return functools.partial(commit_unit, writer, unit, read, records)

        with tqdm(total=plan.checkpoints, unit="checkpoint", disable=quiet, dynamic_ncols=True,
                  desc=f"import {report.format}") as bar:
            bar.update(plan.checkpoints - sum(len(u.model_ids) for u in todo))
            for unit, diverged in runner.run(todo, job):
                report.diverged_checkpoints += diverged
                report.units_written += 1
                bar.update(len(unit.model_ids))
        writer.refresh()
        writer.compact()
        writer.clean_temporary()
    except Exception:
        if before in ("absent", "empty"):  # never touch a store or folder that was there before
            _remove(store, before)
        raise
    report.store = writer.url
    report.zoo = manifest.name
    report.models = len(manifest.models)
    report.checkpoints = plan.checkpoints
    report.checkpoint_epochs = list(plan.epochs)
    report.architectures = {k: a.layout.num_params for k, a in manifest.architectures.items()}
    report.seconds = time.perf_counter() - start
    return report


def commit_unit(writer: ZooWriter, unit: Unit, rows: Callable[[], np.ndarray],
                records: Sequence[Mapping[str, Any]]) -> int:
    """Read a unit's rows (``rows()``) and commit them with ``records`` (one per model, metrics with None for
    unknown), each with status ``ok`` or ``diverged`` (non-finite weights or loss); returns how many diverged."""
    block = np.asarray(rows(), dtype=np.float32)
    out = []
    diverged = 0
    for rec, row in zip(records, block):
        rec = {k: v for k, v in rec.items() if v is not None}
        losses = [rec.get(k) for k in ("train_loss", "test_loss")]
        finite = bool(np.isfinite(row).all()) and all(v is None or math.isfinite(v) for v in losses)
        rec["status"] = "ok" if finite else "diverged"
        diverged += not finite
        out.append(rec)
    writer.write_unit(unit, block, out)
    return diverged


#: A worker process's writer of the import it works for: (import key, the writer).
_WRITER: list[tuple[str, ZooWriter]] = []


def _commit_in_worker(store: str, key: str, unit: Unit, rows: Callable[[], np.ndarray],
                      records: Sequence[Mapping[str, Any]]) -> int:
    """``commit_unit`` in a worker process, through a writer opened once per import (``key``)."""
    if not _WRITER or _WRITER[0][0] != key:
        _WRITER[:] = [(key, ZooWriter(store))]
    return commit_unit(_WRITER[0][1], unit, rows, records)
