"""Distributed builds on Ray: one task per population, each writing its units straight into a shared store.

Why populations, not models (the published zoos ran one Ray Tune trial per model): a population (whole groups of
one structure, ``sizing.pack``) is one vectorized computation, so a task trains many models for the price of
one; and each group owns its units' shards and metadata fragments, so tasks never touch the same file and need
no coordination beyond the store's commit protocol (weights flushed, then the metadata fragment renamed into
place). The driver packs populations of ``population`` models (default: the CPU size of ``sizing.py``; pass a
larger one for GPU workers).

Failures: a task whose worker dies is retried by Ray (``max_retries``); the retry reads the committed units
and its groups' saved training states (``STORE/.build``) and redoes only the epochs since the last committed
checkpoint. A driver that dies takes its tasks
with it; running it again resubmits the groups that still have uncommitted units. The bytes are the same
either way, because a group's computation is a pure function of the manifest (bit-identical on CPU).

The store must be at a path that every node sees (a shared file system) or an object-store URL, and
weightzoo must be installed on every node.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.errors import StoreNotFoundError, ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.plan import Unit
from zoo.store import create

from . import sizing
from .orchestration import BuildReport, GroupStates, build_groups
from .sizing import check_population

#: Architectures with at least this many parameters get a whole GPU per task by default (a ResNet-18 population
#: saturates one); smaller ones share a GPU, since a small-CNN group step is bound by kernel launches and
#: several groups on one device overlap them.
LARGE_MODEL_PARAMS = 1_000_000
SMALL_MODEL_GPU_FRACTION = 0.25
DEVICES = ("auto", "cpu", "cuda")

#: Per worker process: datasets already on the device, so a worker that runs many groups loads each once.
_DATASETS: dict = {}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ZooError("the ray backend needs Ray, which is not installed: pip install weightzoo[ray]") from None
    return ray


def default_gpus_per_group(manifest: Manifest) -> float:
    """Whole GPUs for large models (ResNet-18), a fraction for small CNNs and MLPs."""
    largest = max(a.layout.num_params for a in manifest.architectures.values())
    return 1.0 if largest >= LARGE_MODEL_PARAMS else SMALL_MODEL_GPU_FRACTION


@dataclass
class RayBuildReport(BuildReport):
    """A ``BuildReport`` plus the cluster's side of the build: tasks, retries, GPU share and Ray start-up."""

    tasks: int = 0  # populations submitted (one task each)
    retries: int = 0  # task attempts beyond the first (workers that died)
    gpus_per_group: float = 0.0
    ray_init_s: float = 0.0
    failed: dict[int, str] = field(default_factory=dict)  # a task's first group -> error, after all retries


def _progress_actor_class():
    """The class of a Ray actor that tasks report to: model-epochs reached per group, attempts per group.

    Defined in a function so that Ray ships it by value: the actor's process then imports only Ray, not this
    package and torch (seconds per build on a busy node, and tasks wait for the actor's first answer).
    """

    class Progress:
        def __init__(self) -> None:
            self.reached: dict[int, int] = {}
            self.attempts: dict[int, int] = {}

        def start(self, group: int) -> None:
            self.attempts[group] = self.attempts.get(group, 0) + 1

        def report(self, group: int, model_epochs: int) -> None:
            self.reached[group] = max(self.reached.get(group, 0), model_epochs)

        def snapshot(self) -> tuple[dict[int, int], dict[int, int]]:
            return self.reached, self.attempts

    return Progress


class _ReportingBar:
    """Stands in for the local build's tqdm bar inside a task: forwards the group's progress to the actor."""

    def __init__(self, progress, group: int) -> None:
        self.progress, self.group, self.n = progress, group, 0

    def update(self, n: int) -> None:
        self.n += n
        self.progress.report.remote(self.group, self.n)

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass


def _run_group(manifest: dict, out: str, groups: list[int], models: int, device: str, progress, after_unit,
               storage_options: dict | None) -> dict[str, Any]:
    """The Ray task: one population of groups, committed unit by unit into the shared store."""
    group = groups[0]  # the task's name in the progress actor
    _import_ray().get(progress.start.remote(group))  # synchronous: the driver counts retries from these
    bar = _ReportingBar(progress, group)
    try:
        r = build_groups(manifest, out, groups, device=device, population=models,
                         datasets=_DATASETS, bar=bar, after_unit=after_unit, storage_options=storage_options)
    except StoreNotFoundError as e:
        raise StoreNotFoundError(f"{e} (on node {socket.gethostname()}): the store must be on a file system or "
                                 "object store that every node of the cluster sees") from None
    return {"group": group, "units_written": r.units_written, "units_skipped": r.units_skipped,
            "model_epochs": r.model_epochs, "groups": r.groups, "diverged": sorted(r.diverged),
            "seconds": r.seconds}


def _check_options(device: str, gpus_per_group: float | None, max_retries: int) -> None:
    if device not in DEVICES:
        raise ZooError(f"device {device!r} with --backend ray; allowed: {', '.join(DEVICES)} "
                       "(Ray assigns each task its GPU)")
    if gpus_per_group is not None and not 0 <= gpus_per_group <= 1:
        raise ZooError(f"--gpus-per-group {gpus_per_group!r}; allowed: 0 (CPU only) or a fraction in (0, 1] "
                       "(a group trains on one device)")
    if device == "cuda" and gpus_per_group == 0:
        raise ZooError("--device cuda with --gpus-per-group 0; drop one of them")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ZooError(f"max_retries {max_retries!r}: expected an integer >= 0")


def _resources(ray, manifest: Manifest, device: str, gpus_per_group: float | None) -> tuple[float, str]:
    """(GPUs per task, device inside the task), from the options and the cluster's GPUs."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
    if device == "cpu" or gpus_per_group == 0 or (device == "auto" and not cluster_gpus):
        return 0.0, "cpu"
    if not cluster_gpus:
        raise ZooError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
    return (gpus_per_group if gpus_per_group is not None else default_gpus_per_group(manifest)), "cuda"


def ray_build(manifest: Manifest | str | Path, out: str | Path, *, address: str | None = None,
              device: str = "auto", gpus_per_group: float | None = None, group_size: int | None = None,
              population: int | None = None, max_retries: int = 3, quiet: bool = False,
              after_unit: Callable[[Unit], None] | None = None,
              storage_options: dict | None = None, poll_s: float = 0.2) -> RayBuildReport:
    """Build every pending group of ``manifest`` into ``out`` as Ray tasks.

    ``address``: a running cluster (``auto``, ``HOST:PORT``, ``ray://...``); None starts a local instance
    unless this process is connected already. ``after_unit`` runs inside the task after each commit (tests
    inject faults with it; it must pickle). Raises ``ZooError`` naming the groups that still failed after
    ``max_retries``; their committed units are kept, and a rerun continues. ``storage_options`` (fsspec, for
    a store URL) travel to every task as arguments: keep credentials in the workers' environment instead.
    """
    ray = _import_ray()
    # the caller's manifest: building it is the caller's intent (its factory may run; a store's never does)
    manifest = manifest.trusted() if isinstance(manifest, Manifest) else load_manifest(manifest, trust_code=True)
    _check_options(device, gpus_per_group, max_retries)
    check_population(population)
    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=not quiet)
    init_s = time.perf_counter() - t0
    try:
        num_gpus, task_device = _resources(ray, manifest, device, gpus_per_group)
        writer = create(out, manifest, group_size=group_size, storage_options=storage_options)
        report = RayBuildReport(writer.url, gpus_per_group=num_gpus, ray_init_s=init_s)
        _drive(ray, writer, writer.plan, num_gpus, task_device, population, max_retries, quiet, after_unit, poll_s,
               report)
    finally:
        if started:
            ray.shutdown()
    return report


def _drive(ray, writer, plan, num_gpus: float, task_device: str, population: int | None, max_retries: int,
           quiet: bool, after_unit, poll_s: float, report: RayBuildReport) -> None:
    start = time.perf_counter()
    before = writer.done_units()
    pending = [g for g in plan.groups if any(u.unit_id not in before for u in plan.units_of[g.group])]
    report.units_skipped = len(before & set(u.unit_id for u in plan.units))
    epochs = writer.manifest.training["epochs"]
    total = sum(len(g.model_ids) for g in plan.groups) * epochs
    initial = total - sum(len(g.model_ids) for g in pending) * epochs
    bar = tqdm(total=total, initial=initial, unit="model-epoch", disable=quiet, dynamic_ncols=True,
               desc=f"{writer.manifest.name} (ray)")
    progress = ray.remote(num_cpus=0)(_progress_actor_class()).remote()
    ray.get(progress.snapshot.remote())  # up before any task reports to it
    # a dead worker is retried; of the exceptions only CUDA out-of-memory, which GPU sharing can make transient
    task = ray.remote(_run_group).options(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries,
                                          retry_exceptions=[torch.cuda.OutOfMemoryError])
    manifest_ref = ray.put(writer.attrs["manifest"])
    limit = population if population is not None else (
        lambda spec: sizing.population_size(spec.architecture, dict(spec.training), torch.device("cpu"))[0])
    populations = sizing.pack(pending, writer.manifest, limit)
    # a task is named by its first group; its size is its model-epochs
    size = {pop[0].group: sum(len(g.model_ids) for g in pop) * epochs for pop in populations}
    members = {pop[0].group: [g.group for g in pop] for pop in populations}
    refs = {task.remote(manifest_ref, writer.url, [g.group for g in pop], sum(len(g.model_ids) for g in pop),
                        task_device, progress, after_unit, writer.storage_options or None): pop[0].group
            for pop in populations}
    report.tasks = len(refs)
    finished: set[int] = set()
    attempts: dict[int, int] = {}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=poll_s)
            for ref in ready:
                group = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ZooError as e:  # bad input, the same in every task: stop now
                    raise ZooError(f"group {group}: {getattr(e, 'cause', e)}") from None
                except ray.exceptions.RayError as e:
                    report.failed[group] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}"
                    continue
                finished.add(group)
                report.model_epochs += result["model_epochs"]
                report.groups += result["groups"]
                report.diverged.update(result["diverged"])
            reached, attempts = ray.get(progress.snapshot.remote())
            bar.n = initial + sum(size[g] if g in finished else min(reached.get(g, 0), size[g]) for g in size)
            bar.set_postfix_str(f"{len(finished)}/{len(size)} populations, {len(refs)} queued or running",
                                refresh=False)
            bar.refresh()
    except BaseException:  # Ctrl-C or a bad-input error: stop the tasks (a unit in flight is simply redone)
        for ref in refs:
            ray.cancel(ref)
        raise
    finally:
        bar.close()
    report.retries = sum(max(0, n - 1) for n in attempts.values())
    writer.refresh()
    after = writer.done_units()
    report.units_written = len(after - before)
    report.seconds = time.perf_counter() - start
    if len(after) >= len(plan.units):
        GroupStates(writer).remove_all()
    if report.failed:
        listed = "; ".join(f"groups {', '.join(map(str, members[g]))}: {e}"
                           for g, e in sorted(report.failed.items())[:5])
        raise ZooError(f"{len(report.failed)} task(s) failed (a task whose worker dies is retried up to "
                       f"{max_retries} times): {listed}; their committed units are kept: rerun the same command "
                       "to continue")
