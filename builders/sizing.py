"""How many models train as one population: the device's share of the build, not the store's.

The store's group (rows per shard) is fixed by the plan. The population is a run-time choice: as many groups
of one structure as fit the device, so a GPU trains thousands of small CNNs per step while the store's bytes
stay the same (docs/design.md §4).

- CUDA: a probe population of a few models takes one real training step; its peak memory per model, against
  the device's free memory, gives the size.
- CPU: ``CPU_POPULATION_MODELS``, which keeps the cores busy (one step's grouped kernels are large enough to
  amortize the Python dispatch), bounded by a quarter of the host's free memory.

``zoo build --population K`` overrides the choice. Populations are made of whole groups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from zoo.architectures import Architecture
from zoo.datasets import dataset_info
from zoo.errors import ZooError
from zoo.manifest import Manifest, ModelSpec
from zoo.plan import PER_FIELD, PER_MODEL, Group, Plan

from .devices import HasType, choose_mode

if TYPE_CHECKING:  # the CPU's sizing is arithmetic; torch is imported where CUDA is asked
    import torch

#: Models per population on a CPU.
CPU_POPULATION_MODELS = 64
#: Share of the free device memory a population may take (the rest: evaluation chunks, the allocator's slack).
GPU_MEMORY_FRACTION = 0.6
#: Share of the free host memory a CPU population may take.
CPU_MEMORY_FRACTION = 0.25
#: Upper bound whatever the memory: beyond it a step gains nothing (the device is already saturated).
MAX_POPULATION_MODELS = 16_384
#: Models in the probe population that measures a model's footprint on CUDA.
PROBE_MODELS = 4


def check_population(population: int | None) -> None:
    """Refuse a population size that is not a positive whole number of models, before any work."""
    if population is not None and (not isinstance(population, int) or isinstance(population, bool)
                                   or population < 1):
        raise ZooError(f"population {population!r}: expected a positive number of models (whole groups are "
                       "trained together: at least one group)")


def estimated_footprint(arch: Architecture, batch: int, optimizer_states: int = 2) -> int:
    """Bytes one model needs in a training step, by arithmetic: its tensors (weights, gradients, optimizer
    state) and its activations (every module's output for ``batch`` images, kept for the backward pass, and
    as much again for their gradients)."""
    return 4 * (arch.layout.size * (3 + optimizer_states) + 2 * batch * arch.activation_numel)


def _free_host_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform: assume a modest machine
        return 8 * 2**30


def measured_footprint(specs: Sequence[ModelSpec], make_population: Callable, train, device: torch.device) -> int:
    """Peak CUDA bytes per model of one eager training step of a probe population (``PROBE_MODELS``)."""
    import torch

    probe = list(specs[:PROBE_MODELS])
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    pop = make_population(probe)
    b = probe[0].training["batch_size"]
    pop.train_epoch(type(train)(train.x[:b], train.y[:b]))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del pop
    torch.cuda.empty_cache()
    return max(1, peak // len(probe))


def population_size(arch: Architecture, training: dict, device: HasType, *, footprint: int | None = None
                    ) -> tuple[int, str]:
    """(models per population, why) for one structure on ``device``."""
    footprint = footprint or estimated_footprint(arch, training["batch_size"],
                                                 2 if training["optimizer"] in ("adam", "adamw") else 1)
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(cast(torch.device, device))  # only a torch.device says "cuda"
        fit = int(GPU_MEMORY_FRACTION * free // footprint)
        k = max(1, min(MAX_POPULATION_MODELS, fit))
        return k, f"{k} models fit {GPU_MEMORY_FRACTION:.0%} of {free / 2**30:.1f} GiB free at " \
                  f"{footprint / 2**20:.2f} MiB per model"
    fit = int(CPU_MEMORY_FRACTION * _free_host_memory() // footprint)
    k = max(1, min(CPU_POPULATION_MODELS, fit))
    return k, f"{k} models per step on the CPU (about {footprint / 2**20:.2f} MiB per model)"


def structure_key(spec: ModelSpec) -> str:
    """Models with equal keys can train in one population: same layout and everything but per-model values."""
    return json.dumps([spec.arch_id, {k: v for k, v in spec.hparams.items() if k not in PER_MODEL | PER_FIELD}],
                      sort_keys=True, default=str)


def pack(groups: Sequence[Group], manifest: Manifest, models: int | Callable[[ModelSpec], int]
         ) -> list[list[Group]]:
    """Whole groups into populations of at most ``models`` models (a number, or a function of a structure's
    first model), at least one group each, one structure per population, in plan order."""
    buckets: dict[str, list[Group]] = {}
    for g in groups:
        buckets.setdefault(structure_key(manifest.models[g.model_ids[0]]), []).append(g)
    out: list[list[Group]] = []
    for bucket in buckets.values():
        limit = models(manifest.models[bucket[0].model_ids[0]]) if callable(models) else models
        current: list[Group] = []
        count = 0
        for g in bucket:
            if current and count + len(g.model_ids) > limit:
                out.append(current)
                current, count = [], 0
            current.append(g)
            count += len(g.model_ids)
        if current:
            out.append(current)
    return out


def population_plan(plan: Plan, device: HasType, population: int | None = None) -> dict:
    """What ``zoo plan`` shows: the population size per structure on ``device`` (estimated, not measured: a
    build on CUDA measures the footprint with a probe step) and how many populations a full build trains."""
    manifest = plan.manifest
    structures: dict[str, dict] = {}
    for g in plan.groups:
        spec = manifest.models[g.model_ids[0]]
        key = structure_key(spec)
        if key not in structures:
            if population is not None:
                k, why = population, "--population"
            else:
                k, why = population_size(spec.architecture, dict(spec.training), device)
            structures[key] = {"arch": spec.arch_id, "models": k, "why": why}
    count = len(pack(plan.groups, manifest, lambda spec: structures[structure_key(spec)]["models"]))
    first = manifest.models[0]
    setting = first.training["compile"]
    # steps of one population, for the CPU's compile threshold: the train split's size is not known without
    # loading the data, so count from the dataset's nominal train size
    n = dataset_info(manifest.dataset["name"]).train_size - (manifest.dataset["val_size"] or 0)
    steps = -(-int(n * first.training["train_fraction"]) // first.training["batch_size"]) * first.training["epochs"]
    return {"device": str(device), "count": count, "structures": list(structures.values()),
            "step_mode": choose_mode(setting, device, steps)}


#: Models an inr population may hold at most (a field is small; its step is a few batched matrix products).
INR_MAX_MODELS = 65_536


def inr_population_size(spec: ModelSpec, pixels: int, device: HasType) -> int:
    """Models per inr population on ``device``: activations and gradients of a step over ``pixels`` coordinates
    (each hidden layer's pre-activation, sine and gradient), plus weights with Adam's moments, per model."""
    layout = spec.architecture.layout
    widths = [t.shape[0] for t in layout.tensors if t.role == "weight"]  # hidden layers, then the output
    footprint = 4 * (pixels * (3 * sum(widths[:-1]) + 2 * widths[-1]) + 4 * layout.size)
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(cast(torch.device, device))
        return max(1, min(INR_MAX_MODELS, int(GPU_MEMORY_FRACTION * free // footprint)))
    return max(1, min(INR_MAX_MODELS, int(CPU_MEMORY_FRACTION * _free_host_memory() // footprint)))
