"""Symmetry spec: which hidden-unit permutations act on which tensor axes.

Modelled on git re-basin's ``PermutationSpec``, in PyTorch layout (out-axis 0,
in-axis 1; conv spatial axes never permuted). Each tensor maps to one entry per
axis: ``None`` (not permuted) or a permutation name, optionally with a repeat
factor ``"P3*9"`` when a dense layer reads a flattened (C, H, W) feature map
(each channel owns 9 consecutive inputs).

Everything else is derived from this one table: the inverse index
(permutation -> tensor axes), group sizes, which tensors *produce* a unit
(scaled by rescaling / sign flips) and which *consume* it, and the transform
that the loaders vectorize. ``transform`` here is the plain per-tensor
reference; tests prove with it that every registered spec preserves the
network's function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ZooError
from .layout import Layout

if TYPE_CHECKING:  # the transforms import torch; declaring and reading a spec needs none
    import torch

#: What follows a permutation group's pre-activation, as declared by the architecture.
NONLINEARITIES = ("act", "pool_act", "relu")
#: Activations for which positive per-unit rescaling is exact: f(a x) = a f(x), a > 0.
POSITIVE_HOMOGENEOUS = frozenset({"relu", "leaky_relu"})
#: Odd activations: f(-x) = -f(x), so a unit's sign can flip ("sin": siren's sine layers, any omega).
ODD = frozenset({"tanh", "sin"})


def parse_axis(entry: str | None) -> tuple[str, int] | None:
    """One axis entry of the table as ``(permutation, repeat)``, or ``None`` for an axis that is not permuted
    (``"P3*9"`` -> ``("P3", 9)``, ``"P1"`` -> ``("P1", 1)``)."""
    if entry is None:
        return None
    name, _, repeat = entry.partition("*")
    return name, int(repeat or 1)


# --- helpers that make a spec read like the network ---------------------------------------
def conv(name: str, p_in: str | None, p_out: str | None, bias: bool = True) -> dict[str, tuple]:
    """Table entries of a Conv2d: weight (out, in, kh, kw) with spatial axes never permuted, and its bias."""
    axes: dict[str, tuple] = {f"{name}.weight": (p_out, p_in, None, None)}
    if bias:
        axes[f"{name}.bias"] = (p_out,)
    return axes


def dense(name: str, p_in: str | None, p_out: str | None, bias: bool = True) -> dict[str, tuple]:
    """Table entries of a Linear layer; ``p_in`` may carry a repeat (``"P3*9"``) when it reads a flattened map."""
    axes: dict[str, tuple] = {f"{name}.weight": (p_out, p_in)}
    if bias:
        axes[f"{name}.bias"] = (p_out,)
    return axes


def norm(name: str, p: str | None) -> dict[str, tuple]:
    """Table entries of a BatchNorm: affine parameters and running statistics all follow the channel's unit."""
    return {f"{name}.{k}": (p,) for k in ("weight", "bias", "running_mean", "running_var")}


@dataclass(frozen=True)
class PermGroup:
    """One set of interchangeable hidden units: its size (units, not tensor entries) and what follows them."""

    name: str
    size: int
    nonlinearity: str  # what follows the pre-activation: see NONLINEARITIES

    def allowed(self, activation: str | None) -> frozenset[str]:
        """Symmetries exact for this group given the model's activation."""
        act = "relu" if self.nonlinearity == "relu" else activation
        out = {"permute"}
        if act in POSITIVE_HOMOGENEOUS:
            out.add("rescale")  # max-pooling commutes with positive per-channel scaling
        if act in ODD and self.nonlinearity == "act":
            out.add("signflip")  # but not with a sign flip: max(-x) != -max(x)
        return frozenset(out)


@dataclass(frozen=True)
class SymmetrySpec:
    """The symmetry table of one architecture, checked against its layout by ``build``; construct it there."""

    axes: Mapping[str, tuple[str | None, ...]]
    groups: Mapping[str, PermGroup]

    # --- construction and checks ---------------------------------------------------
    @classmethod
    def build(cls, layout: Layout, axes: Mapping[str, tuple], nonlinearity: Mapping[str, str]) -> SymmetrySpec:
        """Infer each group's size from the shapes and check the table against the layout."""
        sizes: dict[str, int] = {}
        for name, entries in axes.items():
            if name not in layout:
                raise ZooError(f"symmetry spec names {name!r}, which is not in the layout")
            shape = layout[name].shape
            if len(entries) > len(shape):
                raise ZooError(f"symmetry spec gives {len(entries)} axes for {name!r} of shape {shape}")
            for axis, entry in enumerate(entries):
                parsed = parse_axis(entry)
                if parsed is None:
                    continue
                perm, repeat = parsed
                if shape[axis] % repeat:
                    raise ZooError(f"{name!r} axis {axis} of size {shape[axis]} is not a multiple of {repeat}")
                size = shape[axis] // repeat
                if sizes.setdefault(perm, size) != size:
                    raise ZooError(f"permutation {perm!r} has size {sizes[perm]} elsewhere but "
                                   f"{size} on {name!r} axis {axis}")
        if set(sizes) != set(nonlinearity):
            raise ZooError(f"nonlinearity declared for {sorted(nonlinearity)}, permutations are {sorted(sizes)}")
        for perm, nl in nonlinearity.items():
            if nl not in NONLINEARITIES:
                raise ZooError(f"permutation {perm!r}: nonlinearity {nl!r} not in {NONLINEARITIES}")
        groups = {p: PermGroup(p, sizes[p], nonlinearity[p]) for p in sizes}
        return cls({k: tuple(v) for k, v in axes.items()}, groups)

    # --- derived views ----------------------------------------------------------
    def perm_to_axes(self) -> dict[str, list[tuple[str, int, int]]]:
        """Inverse index: permutation -> [(tensor, axis, repeat)]."""
        out: dict[str, list[tuple[str, int, int]]] = {p: [] for p in self.groups}
        for name, entries in self.axes.items():
            for axis, entry in enumerate(entries):
                parsed = parse_axis(entry)
                if parsed:
                    out[parsed[0]].append((name, axis, parsed[1]))
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
        perms = perms or {}
        scales = scales or {}
        index = self.perm_to_axes()
        for g, entries in index.items():
            if g in perms:
                for name, axis, repeat in entries:
                    idx = expand_units(perms[g], repeat)
                    out[name] = out[name].index_select(axis, idx.to(out[name].device))
            if g in scales:
                s = scales[g]
                for name, axis, repeat in self.producers(layout, g):
                    out[name] = out[name] * _along(expand_units(s, repeat), axis, out[name].dim())
                for name, axis, repeat in self.consumers(g):
                    out[name] = out[name] / _along(expand_units(s, repeat), axis, out[name].dim())
        return out

    def random_transform(self, layout: Layout, state_dict: Mapping[str, torch.Tensor],
                         activation: str | None, generator: torch.Generator,
                         symmetries: frozenset[str] = frozenset({"permute", "rescale", "signflip"}),
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
