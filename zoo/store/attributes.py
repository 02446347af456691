"""A store's self-description, checked before anything trusts it.

A store, or an export's descriptor, comes from strangers: its attributes are data. Everything a reader takes from
them (the group size, the architecture ids that name files, each layout and symmetry spec, the manifest that
says where rows live) is checked here against the few facts the format fixes, and every refusal is a
``StoreError`` naming the store, the field and what is allowed. Nothing here imports or builds what an
architecture names: the stored layout and spec are pinned onto the manifest's architectures
(``Architecture.pin``), so planning, exporting or importing a zoo never constructs its module
(docs/design.md §7).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import StoreError, ZooError
from ..layout import ROLES, Layout, TensorSpec
from ..manifest import MAX_MODELS, Manifest
from ..plan import PER_MODEL_BY_VERSION, Plan
from ..symmetry import SymmetrySpec

#: An architecture id names a folder (``weights/<id>``, an export's ``data/<id>``): one path component, with no
#: separator, no ``..``, nothing hidden.
ARCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
#: Values in one stored row (a 17-billion-parameter network in float32 takes 64 GiB): a larger declared layout is
#: refused before anything is sized by it.
MAX_ROW_LENGTH = 2**34
#: Dimensions of one stored tensor.
MAX_NDIM = 8


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arch_id(arch_id: Any, where: str) -> str:
    """``arch_id`` if it is a safe file name, else a ``StoreError`` naming it."""
    if not (isinstance(arch_id, str) and len(arch_id) <= 200 and ARCH_ID.match(arch_id)):
        raise StoreError(f"{where}: architecture id {arch_id!r} is not a safe name (letters, digits, '_', '-' and "
                         "single dots between them; no path separators, no '..')")
    return arch_id


def check_group_size(value: Any, where: str) -> int:
    """The stored group size: a positive integer (rows per shard)."""
    if not (_int(value) and 1 <= value <= MAX_MODELS):
        raise StoreError(f"{where}: group_size {value!r}; expected an integer in [1, {MAX_MODELS}]")
    return value


def stored_layout(d: Any, where: str) -> Layout:
    """A stored layout, checked: named tensors with shapes of positive sizes, laid end to end from offset 0, with
    a known role, in a row of at most ``MAX_ROW_LENGTH`` values."""
    if not isinstance(d, Mapping) or not isinstance(d.get("tensors"), list) or not d["tensors"]:
        raise StoreError(f"{where}: layout must be an object with a non-empty list 'tensors'")
    tensors, offset, names = [], 0, set()
    for i, t in enumerate(d["tensors"]):
        at = f"{where}: layout tensor {i}"
        if not isinstance(t, Mapping):
            raise StoreError(f"{at}: expected an object with name, shape, offset and role")
        name, shape, role, start = t.get("name"), t.get("shape"), t.get("role"), t.get("offset")
        if not isinstance(name, str) or not name or name in names:
            raise StoreError(f"{at}: name {name!r}; expected a non-empty name, once per layout")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_int(s) and s > 0 for s in shape)):
            raise StoreError(f"{at} ({name!r}): shape {str(shape)[:80]}; expected at most {MAX_NDIM} positive "
                             "integers")
        if role not in ROLES:
            raise StoreError(f"{at} ({name!r}): role {role!r}; allowed: {', '.join(ROLES)}")
        if not _int(start) or start != offset:
            raise StoreError(f"{at} ({name!r}): offset {start!r}; tensors lie end to end, so {offset} was expected")
        offset += math.prod(shape)
        if offset > MAX_ROW_LENGTH:
            raise StoreError(f"{where}: layout of more than {MAX_ROW_LENGTH} values per row; refused")
        names.add(name)
        tensors.append(TensorSpec(name, tuple(shape), start, role))
    return Layout(tuple(tensors))


def stored_symmetry(d: Any, layout: Layout, where: str) -> SymmetrySpec:
    """A stored symmetry spec, checked against its layout as a freshly derived one is (``SymmetrySpec.build``):
    every axis it names exists and every group's size agrees with every axis it acts on."""
    try:
        if not isinstance(d, Mapping) or not isinstance(d.get("axes"), Mapping) or not isinstance(
                d.get("groups"), Mapping):
            raise ZooError("expected an object with 'axes' and 'groups'")
        axes = {}
        for name, entries in d["axes"].items():
            if not isinstance(entries, list) or not all(e is None or isinstance(e, str) for e in entries):
                raise ZooError(f"axes of {name!r}: expected a list of entries (strings or null)")
            axes[name] = tuple(entries)
        sizes: dict[str, int] = {}
        nonlinearity: dict[str, str] = {}
        for g, spec in d["groups"].items():
            if not (isinstance(spec, Mapping) and _int(spec.get("size")) and spec["size"] > 0):
                raise ZooError(f"group {g!r}: expected an object with a positive integer size")
            sizes[g], nonlinearity[g] = spec["size"], str(spec.get("nonlinearity"))
        for name, entries in axes.items():
            for entry in entries:
                if entry is not None and not re.fullmatch(r"[A-Za-z0-9_.#-]+([*|][A-Za-z0-9_.#-]+)*", entry):
                    raise ZooError(f"axis entry {entry[:80]!r} of {name!r}: expected groups and extents joined by "
                                   "'*' and '|'")
        return SymmetrySpec.build(layout, axes, nonlinearity, sizes)
    except (ZooError, KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{where}: symmetry spec: {e}") from None


def stored_manifest(attrs: Mapping[str, Any], where: str) -> Manifest:
    """The manifest a store (or an export) was made from, with each architecture's stored layout and symmetry
    pinned (its module is never built to find them) and its architecture ids checked against the stored ones.
    Untrusted: a factory it names is never called."""
    data = attrs.get("manifest")
    if not isinstance(data, Mapping):
        raise StoreError(f"{where}: 'manifest' must be an object (the manifest the store was made from)")
    try:
        manifest = Manifest.from_dict(data, source=f"{where} (manifest attribute)")
    except ZooError as e:
        raise StoreError(str(e)) from None
    archs = attrs.get("architectures")
    if not isinstance(archs, Mapping):
        raise StoreError(f"{where}: 'architectures' must be an object of architecture ids")
    planned = set(manifest.architectures)
    if planned != set(archs):
        raise StoreError(f"{where}: the manifest plans architectures {sorted(planned)}, the store describes "
                         f"{sorted(archs)}")
    pinned = {a: architecture_attrs(archs[a], f"{where}: architectures[{a!r}]") for a in archs}
    for m in manifest.models:
        m.architecture.pin(*pinned[m.arch_id])
    return manifest


def architecture_attrs(d: Any, where: str) -> tuple[Layout, SymmetrySpec]:
    """(layout, symmetry spec) of one stored architecture, checked."""
    if not isinstance(d, Mapping):
        raise StoreError(f"{where}: expected an object with architecture, layout, symmetry and rows")
    layout = stored_layout(d.get("layout"), where)
    return layout, stored_symmetry(d.get("symmetry"), layout, where)


def check_attributes(attrs: Mapping[str, Any], where: str) -> None:
    """What ``zoo.open`` checks of a store's attributes before anything else reads them: the group size, the plan
    version, and an architecture table of safe ids, each with a row count. Layouts, specs and the manifest are
    checked where they are first read (``architecture_attrs``, ``stored_manifest``)."""
    check_group_size(attrs.get("group_size"), where)
    version = attrs.get("plan_version", 1)
    if version not in PER_MODEL_BY_VERSION:
        raise StoreError(f"{where}: plan_version {version!r}; this library knows {sorted(PER_MODEL_BY_VERSION)}")
    archs = attrs.get("architectures")
    if not isinstance(archs, Mapping) or not archs:
        raise StoreError(f"{where}: 'architectures' must be a non-empty object of architecture ids")
    for arch_id, d in archs.items():
        check_arch_id(arch_id, where)
        if not isinstance(d, Mapping) or not _int(d.get("rows")) or d["rows"] < 0:
            raise StoreError(f"{where}: architectures[{arch_id!r}]: expected an object with a row count 'rows'")
    if not isinstance(attrs.get("manifest"), Mapping):
        raise StoreError(f"{where}: 'manifest' must be an object (the manifest the store was made from)")
    if "split" in attrs:
        check_split(attrs["split"], f"{where}: 'split'")


def check_split(value: Any, where: str) -> dict[str, list[int]]:
    """A split by model that travels with a store or an export: split names mapped to lists of model ids."""
    if not (isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, list) and all(
            _int(m) for m in v) for k, v in value.items())):
        raise StoreError(f"{where}: expected an object mapping split names to lists of model ids")
    return dict(value)


def check_plan(plan: Plan, attrs: Mapping[str, Any], where: str) -> None:
    """The stored row counts are the plan's: rows are found where the plan puts them, and nothing beyond."""
    for arch_id, d in attrs["architectures"].items():
        if d["rows"] != plan.rows(arch_id):
            raise StoreError(f"{where}: architectures[{arch_id!r}] records {d['rows']} rows; its manifest and group "
                             f"size plan {plan.rows(arch_id)}")
