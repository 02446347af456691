"""Build orchestration: from a manifest to a complete store, resumable and shardable.

The plan's groups are the units of scheduling: each group trains as one
``Population`` and commits one unit per checkpoint epoch. A rerun skips
committed units; a group interrupted mid-way resumes from its last saved
training state (``STORE/.build/group-N.pt``: weights, optimizer state and
step count at its last committed checkpoint), or retrains from its
initialization when there is none, which gives the same bytes because the
whole computation is a pure function of the manifest. ``shard=(i, n)`` takes
every n-th group, so n processes on one store build disjoint units.
``build_group`` is one group's work on its own (manifest, store, group id,
device), which a distributed backend runs as one task (``ray_backend``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.data import ImageData, load_image_data
from zoo.errors import StoreError, ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.plan import Group, Unit
from zoo.store import ZooWriter, create

from .population import Population

STATE_DIR = ".build"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError(f"device {device!r}: CUDA is not available on this machine; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ZooError(f"device {device!r}; allowed: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ZooError(f"shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ZooError(f"shard {text!r}: expected I/N with 0 <= I < N")
    return i, n


@dataclass
class BuildReport:
    store: str
    units_written: int = 0
    units_skipped: int = 0
    groups: int = 0
    model_epochs: int = 0
    seconds: float = 0.0
    diverged: set[int] = field(default_factory=set)

    @property
    def model_epochs_per_s(self) -> float:
        return self.model_epochs / self.seconds if self.seconds else 0.0


class _States:
    """Per-group training state beside a local store, written atomically."""

    def __init__(self, writer: ZooWriter) -> None:
        self.dir = writer.local / STATE_DIR if writer.local is not None else None

    def path(self, group: int) -> Path | None:
        return self.dir / f"group-{group:06d}.pt" if self.dir is not None else None

    def load(self, group: int) -> dict | None:
        path = self.path(group)
        if path is None or not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, group: int, state: dict) -> None:
        path = self.path(group)
        if path is None:
            return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def drop(self, group: int) -> None:
        path = self.path(group)
        if path is not None and path.exists():
            path.unlink()

    def remove_all(self) -> None:
        """Once every unit is committed nobody writes state any more: drop the folder and any temporary
        file that a killed writer left in it."""
        if self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)


def build(manifest: Manifest | str | Path, out: str | Path, *, device: str = "auto", shard: tuple[int, int] = (0, 1),
          group_size: int | None = None, quiet: bool = False, data: ImageData | None = None,
          after_unit: Callable[[Unit], None] | None = None, storage_options: dict | None = None) -> BuildReport:
    """Train every pending unit of ``manifest`` (in this shard) into the store at ``out``.

    ``out`` may be an fsspec URL (``s3://...``; ``storage_options`` go to fsspec). The training state that
    lets an interrupted group resume mid-way is kept only beside a local store: on a URL such a group
    retrains from its initialization (same bytes) and skips writing the units it had committed."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    dev = resolve_device(device)
    writer = create(out, manifest, group_size=group_size, storage_options=storage_options)
    plan = writer.plan
    groups = plan.shard(*shard)
    done = writer.done_units()
    units_of: dict[int, list[Unit]] = {}
    for u in plan.units:
        units_of.setdefault(u.group, []).append(u)
    report = BuildReport(writer.url)
    states = _States(writer)
    epochs = manifest.training["epochs"]
    pending = [g for g in groups if any(u.unit_id not in done for u in units_of[g.group])]
    report.units_skipped = sum(u.unit_id in done for g in groups for u in units_of[g.group])
    total = sum(len(g.model_ids) for g in groups) * epochs
    finished = total - sum(len(g.model_ids) for g in pending) * epochs
    bar = tqdm(total=total, initial=finished, unit="model-epoch", disable=quiet, dynamic_ncols=True,
               desc=manifest.name)
    datasets: dict[float, ImageData] = {}
    accs: dict[int, float] = {}
    start = time.perf_counter()
    # Saturated units (e.g. the Model Zoos' uniform [0, 1] init with tanh) leave denormal gradients, which x86
    # CPUs process ~100x slower; flushing them to zero during the build is deterministic, so it keeps builds
    # bit-reproducible, and restored afterwards (torch's default is off).
    flush = dev.type == "cpu" and torch.set_flush_denormal(True)
    try:
        for group in pending:
            specs = [manifest.models[i] for i in group.model_ids]
            fraction = specs[0].training["train_fraction"]
            if fraction not in datasets:
                datasets[fraction] = (data if data is not None else
                                      load_image_data(manifest.dataset, device=dev, train_fraction=fraction)).to(dev)
            trained = _build_group(writer, group, units_of[group.group], done, specs, datasets[fraction], dev,
                                   states, bar, accs, report, after_unit)
            report.model_epochs += trained
            report.groups += 1
    finally:
        bar.close()
        if flush:
            torch.set_flush_denormal(False)
    writer.refresh()
    if len(writer.done_units()) == len(plan.units):
        states.remove_all()
    report.seconds = time.perf_counter() - start
    return report


def build_group(manifest: Manifest | dict | str | Path, out: str | Path, group: int, *, device: str = "auto",
                datasets: dict | None = None, bar=None, after_unit: Callable[[Unit], None] | None = None,
                storage_options: dict | None = None) -> BuildReport:
    """Train the pending units of one group into the existing store at ``out``: one task of a distributed build.

    The committed units are read here, so a retried or repeated call skips what an earlier attempt committed
    and resumes from its saved training state. The store must exist already (a worker that does not see the
    driver's path must fail, not start a store of its own). ``datasets`` is a cache the caller may keep across
    calls, so a worker process loads each dataset once; ``bar`` receives ``update(model_epochs)``;
    ``storage_options`` go to fsspec for a store URL, as in ``build``.
    """
    if isinstance(manifest, dict):
        manifest = Manifest.from_dict(manifest, source=f"{out} (build task)")
    elif not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    dev = resolve_device(device)
    writer = ZooWriter(out, storage_options=storage_options)
    if writer.attrs["manifest"] != manifest.to_dict():
        raise StoreError(f"{out}: the store holds zoo {writer.manifest.name!r} built from another manifest than "
                         f"{manifest.source}")
    plan = writer.plan
    if not (isinstance(group, int) and 0 <= group < len(plan.groups)):
        raise ZooError(f"group {group!r}: the plan of {out} has groups 0..{len(plan.groups) - 1}")
    g = plan.groups[group]
    units = [u for u in plan.units if u.group == group]
    done = writer.done_units()
    report = BuildReport(writer.url, units_skipped=sum(u.unit_id in done for u in units))
    if report.units_skipped == len(units):
        return report
    specs = [manifest.models[i] for i in g.model_ids]
    fraction = specs[0].training["train_fraction"]
    key = (json.dumps(manifest.dataset, sort_keys=True, default=str), fraction, str(dev))
    datasets = {} if datasets is None else datasets
    start = time.perf_counter()
    flush = dev.type == "cpu" and torch.set_flush_denormal(True)  # as in build(): same bytes, no denormal stalls
    try:
        if key not in datasets:
            datasets[key] = load_image_data(manifest.dataset, device=dev, train_fraction=fraction).to(dev)
        report.model_epochs = _build_group(writer, g, units, done, specs, datasets[key], dev, _States(writer),
                                           bar if bar is not None else tqdm(disable=True), {}, report, after_unit)
        report.groups = 1
    finally:
        if flush:
            torch.set_flush_denormal(False)
    report.seconds = time.perf_counter() - start
    return report


def _build_group(writer: ZooWriter, group: Group, units: list[Unit], done: set[int], specs, data: ImageData,
                 dev: torch.device, states: _States, bar, accs: dict[int, float], report: BuildReport,
                 after_unit) -> int:
    arch_id = group.arch_id
    pop = Population(specs, writer.layout(arch_id), device=dev)
    by_epoch = {u.epoch: u for u in units}
    state = states.load(group.group)
    if state is not None and all(u.unit_id in done for e, u in by_epoch.items() if e <= state["epoch"]):
        pop.load_state_dict(state)
        bar.update(len(specs) * pop.epoch)
    name = device_name(dev)
    epochs = specs[0].training["epochs"]

    def commit_if_pending(epoch: int) -> None:
        unit = by_epoch.get(epoch)
        if unit is None:
            return
        if unit.unit_id not in done:
            records = pop.checkpoint_records(data, name)
            writer.write_unit(unit, pop.rows(), records)
            report.units_written += 1
            for spec, rec in zip(specs, records):
                accs[spec.model_id] = rec["test_acc"]
                if rec["status"] == "diverged":
                    report.diverged.add(spec.model_id)
            if after_unit is not None:
                after_unit(unit)
        if epoch < epochs:
            states.save(group.group, pop.state_dict())

    if pop.epoch == 0:
        commit_if_pending(0)
    trained = 0
    while pop.epoch < epochs:
        pop.train_epoch(data.train)
        trained += len(specs)
        bar.update(len(specs))
        commit_if_pending(pop.epoch)
        if accs:
            values = [a for a in accs.values() if a == a]
            if values:
                bar.set_postfix_str(f"test acc {min(values):.3f}-{max(values):.3f}", refresh=False)
    states.drop(group.group)
    return trained
