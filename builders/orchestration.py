"""Build orchestration: from a manifest to a complete store, resumable and shardable.

Two sizes, two owners (docs/design.md §4). The plan's *groups* are the store's units of storage: each group
commits one unit (one shard) per checkpoint epoch. A *population* is what trains as one computation: as many
groups of one structure as fit the device (``sizing.py``; ``population=`` overrides), so the store's bytes and
row positions never depend on the machine that built it.

Resume: before a group's unit is committed, the group's training state at that epoch (weights, optimizer state,
step count) is saved (``STORE/.build/group-N.pt``, beside the store, or under the store's URL). A rerun loads
each interrupted group's state, commits the unit of that epoch if the interruption came between state and commit,
and trains on: every unit of a group comes from one trajectory, whatever population the group is put in this
time. A group with no usable state retrains from its initialization (the same bytes on a CPU: the computation
is a pure function of the manifest, and each model's arithmetic does not depend on its population).
``shard=(i, n)`` takes every n-th group, so n processes on one store build disjoint units. ``build_groups``
is the work of some groups on their own (manifest, store, group ids, device), which a distributed backend runs
as one task (``ray_backend``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from builders.data import ImageData, load_image_data, load_images
from zoo.errors import StoreError, ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.plan import Group, Plan, Unit
from zoo.store import ZooWriter, create

from . import sizing
from .devices import device_name, resolve_device
from .inr_population import InrPopulation
from .population import Population
from .step import deterministic

STATE_DIR = ".build"
COMPILE_OVERRIDES = ("on", "off")


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` as ``(i, n)`` for ``build(shard=...)``; anything but 0 <= I < N is a ZooError."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ZooError(f"shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ZooError(f"shard {text!r}: expected I/N with 0 <= I < N")
    return i, n


@dataclass
class BuildReport:
    """What one ``build`` or ``build_groups`` call did; units and model-epochs count this call's work only."""

    store: str
    units_written: int = 0
    units_skipped: int = 0
    groups: int = 0
    model_epochs: int = 0
    seconds: float = 0.0
    diverged: set[int] = field(default_factory=set)
    populations: list[int] = field(default_factory=list)  # models of each population trained
    step_modes: set[str] = field(default_factory=set)

    @property
    def model_epochs_per_s(self) -> float:
        """Training throughput of this call (0.0 when nothing was timed)."""
        return self.model_epochs / self.seconds if self.seconds else 0.0


class GroupStates:
    """Per-group training state beside a local store or under a store URL, each file written whole."""

    def __init__(self, writer: ZooWriter) -> None:
        self.fs, root = writer.fs
        self.local = writer.local
        self.dir = f"{root}/{STATE_DIR}"

    def _path(self, group: int) -> str:
        return f"{self.dir}/group-{group:06d}.pt"

    def load(self, group: int) -> dict | None:
        """The saved state of ``group`` on the CPU, or None; read with ``weights_only``, so a file cannot run code."""
        path = self._path(group)
        try:
            with self.fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def save(self, group: int, state: dict) -> None:
        """Replace the state of ``group`` whole (a rename locally, one PUT on an object store): never half-written."""
        path = self._path(group)
        if self.local is not None:  # a temporary name, then an atomic rename
            Path(self.dir).mkdir(exist_ok=True)
            tmp = Path(self.dir) / f".tmp-{uuid.uuid4().hex}-{Path(path).name}"
            torch.save(state, tmp)
            os.replace(tmp, path)
            return
        buffer = io.BytesIO()  # object stores publish a whole object on PUT
        torch.save(state, buffer)
        with self.fs.open(path, "wb") as f:
            f.write(buffer.getvalue())

    def drop(self, group: int) -> None:
        """Delete the state of a group that has finished training; no state is no error."""
        try:
            self.fs.rm(self._path(group))
        except FileNotFoundError:
            pass

    def remove_all(self) -> None:
        """Once every unit is committed nobody writes state any more: drop the folder and any temporary
        file that a killed writer left in it."""
        if self.local is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        try:
            self.fs.rm(self.dir, recursive=True)
        except FileNotFoundError:
            pass


def build(manifest: Manifest | str | Path, out: str | Path, *, device: str = "auto", shard: tuple[int, int] = (0, 1),
          group_size: int | None = None, population: int | None = None, compile: str | None = None,
          quiet: bool = False, data: ImageData | None = None, after_unit: Callable[[Unit], None] | None = None,
          storage_options: dict | None = None) -> BuildReport:
    """Train every pending unit of ``manifest`` (in this shard) into the store at ``out``.

    ``population``: models trained as one computation (default: chosen for the device, ``sizing.py``).
    ``compile``: ``"on"`` or ``"off"`` overrides the manifest's ``training.compile``. ``out`` may be an fsspec
    URL (``s3://...``; ``storage_options`` go to fsspec)."""
    manifest = _as_manifest(manifest, out)
    _check_options(population, compile)
    dev = resolve_device(device)
    datasets: dict = {}
    if data is None:  # a missing or unreadable dataset is refused here, before the store is created
        if manifest.kind == "inr":
            _images(manifest, dev, datasets)
        else:
            _dataset(manifest, manifest.models[0], dev, datasets, None)
    writer = create(out, manifest, group_size=group_size, storage_options=storage_options)
    plan = writer.plan
    groups = plan.shard(*shard)
    done = writer.done_units()
    units_of = plan.units_of
    pending, skipped = _pending(plan, groups, done)
    report = BuildReport(writer.url, units_skipped=skipped)
    _check_resumable(writer, pending)
    epochs = manifest.training["epochs"]
    total = sum(len(g.model_ids) for g in groups) * epochs
    finished = total - sum(len(g.model_ids) for g in pending) * epochs
    bar = tqdm(total=total, initial=finished, unit="model-epoch", disable=quiet, dynamic_ncols=True,
               desc=manifest.name)
    run = _Run(writer, dev, population, compile, datasets, data, bar, report, after_unit, units_of, done)
    start = time.perf_counter()
    try:
        with _flush_denormals(dev):
            _train_groups(run, pending)
    finally:
        bar.close()
    writer.refresh()
    if len(writer.done_units()) == len(plan.units):
        GroupStates(writer).remove_all()
    report.seconds = time.perf_counter() - start
    return report


def build_groups(manifest: Manifest | dict | str | Path, out: str | Path, groups: Sequence[int], *,
                 device: str = "auto", population: int | None = None, compile: str | None = None,
                 datasets: dict | None = None, bar=None, after_unit: Callable[[Unit], None] | None = None,
                 storage_options: dict | None = None) -> BuildReport:
    """Train the pending units of some groups into the existing store at ``out``: one task of a distributed build.

    The committed units are read here, so a retried or repeated call skips what an earlier attempt committed
    and resumes from the saved training states. The store must exist already (a worker that does not see the
    driver's path must fail, not start a store of its own). ``datasets`` is a cache the caller may keep across
    calls, so a worker process loads each dataset once; ``bar`` receives ``update(model_epochs)``;
    ``storage_options`` go to fsspec for a store URL, as in ``build``.
    """
    manifest = _as_manifest(manifest, out)
    _check_options(population, compile)
    dev = resolve_device(device)
    writer = ZooWriter(out, storage_options=storage_options)
    if writer.attrs["manifest"] != manifest.to_dict():
        raise StoreError(f"{out}: the store holds zoo {writer.manifest.name!r} built from another manifest than "
                         f"{manifest.source}")
    writer.adopt(manifest)  # modules are built from the task's manifest (the caller's), not the store's copy
    plan = writer.plan
    for group in groups:
        if not (isinstance(group, int) and 0 <= group < len(plan.groups)):
            raise ZooError(f"group {group!r}: the plan of {out} has groups 0..{len(plan.groups) - 1}")
    units_of = plan.units_of
    done = writer.done_units()
    pending, skipped = _pending(plan, [plan.groups[g] for g in groups], done)
    report = BuildReport(writer.url, units_skipped=skipped)
    if not pending:
        return report
    _check_resumable(writer, pending)
    run = _Run(writer, dev, population, compile, {} if datasets is None else datasets, None,
               bar if bar is not None else tqdm(disable=True), report, after_unit, units_of, done)
    start = time.perf_counter()
    with _flush_denormals(dev):
        _train_groups(run, pending)
    report.seconds = time.perf_counter() - start
    return report


def build_group(manifest, out, group: int, **kwargs) -> BuildReport:
    """``build_groups`` for one group."""
    return build_groups(manifest, out, [group], **kwargs)


# --- the work ------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What every population of one ``build``/``build_groups`` call shares, built once by that call: where it
    writes and trains, the caller's overrides, the dataset cache, progress and report, and the plan's units
    with those already committed. Passed down instead of a dozen parameters, so a new concern is one field."""

    writer: ZooWriter
    device: torch.device
    population: int | None  # models per population; None: sized for the device (``sizing.py``)
    compile: str | None  # "on"/"off" overrides the manifest's training.compile
    datasets: dict  # loaded datasets, keyed by dataset, fraction and device (a caller may keep it across calls)
    data: ImageData | None  # the caller's dataset for a classifier zoo, instead of loading the manifest's
    bar: Any  # tqdm-like: update(model_epochs), set_postfix_str
    report: BuildReport
    after_unit: Callable[[Unit], None] | None
    units_of: Mapping[int, Sequence[Unit]]
    done: set[int]  # committed unit ids when the call began
    states: GroupStates = field(init=False)
    accs: dict[int, float] = field(default_factory=dict)  # each model's latest test accuracy (PSNR), for the bar

    def __post_init__(self) -> None:
        self.states = GroupStates(self.writer)

    @property
    def manifest(self) -> Manifest:
        return self.writer.manifest

    def dataset(self, spec) -> ImageData:
        """The classifier dataset ``spec`` trains on, on the run's device (loaded once per cache)."""
        return _dataset(self.manifest, spec, self.device, self.datasets, self.data)

    def images(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """An inr zoo's images, labels and positions, on the run's device (loaded once per cache)."""
        return _images(self.manifest, self.device, self.datasets)


def _as_manifest(manifest: Manifest | dict | str | Path, out: str | Path) -> Manifest:
    """The manifest a build was given, as the caller's own: building it is the caller's intent, so a factory it
    names may be imported and called (``Manifest.trust_code``; a store's manifest never is)."""
    if isinstance(manifest, Manifest):
        return manifest.trusted()
    if isinstance(manifest, dict):  # a distributed task receives the manifest as its dict
        return Manifest.from_dict(manifest, source=f"{out} (build task)", trust_code=True)
    return load_manifest(manifest, trust_code=True)


def _pending(plan: Plan, groups: Sequence[Group], done: set[int]) -> tuple[list[Group], int]:
    """(groups with an uncommitted unit, committed units among ``groups``): what a run trains and skips."""
    pending = [g for g in groups if any(u.unit_id not in done for u in plan.units_of[g.group])]
    return pending, sum(u.unit_id in done for g in groups for u in plan.units_of[g.group])


def _check_options(population: int | None, compile: str | None) -> None:
    sizing.check_population(population)
    if compile is not None and compile not in COMPILE_OVERRIDES:
        raise ZooError(f"compile {compile!r}; allowed: on, off (or None: the manifest's training.compile)")


class _flush_denormals:
    """Saturated units (e.g. the Model Zoos' uniform [0, 1] init with tanh) leave denormal gradients, which x86
    CPUs process ~100x slower; flushing them to zero during a CPU build is deterministic, so it keeps builds
    bit-reproducible, and is restored afterwards (torch's default is off)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.flushed = False

    def __enter__(self):
        self.flushed = self.device.type == "cpu" and torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc) -> None:
        if self.flushed:
            torch.set_flush_denormal(False)


def _check_resumable(writer: ZooWriter, pending: Sequence[Group]) -> None:
    """Never a mix: a store of format 1 whose pending models draw randomness (dropout, augmentation) was started
    with the shared-generator draws of that version; today's per-model streams would continue it differently."""
    if writer.attrs.get("format_version", 1) >= 2 or not pending:
        return
    manifest = writer.manifest
    random = [g.group for g in pending for i in g.model_ids[:1]
              if manifest.models[i].training["augmentation"] != "none"
              or any(float(manifest.models[j].architecture.options.get("dropout", 0.0)) > 0 for j in g.model_ids)]
    if random:
        raise StoreError(f"{writer.url}: format 1 store (built by weightzoo before populations were decoupled from "
                         f"groups) with {len(random)} unfinished group(s) that use dropout or augmentation "
                         f"(first: group {random[0]}); its random draws came from a shared generator, today's from "
                         "per-model streams, so finishing it would mix two trajectories. It still opens, verifies "
                         "and loads; build the zoo into a new store to complete it")


def _dataset(manifest: Manifest, spec, dev: torch.device, datasets: dict, data: ImageData | None) -> ImageData:
    fraction = spec.training["train_fraction"]
    key = (json.dumps(manifest.dataset, sort_keys=True, default=str), fraction, str(dev))
    if key not in datasets:
        datasets[key] = (data if data is not None else
                         load_image_data(manifest.dataset, device=dev, train_fraction=fraction)).to(dev)
    return datasets[key]


def _images(manifest: Manifest, dev: torch.device, datasets: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """An inr zoo's images (its ``[images]``, in [0, 1]) and labels on ``dev``, loaded once per cache, with the
    position of each source index."""
    key = ("images", json.dumps(manifest.dataset, sort_keys=True, default=str), manifest.images["split"], str(dev))
    if key not in datasets:
        indices = manifest.image_indices
        x, y = load_images(manifest.dataset, manifest.images["split"], indices, device=dev)
        datasets[key] = (x, y, {index: i for i, index in enumerate(indices)})
    return datasets[key]


def _make_population(run: _Run, specs, layout, compile: str):
    """(the population for ``specs``, the data its checkpoints are evaluated on): a classifier population and its
    dataset, or an inr population of the models' images."""
    if run.manifest.kind == "inr":
        x, y, position = run.images()
        at = torch.tensor([position[s.hparams["image_index"]] for s in specs], device=run.device)
        return InrPopulation(specs, layout, x[at], y[at], device=run.device, compile=compile), None
    pop = Population(specs, layout, device=run.device, compile=compile)
    image_data = run.dataset(specs[0])
    pop.plan_steps(image_data.train.x.shape[0])
    return pop, image_data


def _usable_state(state: dict | None, group: Group, units: Sequence[Unit], done: set[int]) -> dict | None:
    """A saved state resumes a group when it is this group's and every unit before its epoch is committed."""
    if state is None or list(state.get("model_ids", ())) != list(group.model_ids):
        return None
    if all(u.unit_id in done for u in units if u.epoch < state["epoch"]):
        return state
    return None


def _train_groups(run: _Run, groups: Sequence[Group]) -> None:
    """Train ``groups``: each resumed from its saved state where usable, packed into populations of groups that
    start at one epoch and share a structure."""
    manifest, dev = run.manifest, run.device
    resume = {g.group: _usable_state(run.states.load(g.group), g, run.units_of[g.group], run.done) for g in groups}
    by_start: dict[int, list[Group]] = {}
    for g in groups:
        state = resume[g.group]
        by_start.setdefault(state["epoch"] if state else 0, []).append(g)
    sizes: dict[str, int] = {}

    def size_of(spec) -> int:
        if run.population is not None:
            return run.population
        key = sizing.structure_key(spec)
        if key not in sizes and manifest.kind == "inr":
            x = run.images()[0]
            sizes[key] = sizing.inr_population_size(spec, x.shape[2] * x.shape[3], dev)
        if key not in sizes:
            footprint = None
            if dev.type == "cuda":
                train = run.dataset(spec).train
                same = [m for m in manifest.models if sizing.structure_key(m) == key]
                footprint = sizing.measured_footprint(same, lambda s: Population(
                    s, run.writer.layout(spec.arch_id), device=dev), train, dev)
            sizes[key] = sizing.population_size(spec.architecture, dict(spec.training), dev, footprint=footprint)[0]
        return sizes[key]

    with deterministic(dev, manifest.training["precision"]):
        for start_epoch in sorted(by_start):
            for members in sizing.pack(by_start[start_epoch], manifest, size_of):
                _train_population(run, members, resume)


def _train_population(run: _Run, members: list[Group], resume: Mapping[int, Any]) -> None:
    """Train ``members`` as one population to the last epoch, committing each member's unit at every checkpoint
    epoch (its training state saved first), then drop their states. ``resume``: each group's usable saved
    state, or None (the members of one population all have one, or none do)."""
    manifest, writer, report, bar, done = run.manifest, run.writer, run.report, run.bar, run.done
    specs = [manifest.models[i] for g in members for i in g.model_ids]
    setting = run.compile if run.compile is not None else specs[0].training["compile"]
    pop, image_data = _make_population(run, specs, writer.layout(members[0].arch_id), setting)
    bounds, a = [], 0
    for g in members:
        bounds.append((a, a + len(g.model_ids)))
        a += len(g.model_ids)
    if resume[members[0].group]:
        pop.load_state_dict(merge_states([resume[g.group] for g in members]))
        bar.update(len(specs) * pop.epoch)
    resumed_at = pop.epoch
    name = device_name(run.device)
    epochs = specs[0].training["epochs"]
    by_epoch = [{u.epoch: u for u in run.units_of[g.group]} for g in members]
    report.populations.append(len(specs))

    def checkpoint(epoch: int) -> None:
        units = [(g, u[epoch], ab) for g, u, ab in zip(members, by_epoch, bounds) if epoch in u]
        if not units:
            return
        if epoch < epochs and epoch != resumed_at:  # the state first: a unit committed has its state saved
            full = pop.state_dict()
            for g, _, (lo, hi) in units:
                run.states.save(g.group, slice_state(full, lo, hi))
        pending = [(g, u, ab) for g, u, ab in units if u.unit_id not in done]
        if not pending:
            return
        records = pop.checkpoint_records(image_data, name)
        rows = pop.rows()
        for rec in records:
            rec.update(precision=pop.precision, step_mode=pop.step_mode)
        for _group, unit, (lo, hi) in pending:
            writer.write_unit(unit, rows[lo:hi], records[lo:hi])
            report.units_written += 1
            for spec, rec in zip(specs[lo:hi], records[lo:hi]):
                run.accs[spec.model_id] = rec["test_acc"] if "test_acc" in rec else rec["psnr"]
                if rec["status"] == "diverged":
                    report.diverged.add(spec.model_id)
            if run.after_unit is not None:
                run.after_unit(unit)

    checkpoint(pop.epoch)  # the initialization, or a resumed epoch whose unit was not yet committed
    while pop.epoch < epochs:
        pop.train_epoch(image_data.train if image_data is not None else None)
        report.model_epochs += len(specs)
        bar.update(len(specs))
        checkpoint(pop.epoch)
        values = [a for a in run.accs.values() if a is not None and a == a]
        if values:
            what = "PSNR" if manifest.kind == "inr" else "test acc"
            bar.set_postfix_str(f"{what} {min(values):.3f}-{max(values):.3f}", refresh=False)
    report.step_modes.add(pop.step_mode)
    report.groups += len(members)
    for g in members:
        run.states.drop(g.group)


def slice_state(state: dict, lo: int, hi: int) -> dict:
    """The training state of models ``lo:hi`` of a population (one group's share)."""
    return {"epoch": state["epoch"], "params": {k: v[lo:hi].clone() for k, v in state["params"].items()},
            "buffers": {k: v[lo:hi].clone() for k, v in state["buffers"].items()},
            "optimizer": {"steps": state["optimizer"]["steps"],
                          "state": [{k: v[lo:hi].clone() for k, v in s.items()} for s in state["optimizer"]["state"]]},
            "diverged": state["diverged"][lo:hi].clone(), "wall_time": state["wall_time"],
            "model_ids": state["model_ids"][lo:hi]}


def merge_states(states: Sequence[dict]) -> dict:
    """Groups' states (all at one epoch) as the state of the population they form, in order."""
    first = states[0]
    if any(s["epoch"] != first["epoch"] or s["optimizer"]["steps"] != first["optimizer"]["steps"] for s in states):
        raise ZooError("cannot merge training states of different epochs into one population")
    cat = torch.cat
    return {"epoch": first["epoch"],
            "params": {k: cat([s["params"][k] for s in states]) for k in first["params"]},
            "buffers": {k: cat([s["buffers"][k] for s in states]) for k in first["buffers"]},
            "optimizer": {"steps": first["optimizer"]["steps"], "state": [
                {k: cat([s["optimizer"]["state"][i][k] for s in states]) for k in first["optimizer"]["state"][i]}
                for i in range(len(first["optimizer"]["state"]))]},
            "diverged": cat([s["diverged"] for s in states]), "wall_time": max(s["wall_time"] for s in states),
            "model_ids": [i for s in states for i in s["model_ids"]]}
