"""Symmetry spec: which hidden-unit permutations act on which tensor axes.

Modelled on git re-basin's ``PermutationSpec``, in PyTorch layout (out-axis 0,
in-axis 1; conv spatial axes never permuted). Each tensor maps to one entry per
axis: ``None`` (not permuted) or a permutation name, optionally with a repeat
factor ``"P3*9"`` when a dense layer reads a flattened (C, H, W) feature map
(each channel owns 9 consecutive inputs).

The general entry (format 4) is a concatenation of segments, each a row-major
product of factors: ``"heads*qk|heads*qk|heads*v"`` is a packed attention
projection (q, k and v stacked on axis 0; within each, head ``h``'s ``d``
dimensions are ``h * d .. h * d + d - 1``), ``"P1|P2"`` a concatenation of two
channel groups, ``"16*P3"`` a group repeated over 16 unpermuted blocks. A
factor is a group name or an unpermuted extent; group sizes then come from the
spec's groups (``SymmetrySpec.build(..., sizes=)``). ``"P3*9"`` is the
special case of one segment whose first factor is the only group.

Everything else is derived from this one table: the inverse index
(permutation -> tensor axes), group sizes, which tensors *produce* a unit
(scaled by rescaling / sign flips) and which *consume* it, and the transform
that the loaders vectorize. ``transform`` here is the plain per-tensor
reference; tests prove with it that every registered spec preserves the
network's function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ZooError
from .layout import Layout

if TYPE_CHECKING:  # the transforms import torch; declaring and reading a spec needs none
    import torch

#: What follows a permutation group's pre-activation. "act": the model's activation (an architecture option, so
#: one spec serves every activation of a zoo); "pool_act": max-pooling, then that activation; then fixed facts a
#: derived spec states (``zoo.architectures.derive``): "relu" (positively homogeneous: rescale), "odd" (odd:
#: sign flip), "linear" (nothing nonlinear: both) and "fixed" (permutation only: LayerNorm, softmax attention,
#: GELU, sigmoid, ...).
NONLINEARITIES = ("act", "pool_act", "relu", "odd", "linear", "fixed")
#: Every symmetry a permutation group may allow, in the order they are drawn: a permutation of its units, a
#: positive per-unit rescale, a per-unit sign flip. The spec's transforms, the derivation's exactness test, ``zoo
#: architectures --check`` and the loaders' ``augment`` kinds all read this one tuple.
SYMMETRIES = ("permute", "rescale", "signflip")
#: What each activation lets a unit's scale cross, by the name ``zoo.architectures.derive`` gives a torch
#: activation (and an ``activation`` option or an imported zoo's metadata uses): "homogeneous" (positively
#: homogeneous, f(a x) = a f(x) for a > 0: rescale) and "odd" (f(-x) = -f(x): sign flip). A name with neither, or
#: not listed, allows permutation only. tests/test_symmetry.py checks every entry numerically on its torch module
#: and function, both the properties listed and those not.
ACTIVATION_PROPERTIES: dict[str, frozenset[str]] = {
    "relu": frozenset({"homogeneous"}),
    "leaky_relu": frozenset({"homogeneous"}),
    "tanh": frozenset({"odd"}),
    "sin": frozenset({"odd"}),  # siren's sine layers, any omega
    "softsign": frozenset({"odd"}),
    "hardtanh": frozenset({"odd"}),  # symmetric bounds; derive names other bounds "hardtanh_asymmetric"
    "tanhshrink": frozenset({"odd"}),
    "softshrink": frozenset({"odd"}),
    "hardshrink": frozenset({"odd"}),
    # homogeneous, but its slopes are parameters on the group's axis, which a rescale would have to leave alone:
    # not derived, so permutation only
    "prelu": frozenset(),
    **dict.fromkeys(("hardtanh_asymmetric", "sigmoid", "logsigmoid", "hardsigmoid", "gelu", "silu", "mish",
                     "hardswish", "relu6", "elu", "selu", "celu", "softplus"), frozenset()),
}
#: Activations for which positive per-unit rescaling is exact (read off ``ACTIVATION_PROPERTIES``).
POSITIVE_HOMOGENEOUS = frozenset(name for name, p in ACTIVATION_PROPERTIES.items() if "homogeneous" in p)
#: Odd activations, so a unit's sign can flip (read off ``ACTIVATION_PROPERTIES``).
ODD = frozenset(name for name, p in ACTIVATION_PROPERTIES.items() if "odd" in p)


#: One factor of an axis entry: a group name, or an extent that is not permuted.
Factor = str | int


def parse_entry(entry: str | None) -> tuple[tuple[Factor, ...], ...] | None:
    """An axis entry as its segments, each a tuple of factors (``"h*qk|h*v"`` -> ``(("h", "qk"), ("h", "v"))``;
    ``"P3*9"`` -> ``(("P3", 9),)``), or None for an axis that is not permuted."""
    if entry is None:
        return None
    return tuple(tuple(int(f) if f.isdigit() else f for f in segment.split("*")) for segment in entry.split("|"))


def entry_groups(entry: str | None) -> list[str]:
    """The groups an entry names, in order of first appearance."""
    out: list[str] = []
    for segment in parse_entry(entry) or ():
        out += [f for f in segment if isinstance(f, str) and f not in out]
    return out


def is_simple(entry: str | None) -> bool:
    """Whether the entry is ``"P"`` or ``"P*k"``: one segment whose first factor is its only group (the form
    every view and the fast augmentation paths take)."""
    segments = parse_entry(entry)
    if segments is None:
        return True
    return (len(segments) == 1 and isinstance(segments[0][0], str)
            and all(isinstance(f, int) for f in segments[0][1:]))


def parse_axis(entry: str | None) -> tuple[str, int] | None:
    """One simple axis entry as ``(permutation, repeat)``, or ``None`` for an axis that is not permuted
    (``"P3*9"`` -> ``("P3", 9)``, ``"P1"`` -> ``("P1", 1)``); a composite entry (concatenated segments, several
    groups) raises ``ZooError`` (see ``is_simple``)."""
    if entry is None:
        return None
    if not is_simple(entry):
        raise ZooError(f"axis entry {entry!r} is composite (concatenated segments or several groups on one axis)")
    name, *repeat = parse_entry(entry)[0]  # type: ignore[index]
    return str(name), math.prod(int(r) for r in repeat)


def entry_size(entry: str, sizes: Mapping[str, int]) -> int:
    """Length of the axis an entry describes, given the group sizes."""
    return sum(math.prod(sizes[f] if isinstance(f, str) else f for f in segment)
               for segment in parse_entry(entry) or ())


@dataclass(frozen=True)
class PermGroup:
    """One set of interchangeable hidden units: its size (units, not tensor entries) and what follows them."""

    name: str
    size: int
    nonlinearity: str  # what follows the pre-activation: see NONLINEARITIES

    def allowed(self, activation: str | None) -> frozenset[str]:
        """Symmetries exact for this group given the model's activation (used by "act" and "pool_act")."""
        nl = self.nonlinearity
        out = {"permute"}
        if nl in ("act", "pool_act"):
            if activation in POSITIVE_HOMOGENEOUS:
                out.add("rescale")  # max-pooling commutes with positive per-channel scaling
            if activation in ODD and nl == "act":
                out.add("signflip")  # but not with a sign flip: max(-x) != -max(x)
        if nl in ("relu", "linear"):
            out.add("rescale")
        if nl in ("odd", "linear"):
            out.add("signflip")
        return frozenset(out)


@dataclass(frozen=True)
class SymmetrySpec:
    """The symmetry table of one architecture, checked against its layout by ``build``; construct it there."""

    axes: Mapping[str, tuple[str | None, ...]]
    groups: Mapping[str, PermGroup]

    # --- construction and checks ---------------------------------------------------
    @classmethod
    def build(cls, layout: Layout, axes: Mapping[str, tuple], nonlinearity: Mapping[str, str],
              sizes: Mapping[str, int] | None = None) -> SymmetrySpec:
        """Infer each group's size from the shapes (or take ``sizes``, which composite entries need) and check
        the table against the layout."""
        found: dict[str, int] = dict(sizes or {})
        composite = []
        for name, entries in axes.items():
            if name not in layout:
                raise ZooError(f"symmetry spec names {name!r}, which is not in the layout")
            shape = layout[name].shape
            if len(entries) > len(shape):
                raise ZooError(f"symmetry spec gives {len(entries)} axes for {name!r} of shape {shape}")
            for axis, entry in enumerate(entries):
                if entry is None:
                    continue
                if not is_simple(entry):
                    composite.append((name, axis, entry))
                    continue
                perm, repeat = parse_axis(entry)  # type: ignore[misc]
                if shape[axis] % repeat:
                    raise ZooError(f"{name!r} axis {axis} of size {shape[axis]} is not a multiple of {repeat}")
                size = shape[axis] // repeat
                if found.setdefault(perm, size) != size:
                    raise ZooError(f"permutation {perm!r} has size {found[perm]} elsewhere but "
                                   f"{size} on {name!r} axis {axis}")
        for name, axis, entry in composite:
            missing = [g for g in entry_groups(entry) if g not in found]
            if missing:
                raise ZooError(f"{name!r} axis {axis}: the size of group {missing[0]!r} in {entry!r} is not known "
                               "(pass sizes=)")
            if entry_size(entry, found) != layout[name].shape[axis]:
                raise ZooError(f"{name!r} axis {axis} has size {layout[name].shape[axis]}, but {entry!r} describes "
                               f"{entry_size(entry, found)}")
        if set(found) != set(nonlinearity):
            raise ZooError(f"nonlinearity declared for {sorted(nonlinearity)}, permutations are {sorted(found)}")
        for perm, nl in nonlinearity.items():
            if nl not in NONLINEARITIES:
                raise ZooError(f"permutation {perm!r}: nonlinearity {nl!r} not in {NONLINEARITIES}")
        groups = {p: PermGroup(p, found[p], nonlinearity[p]) for p in nonlinearity}
        return cls({k: tuple(v) for k, v in axes.items()}, groups)

    @property
    def sizes(self) -> dict[str, int]:
        """Units of every group."""
        return {g.name: g.size for g in self.groups.values()}

    # --- derived views ----------------------------------------------------------
    def perm_to_axes(self) -> dict[str, list[tuple[str, int, int]]]:
        """Inverse index: permutation -> [(tensor, axis, repeat)]; repeat is 0 on a composite entry (its
        structure is ``parse_entry``'s)."""
        out: dict[str, list[tuple[str, int, int]]] = {p: [] for p in self.groups}
        for name, entries in self.axes.items():
            for axis, entry in enumerate(entries):
                simple = is_simple(entry)
                for g in entry_groups(entry):
                    out[g].append((name, axis, parse_axis(entry)[1] if simple else 0))  # type: ignore[index]
        return out

    def producers(self, layout: Layout, perm: str) -> list[tuple[str, int, int]]:
        """Tensors whose outputs feed the group's nonlinearity directly.

        With a BatchNorm on the group that is its affine weight and bias (the
        conv before it is normalized away); otherwise the weights and biases
        whose out-axis is the group. Running statistics are never scaled.
        """
        out_axes = [(n, a, r) for n, a, r in self.perm_to_axes()[perm] if a == 0]
        bn = [x for x in out_axes if layout[x[0]].role in ("bn_weight", "bn_bias")]
        if bn:
            return bn
        return [x for x in out_axes if layout[x[0]].role in ("weight", "bias")]

    def consumers(self, perm: str) -> list[tuple[str, int, int]]:
        """Tensors that read the group's units (its in-axis)."""
        return [x for x in self.perm_to_axes()[perm] if x[1] == 1]

    def scaled_axes(self, layout: Layout) -> dict[tuple[str, int], dict[str, int]]:
        """(tensor, axis) -> {group: power} of the scales acting on it: +1 for a producer, -1 for a consumer."""
        out: dict[tuple[str, int], dict[str, int]] = {}
        for g in self.groups:
            for entries, power in ((self.producers(layout, g), 1), (self.consumers(g), -1)):
                for name, axis, _ in entries:
                    out.setdefault((name, axis), {})[g] = power
        return out

    # --- the reference transform -----------------------------------------------------
    def transform(self, layout: Layout, state_dict: Mapping[str, torch.Tensor],
                  perms: Mapping[str, torch.Tensor] | None = None,
                  scales: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Apply unit permutations and per-unit scales; returns a new state dict.

        New unit ``i`` of group ``g`` is old unit ``perms[g][i]``; its producers are
        multiplied by ``scales[g][i]`` and its consumers divided by it (a scale of
        -1 is a sign flip). Groups absent from ``perms``/``scales`` are left alone.
        """
        out = {k: v.clone() for k, v in state_dict.items()}
        perms = {g: p.unsqueeze(0) for g, p in (perms or {}).items()}
        scales = {g: s.unsqueeze(0) for g, s in (scales or {}).items()}
        scaled = self.scaled_axes(layout)
        sizes = self.sizes
        for name, entries in self.axes.items():
            for axis, entry in enumerate(entries):
                if entry is None:
                    continue
                value = out[name]
                index = axis_index(entry, sizes, perms, 1)
                if index is not None:
                    value = value.index_select(axis, index[0].to(value.device))
                factor = axis_factor(entry, sizes, scales, scaled.get((name, axis), {}), 1, value.dtype)
                if factor is not None:
                    value = value * _along(factor[0].to(value.device), axis, value.dim())
                out[name] = value
        return out

    def random_transform(self, layout: Layout, state_dict: Mapping[str, torch.Tensor],
                         activation: str | None, generator: torch.Generator,
                         symmetries: frozenset[str] = frozenset(SYMMETRIES),
                         ) -> dict[str, torch.Tensor]:
        """Draw a random element of the allowed symmetry group and apply it."""
        import torch

        perms, scales = {}, {}
        for g, group in self.groups.items():
            allowed = group.allowed(activation) & symmetries
            if "permute" in allowed:
                perms[g] = torch.randperm(group.size, generator=generator)
            if "rescale" in allowed:
                scales[g] = torch.exp(torch.empty(group.size).uniform_(-1.0, 1.0, generator=generator))
            elif "signflip" in allowed:
                scales[g] = torch.randint(0, 2, (group.size,), generator=generator).float() * 2 - 1
        return self.transform(layout, state_dict, perms, scales)

    # --- serialization ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored per architecture in a zoo; group sizes are kept so a reader needs no layout."""
        return {
            "axes": {k: list(v) for k, v in self.axes.items()},
            "groups": {g.name: {"size": g.size, "nonlinearity": g.nonlinearity} for g in self.groups.values()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SymmetrySpec:
        """Inverse of ``to_dict``; not checked against a layout again (``build`` did that when it was written)."""
        groups = {k: PermGroup(k, int(v["size"]), v["nonlinearity"]) for k, v in d["groups"].items()}
        return cls({k: tuple(v) for k, v in d["axes"].items()}, groups)


def axis_index(entry: str, sizes: Mapping[str, int], perms: Mapping[str, torch.Tensor],
               batch: int) -> torch.Tensor | None:
    """(B, n) old position of every new position along an axis, from the groups' (B, size) permutations, or None
    when none of the entry's groups is permuted. In a product the index is row-major over its factors (each
    permuted by its group); segments are laid end to end."""
    import torch

    segments = parse_entry(entry) or ()
    if not any(isinstance(f, str) and f in perms for segment in segments for f in segment):
        return None
    parts, offset = [], 0
    for segment in segments:
        extents = [sizes[f] if isinstance(f, str) else f for f in segment]
        index = torch.full((batch, *extents), offset, dtype=torch.int64)
        stride = math.prod(extents)
        for k, (f, n) in enumerate(zip(segment, extents)):
            stride //= n
            values = perms[f].to(torch.int64).cpu() if isinstance(f, str) and f in perms else torch.arange(n)
            shape = [values.shape[0] if values.dim() > 1 else 1] + [1] * len(extents)
            shape[k + 1] = n
            index = index + values.reshape(shape) * stride
        parts.append(index.reshape(batch, -1))
        offset += math.prod(extents)
    return torch.cat(parts, dim=1)


def axis_factor(entry: str, sizes: Mapping[str, int], scales: Mapping[str, torch.Tensor],
                powers: Mapping[str, int], batch: int, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, n) factor of every new position along an axis: the product of ``scales[g] ** powers[g]`` of the
    entry's groups at their positions, or None when none applies."""
    import torch

    segments = parse_entry(entry) or ()
    if not any(isinstance(f, str) and f in scales and f in powers for segment in segments for f in segment):
        return None
    parts = []
    for segment in segments:
        extents = [sizes[f] if isinstance(f, str) else f for f in segment]
        factor = torch.ones((batch, *extents), dtype=dtype)
        for k, (f, n) in enumerate(zip(segment, extents)):
            if isinstance(f, str) and f in scales and f in powers:
                s = scales[f].to(dtype).cpu()
                s = s if powers[f] > 0 else torch.reciprocal(s)
                shape = [s.shape[0]] + [1] * len(extents)
                shape[k + 1] = n
                factor = factor * s.reshape(shape)
        parts.append(factor.reshape(batch, -1))
    return torch.cat(parts, dim=1)


def expand_units(values: torch.Tensor, repeat: int) -> torch.Tensor:
    """Per-unit values (..., n) -> per-input values (..., n * repeat) when each unit owns ``repeat``
    consecutive inputs (indices are expanded to the inputs' indices, scales are repeated)."""
    import torch

    if repeat == 1:
        return values
    if values.dtype in (torch.int64, torch.int32):
        return (values.unsqueeze(-1) * repeat + torch.arange(repeat, device=values.device)).flatten(-2)
    return values.repeat_interleave(repeat, dim=-1)


def _along(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)
