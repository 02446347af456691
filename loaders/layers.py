"""The layers of a network and how they connect, derived from its layout and symmetry spec alone.

The NFN, DWS and graph views all need the same reading of a checkpoint: which
tensors form one linear/conv layer (weight + optional bias), which permutation
group its output and input axes carry (``"C3*9"``: a dense layer reading a
flattened feature map, 9 inputs per channel), and which BatchNorm follows it.
No layer or architecture name appears here; the rules are:

- a module (the tensor name before the last dot) holding a ``weight``-role
  tensor is a layer; its ``bias``-role tensor, if any, is the layer's bias;
- a module holding BatchNorm roles (``bn_weight``, ``bn_bias``,
  ``running_mean``, ``running_var``; any subset) normalizes the most recent
  layer (in layout order) whose output carries the same permutation group, as
  in PyTorch's state-dict order conv -> bn;
- layers whose input axis carries no permutation read the network's input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from zoo.errors import ZooError
from zoo.layout import Layout, TensorSpec
from zoo.symmetry import SymmetrySpec, is_simple, parse_axis

#: BatchNorm roles in the order the views store them.
NORM_ROLES = ("bn_weight", "bn_bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Layer:
    """One linear or conv layer: weight (out, in[, *kernel]), optional bias and BatchNorm."""

    index: int
    weight: TensorSpec
    bias: TensorSpec | None
    in_group: str | None  # permutation on the input axis (None: the network's input)
    in_repeat: int  # inputs per input unit (> 1 for a dense layer reading a flattened feature map)
    out_group: str | None  # permutation on the output axis (None: the network's output)
    norm: Mapping[str, TensorSpec] = field(default_factory=dict)  # role -> tensor, roles of NORM_ROLES

    @property
    def out_units(self) -> int:
        """Neurons or channels the layer outputs (the weight's first axis)."""
        return self.weight.shape[0]

    @property
    def in_units(self) -> int:
        """Units the layer reads: channels of a flattened feature map count once, not once per position."""
        return self.weight.shape[1] // self.in_repeat

    @property
    def kernel(self) -> tuple[int, ...]:
        """Trailing axes of one (out, in-unit) pair: the conv kernel, ``(k,)`` for a flattened-map dense
        layer, ``()`` for a plain dense layer."""
        if self.in_repeat > 1:
            return (self.in_repeat,)
        return self.weight.shape[2:]

    @property
    def values_per_pair(self) -> int:
        """Weights connecting one (out, in) unit pair: 1 for a plain dense layer."""
        return math.prod(self.kernel)

    @property
    def kind(self) -> str:
        """``dense``, ``conv`` or ``flatten`` (dense over a flattened feature map)."""
        if self.in_repeat > 1:
            return "flatten"
        return "conv" if len(self.weight.shape) > 2 else "dense"


def _axes(spec: SymmetrySpec, t: TensorSpec) -> list[tuple[str, int] | None]:
    entries = list(spec.axes.get(t.name, ()))
    entries += [None] * (len(t.shape) - len(entries))
    return [parse_axis(e) for e in entries]


#: Why a network outside the layer model has no nfn/dws/graph view, by what places it outside.
OUTSIDE = {
    "norm_weight": "a LayerNorm/GroupNorm normalizes across units, which no per-neuron layer of NFN/DWS or node of a "
                   "neural graph expresses",
    "norm_bias": "a LayerNorm/GroupNorm normalizes across units, which no per-neuron layer of NFN/DWS or node of a "
                 "neural graph expresses",
    "embedding": "a free tensor (class token, position embedding) is neither a layer's weight nor its bias",
    "composite": "multi-head attention (or a concatenation) couples units across layers (q.k products, heads), which "
                 "the NFN/DWS layer model and Kofinas et al.'s graph of layers do not express here",
}


def network_layers(layout: Layout, spec: SymmetrySpec) -> list[Layer]:
    """The layers in layout order, each with its bias and BatchNorm; every layout tensor is placed once. A network
    outside that model (attention, LayerNorm, free embeddings) raises ``ZooError`` saying why."""
    unknown = sorted(set(spec.axes) - set(layout.names))
    if unknown:
        raise ZooError(f"symmetry spec names {unknown[0]!r}, which is not in the layout")
    for t in layout.tensors:
        composite = not all(is_simple(e) for e in spec.axes.get(t.name, ()))
        why = OUTSIDE.get("composite" if composite else t.role)
        if why:
            raise ZooError(f"the nfn, dws and graph views are defined for networks of Linear/Conv layers with "
                           f"BatchNorm; {t.name!r} is outside that model: {why}. Use the flat, tokens or "
                           "state_dict view")
    layers: list[Layer] = []
    for module, tensors in layout.modules():
        roles: dict[str, TensorSpec] = {}
        for t in tensors:
            if t.role in roles:
                raise ZooError(f"module {module!r} holds two tensors of role {t.role!r}")
            roles[t.role] = t
        if "weight" in roles:
            stray = sorted(set(roles) - {"weight", "bias"})
            if stray:
                raise ZooError(f"module {module!r} mixes a layer weight with {stray[0]!r}")
            layer = _layer(len(layers), roles["weight"], roles.get("bias"), spec)
            if layer.in_group is None and layer.out_group is not None and any(
                    earlier.out_group == layer.out_group for earlier in layers):
                raise ZooError(f"the nfn, dws and graph views are defined for networks of Linear/Conv layers with "
                               f"BatchNorm; {layer.weight.name!r} is outside that model: a depthwise (grouped) "
                               "convolution connects each channel to itself, not every input to every output. Use "
                               "the flat, tokens or state_dict view")
            layers.append(layer)
        elif set(roles) <= set(NORM_ROLES):
            _attach_norm(layers, module, roles, spec)
        else:
            raise ZooError(f"module {module!r}: a bias without a weight cannot be placed in a layer")
    return layers


def _layer(index: int, weight: TensorSpec, bias: TensorSpec | None, spec: SymmetrySpec) -> Layer:
    if len(weight.shape) < 2:
        raise ZooError(f"layer weight {weight.name!r} has shape {weight.shape}; expected (out, in[, *kernel])")
    axes = _axes(spec, weight)
    if any(a is not None for a in axes[2:]):
        raise ZooError(f"{weight.name!r}: kernel axes carry a permutation; only out (0) and in (1) may")
    out_group = axes[0][0] if axes[0] else None
    if axes[0] and axes[0][1] != 1:
        raise ZooError(f"{weight.name!r}: a repeat factor is only supported on the input axis")
    in_group, in_repeat = axes[1] if axes[1] else (None, 1)
    if in_repeat > 1 and len(weight.shape) > 2:
        raise ZooError(f"{weight.name!r}: a repeat factor on a conv's input axis is not supported")
    if bias is not None:
        if bias.shape != weight.shape[:1]:
            raise ZooError(f"bias {bias.name!r} has shape {bias.shape}; its weight expects {weight.shape[:1]}")
        b_axes = _axes(spec, bias)
        if (b_axes[0][0] if b_axes[0] else None) != out_group:
            raise ZooError(f"bias {bias.name!r} carries a different permutation than {weight.name!r}")
    return Layer(index, weight, bias, in_group, in_repeat, out_group)


def _attach_norm(layers: list[Layer], module: str, roles: dict[str, TensorSpec], spec: SymmetrySpec) -> None:
    groups = {(_axes(spec, t)[0] or (None,))[0] for t in roles.values()}
    if len(groups) != 1 or None in groups:
        raise ZooError(f"BatchNorm module {module!r}: its tensors must all carry one permutation group on "
                       f"axis 0 (found {', '.join(sorted(map(str, groups)))})")
    group = next(iter(groups))
    for i in range(len(layers) - 1, -1, -1):
        if layers[i].out_group == group:
            if layers[i].norm:
                raise ZooError(f"BatchNorm module {module!r}: layer {layers[i].weight.name!r} already has one")
            size = layers[i].out_units
            bad = [t.name for t in roles.values() if t.shape != (size,)]
            if bad:
                raise ZooError(f"BatchNorm tensor {bad[0]!r} does not match the {size} outputs of "
                               f"{layers[i].weight.name!r}")
            layers[i] = replace(layers[i], norm={r: roles[r] for r in NORM_ROLES if r in roles})
            return
    raise ZooError(f"BatchNorm module {module!r}: no earlier layer writes permutation {group!r}")


def require_spec(name: str, spec: SymmetrySpec | None) -> SymmetrySpec:
    """The spec a view needs, or a clear error saying how to pass it."""
    if not isinstance(spec, SymmetrySpec):
        raise ZooError(f"view {name!r} needs the architecture's symmetry spec: "
                       f"make_view({name!r}, layout, spec=...) with Zoo.symmetry(arch_id) or Architecture.symmetry")
    return spec
