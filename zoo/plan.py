"""The build plan: which models train together and where each checkpoint lives.

A *group* is up to ``group_size`` models that share architecture and recipe
structure (everything but per-model values: seed, learning rate, weight
decay, momentum, init and dropout rate), so one vectorized computation can
train them. The group is the unit of *storage*; a build trains as many groups
of one structure together as fit its device (a *population*, chosen by the
builder), which changes no byte of the store. Manifests with
``population.grouping = "architecture"`` (imported zoos: nothing trains) group any models of one layout. A
*unit of work* is one group at one checkpoint epoch. Row layout in an
architecture's weights array: group-major, then checkpoint epoch, then slot,
each unit padded to ``group_size`` rows, so one unit owns exactly one shard
and no two writers ever touch the same file.

Both the builder (what to train) and the store (where rows go) read this,
so it lives in ``zoo``. It is a pure function of (manifest, group_size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from .errors import ZooError
from .manifest import Manifest, ModelSpec

#: Hyperparameters that may differ inside one vectorized group (per-model values of one computation), by plan
#: version. Version 1 (stores of format 1) grouped by dropout rate too, so every Small CNN Zoo model, which draws
#: its own rate, was a group of one; version 2 makes the rate a per-model mask probability.
PER_MODEL_BY_VERSION = {
    1: frozenset({"seed", "lr", "weight_decay", "momentum", "init", "init_std"}),
    2: frozenset({"seed", "lr", "weight_decay", "momentum", "init", "init_std", "dropout"}),
}
#: What else differs inside one group of an inr zoo: each model fits its own image, in one computation.
PER_FIELD = frozenset({"image_index", "image_split"})
PLAN_VERSION = 2
PER_MODEL = PER_MODEL_BY_VERSION[PLAN_VERSION]
#: Target bytes of one unit (one shard file) when choosing a default group size.
UNIT_BYTES = 256 * 2**20
MAX_GROUP = 64


def _default_group_size(row_bytes: int) -> int:
    return max(1, min(MAX_GROUP, UNIT_BYTES // max(row_bytes, 1)))


@dataclass(frozen=True)
class Unit:
    """One group at one checkpoint epoch: the unit of work and of storage (one shard; no two units share a file)."""

    unit_id: int
    arch_id: str
    group: int  # index among all groups of the zoo
    epoch: int
    epoch_index: int
    model_ids: tuple[int, ...]
    row_start: int  # first row in the arch's weights array; slot i is row_start + i


@dataclass(frozen=True)
class Group:
    """Models trained by one vectorized computation; ``index_in_arch`` fixes where its rows sit in the arch's array."""

    group: int
    arch_id: str
    index_in_arch: int
    model_ids: tuple[int, ...]


class Plan:
    """Groups and units of a manifest: where every checkpoint lives. ``version`` is the store's recorded plan
    version (stores keep the plan they were created with)."""

    def __init__(self, manifest: Manifest, group_size: int | None = None, version: int = PLAN_VERSION) -> None:
        if version not in PER_MODEL_BY_VERSION:
            raise ZooError(f"plan version {version!r}; this library knows {sorted(PER_MODEL_BY_VERSION)}")
        self.version = version
        self.per_model = PER_MODEL_BY_VERSION[version]
        self.manifest = manifest
        if group_size is None:
            group_size = min(_default_group_size(4 * a.layout.size) for a in manifest.architectures.values())
        if not isinstance(group_size, int) or group_size < 1:
            raise ZooError(f"group size must be a positive integer, got {group_size!r}")
        self.group_size = group_size
        self.epochs = manifest.checkpoint_epochs

    @cached_property
    def groups(self) -> tuple[Group, ...]:
        """Every group in storage order; models keep manifest order inside a structure, so the plan is deterministic."""
        buckets: dict[tuple[str, str], list[ModelSpec]] = {}
        by_structure = self.manifest.population.get("grouping", "structure") == "structure"
        for m in self.manifest.models:
            structure = ({k: v for k, v in m.hparams.items() if k not in self.per_model and k not in PER_FIELD}
                         if by_structure else {})
            buckets.setdefault((m.arch_id, json.dumps(structure, sort_keys=True)), []).append(m)
        groups: list[Group] = []
        per_arch: dict[str, int] = {}
        for (arch_id, _), models in buckets.items():
            for i in range(0, len(models), self.group_size):
                k = per_arch.get(arch_id, 0)
                per_arch[arch_id] = k + 1
                ids = tuple(m.model_id for m in models[i:i + self.group_size])
                groups.append(Group(len(groups), arch_id, k, ids))
        return tuple(groups)

    @cached_property
    def units(self) -> tuple[Unit, ...]:
        """Every unit, group-major then epoch; ``unit_id`` is the index in this tuple. What only needs counts or
        a few units uses ``unit_count`` and ``unit`` instead, which materialize nothing."""
        return tuple(self.unit(u) for u in range(self.unit_count))

    @property
    def unit_count(self) -> int:
        """Units of the zoo: groups x checkpoint epochs."""
        return len(self.groups) * len(self.epochs)

    def unit(self, unit_id: int) -> Unit:
        """The unit of that id, computed (group-major, then epoch); an id outside the plan is a ``ZooError``."""
        e = len(self.epochs)
        if not (isinstance(unit_id, int) and 0 <= unit_id < self.unit_count):
            raise ZooError(f"unit {unit_id!r}: the plan has units 0 to {self.unit_count - 1}")
        g, j = self.groups[unit_id // e], unit_id % e
        return Unit(unit_id, g.arch_id, g.group, self.epochs[j], j, g.model_ids,
                    (g.index_in_arch * e + j) * self.group_size)

    def units_per_arch(self) -> dict[str, int]:
        """Architecture id -> its units, counted."""
        out: dict[str, int] = {}
        for g in self.groups:
            out[g.arch_id] = out.get(g.arch_id, 0) + len(self.epochs)
        return out

    @cached_property
    def units_of(self) -> dict[int, tuple[Unit, ...]]:
        """Group index -> its units in epoch order: what a trainer commits as each checkpoint epoch finishes."""
        out: dict[int, list[Unit]] = {}
        for u in self.units:
            out.setdefault(u.group, []).append(u)
        return {g: tuple(units) for g, units in out.items()}

    def rows(self, arch_id: str) -> int:
        """Rows of an architecture's weights array (units padded to the group size)."""
        n = sum(1 for g in self.groups if g.arch_id == arch_id)
        return n * len(self.epochs) * self.group_size

    def shard(self, index: int, count: int) -> tuple[Group, ...]:
        """Deterministic slice ``index/count`` of the groups, for job arrays."""
        if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
            raise ZooError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        return tuple(g for g in self.groups if g.group % count == index)

    @property
    def checkpoints(self) -> int:
        """Checkpoints the zoo holds when complete (padding rows of partial groups not counted)."""
        return len(self.manifest.models) * len(self.epochs)

    def summary(self) -> dict:
        """What ``zoo plan`` prints: counts, group size and the store's size in bytes (float32, padding excluded)."""
        archs = self.manifest.architectures
        return {
            "zoo": self.manifest.name,
            "models": len(self.manifest.models),
            "checkpoints": self.checkpoints,
            "checkpoint_epochs": list(self.epochs),
            "units": self.unit_count,
            "groups": len(self.groups),
            "group_size": self.group_size,
            "plan_version": self.version,
            "architectures": {k: a.layout.num_params for k, a in archs.items()},
            "row_lengths": {k: a.layout.size for k, a in archs.items()},
            "store_bytes": sum(4 * archs[m.arch_id].layout.size for m in self.manifest.models) * len(self.epochs),
        }
