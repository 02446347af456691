"""Symmetry specs derived by tracing (``zoo/architectures/derive.py``): equal to the hand-written tables they
replace, function-preserving on torchvision's and the registered architectures, and right on every kind of op
the tracer reads (hand-written modules below)."""

from __future__ import annotations

import functools
import json
import math
import re
import signal
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from reference_specs import REFERENCES
from test_architectures import SHAPES
from torch import nn

from zoo.architectures import ARCHITECTURES, get_architecture
from zoo.architectures.check import describe, preservation_error
from zoo.architectures.derive import Derived, derive
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.symmetry import ODD, POSITIVE_HOMOGENEOUS, SymmetrySpec, entry_groups, parse_entry

KINDS = ("permute", "rescale", "signflip")
TOLERANCE = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small float64 forwards run on one intra-op thread: two threads on a busy 2-core machine spin against each
    other (MobileNet's depthwise convolutions: 30 s instead of 0.3 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _shape(name: str) -> tuple[int, int, int]:
    """test_architectures' input shape for a registered architecture (a small image for one it lacks)."""
    return SHAPES.get(name, (3, 16, 16))


def _activations(name: str) -> list[str | None]:
    """Every activation an architecture accepts: its option's choices, or None (the one it fixes)."""
    option = ARCHITECTURES.get(name).options.get("activation")
    return list(option.choices or ()) if option is not None else [None]


# --- helpers --------------------------------------------------------------------------------------------------------


def canonical(spec: SymmetrySpec, layout: Layout, activation: str | None) -> tuple[dict, dict]:
    """``spec`` with its groups renamed g0, g1, ... by first appearance in layout order (tensor, then axis): every
    tensor's entries (None-padded to its rank) and every group's (size, allowed symmetries)."""
    rename: dict[str, str] = {}
    for t in layout.tensors:
        for entry in spec.axes.get(t.name, ()):
            for g in entry_groups(entry):
                rename.setdefault(g, f"g{len(rename)}")
    assert set(rename) == set(spec.groups), f"groups on no tensor axis: {set(spec.groups) - set(rename)}"

    def rewrite(entry: str | None) -> str | None:
        if entry is None:
            return None
        return "|".join("*".join(rename[f] if isinstance(f, str) else str(f) for f in segment)
                        for segment in parse_entry(entry) or ())

    axes = {}
    for t in layout.tensors:
        entries = tuple(spec.axes.get(t.name, ()))
        axes[t.name] = tuple(rewrite(e) for e in entries + (None,) * (len(t.shape) - len(entries)))
    groups = {rename[g]: (group.size, sorted(group.allowed(activation))) for g, group in spec.groups.items()}
    return axes, groups


def allowed_kinds(spec: SymmetrySpec, activation: str | None) -> set[str]:
    """Every symmetry kind at least one group allows."""
    return set().union(*(g.allowed(activation) for g in spec.groups.values()))


def group_of(spec: SymmetrySpec, tensor: str, axis: int) -> str:
    """The one group named by a simple entry (``"P"`` or ``"P*k"``)."""
    groups = entry_groups(spec.axes[tensor][axis])
    assert len(groups) == 1, (tensor, axis, spec.axes[tensor])
    return groups[0]


def assert_moves(module: nn.Module, derived: Derived, activation: str | None, kind: str) -> None:
    """A random element of ``kind`` changes the state dict: the preservation check is not of the identity."""
    state = {k: v.detach().double() for k, v in module.state_dict().items() if k in derived.layout}
    g = torch.Generator().manual_seed(1)
    moved = derived.spec.random_transform(derived.layout, state, activation, g, frozenset({kind}))
    assert any(not torch.equal(state[k], moved[k]) for k in state), f"a random {kind} moved no tensor"


def assert_preserves(module: nn.Module, example: torch.Tensor, activation: str | None = None,
                     kinds: tuple[str, ...] = KINDS, leaves: tuple[type, ...] = ()) -> Derived:
    """Derive ``module``'s spec; each kind must be allowed somewhere, move weights and keep the function."""
    derived = derive(module, example, activation=activation, leaves=leaves)
    assert set(kinds) <= allowed_kinds(derived.spec, activation), describe(derived.spec, activation)
    for kind in kinds:
        assert_moves(module, derived, activation, kind)
        error = preservation_error(module, derived.layout, derived.spec, example, activation, symmetries=(kind,))
        assert error <= TOLERANCE, (kind, error)
    return derived


# --- 1. derived equals hand-written ------------------------------------------------------------------------------

#: A non-default shape for architectures with shape options (dropout: modules that change no tensor).
VARIANTS = {"mlp": {"hidden": [16, 8, 4], "dropout": 0.5}, "resnet": {"width": 4, "blocks": [2, 1, 1]},
            "siren": {"hidden": [16, 8, 4]}}


def test_every_registered_architecture_but_vit_has_a_reference():
    assert set(REFERENCES) == set(ARCHITECTURES.names()) - {"vit"}
    assert set(VARIANTS) <= set(REFERENCES)


def _reference_cases():
    for name in sorted(REFERENCES):
        variants = [("default", {})] + ([("variant", VARIANTS[name])] if name in VARIANTS else [])
        for variant, options in variants:
            for act in _activations(name):
                label = act or ARCHITECTURES.get(name).activation
                yield pytest.param(name, options, act, id=f"{name}-{variant}-{label}")


@pytest.mark.parametrize("name,options,activation", list(_reference_cases()))
def test_derived_spec_equals_hand_written(name, options, activation):
    if activation is not None:
        options = {**options, "activation": activation}
    arch = get_architecture(name, _shape(name), **options)
    reference = SymmetrySpec.build(arch.layout, *REFERENCES[name](arch.layout, arch.options))
    derived = arch.symmetry
    act = arch.activation
    ref_axes, ref_groups = canonical(reference, arch.layout, act)
    got_axes, got_groups = canonical(derived, arch.layout, act)
    assert got_axes == ref_axes
    assert got_groups == ref_groups
    assert derived == arch.derive().spec  # the memo is the trace


# --- 2. function preservation: torchvision -------------------------------------------------------------------------


def _vgg11_bn() -> nn.Module:
    """torchvision's VGG-11 with BatchNorm; its 4096-wide classifier narrowed to 64 (same structure: the 7x7
    average pool replicates the 1x1 map, flattened into the first Linear), to keep the float64 check fast."""
    model = tvm.vgg11_bn(weights=None, num_classes=10)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return model


def _vit() -> nn.Module:
    return tvm.VisionTransformer(image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                                 num_classes=10)


TORCHVISION = {
    "resnet18": (lambda: tvm.resnet18(weights=None, num_classes=10), {"permute", "rescale"}),
    "resnet34": (lambda: tvm.resnet34(weights=None, num_classes=10), {"permute", "rescale"}),
    "resnet50": (lambda: tvm.resnet50(weights=None, num_classes=10), {"permute", "rescale"}),
    "vgg11_bn": (_vgg11_bn, {"permute", "rescale"}),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(weights=None, num_classes=10), {"permute", "rescale", "signflip"}),
    "vit": (_vit, {"permute"}),
}


@functools.cache
def _torchvision(name: str) -> tuple[nn.Module, torch.Tensor, Derived]:
    torch.manual_seed(0)
    model = TORCHVISION[name][0]()
    example = torch.randn(2, 3, 32, 32)
    return model, example, derive(model, example)


@pytest.mark.parametrize("name,kind", [(n, k) for n in TORCHVISION for k in KINDS])
def test_torchvision_spec_preserves_function(name, kind):
    model, example, derived = _torchvision(name)
    expected = TORCHVISION[name][1]
    assert allowed_kinds(derived.spec, None) == expected, describe(derived.spec)
    if kind not in expected:
        return  # nothing to check: no group allows it (asserted above)
    assert_moves(model, derived, None, kind)
    error = preservation_error(model, derived.layout, derived.spec, example, symmetries=(kind,))
    assert error <= TOLERANCE


def test_torchvision_resnet50_bottleneck_streams():
    _, _, derived = _torchvision("resnet50")
    spec = derived.spec
    # one stem group, one residual stream per stage (its downsample starts it), two inner groups per bottleneck
    assert len(spec.groups) == 1 + 4 + 2 * (3 + 4 + 6 + 3)
    stem = group_of(spec, "conv1.weight", 0)
    assert group_of(spec, "layer1.0.conv1.weight", 1) == group_of(spec, "layer1.0.downsample.0.weight", 1) == stem
    stream = group_of(spec, "layer1.0.downsample.0.weight", 0)
    assert stream != stem and spec.groups[stream].size == 256
    for t, axis in [("layer1.0.conv3.weight", 0), ("layer1.0.bn3.weight", 0), ("layer1.0.downsample.1.bias", 0),
                    ("layer1.1.conv3.weight", 0), ("layer1.2.conv3.weight", 0), ("layer1.1.conv1.weight", 1),
                    ("layer1.2.conv1.weight", 1), ("layer2.0.conv1.weight", 1), ("layer2.0.downsample.0.weight", 1)]:
        assert group_of(spec, t, axis) == stream, t
    inner = {group_of(spec, f"layer1.{b}.conv{c}.weight", 0) for b in range(3) for c in (1, 2)}
    assert len(inner) == 6 and stream not in inner
    streams = {group_of(spec, f"layer{s}.0.downsample.0.weight", 0) for s in (1, 2, 3, 4)}
    assert [spec.groups[g].size for g in sorted(streams, key=lambda g: spec.groups[g].size)] == [256, 512, 1024, 2048]
    assert group_of(spec, "fc.weight", 1) == group_of(spec, "layer4.2.conv3.weight", 0)
    assert spec.axes["fc.weight"][0] is None
    assert all(g.nonlinearity == "relu" for g in spec.groups.values())
    assert not derived.notes


def test_torchvision_mobilenet_v2_depthwise_and_linear_bottlenecks():
    _, _, derived = _torchvision("mobilenet_v2")
    spec = derived.spec
    # depthwise convs carry their input's group on their output axis (the stem's in block 1, the expansion's after)
    assert spec.axes["features.1.conv.0.0.weight"][0] == spec.axes["features.0.0.weight"][0]
    assert spec.axes["features.2.conv.1.0.weight"][0] == spec.axes["features.2.conv.0.0.weight"][0]
    assert spec.axes["features.2.conv.1.0.weight"][1] is None  # a depthwise weight's in-axis has size 1
    assert spec.groups[group_of(spec, "features.2.conv.0.0.weight", 0)].allowed(None) == {"permute"}
    # linear bottlenecks (no activation after the projection): both rescale and sign flip
    bottleneck = group_of(spec, "features.2.conv.2.weight", 0)
    assert spec.groups[bottleneck].nonlinearity == "linear"
    assert spec.groups[bottleneck].allowed(None) == {"permute", "rescale", "signflip"}
    # features.3 adds its output to features.2's: one residual stream
    assert group_of(spec, "features.3.conv.2.weight", 0) == bottleneck
    assert group_of(spec, "features.3.conv.0.0.weight", 1) == bottleneck


def test_torchvision_vgg11_bn_flatten_repeat():
    _, _, derived = _torchvision("vgg11_bn")
    spec = derived.spec
    last = group_of(spec, "features.25.weight", 0)  # the last conv's BatchNorm channels, 512
    assert spec.axes["classifier.0.weight"][1] == f"{last}*49"
    assert spec.groups[last].size == 512
    assert len(spec.groups) == 8 + 2


def test_torchvision_vit_structure():
    model, _, derived = _torchvision("vit")
    spec = derived.spec
    stream = group_of(spec, "conv_proj.weight", 0)
    assert spec.groups[stream].size == 64
    assert spec.axes["class_token"][2] == stream and spec.axes["encoder.pos_embedding"][2] == stream
    for k in range(4):
        block = f"encoder.layers.encoder_layer_{k}"
        attn = f"{block}.self_attention"
        packed = spec.axes[f"{attn}.in_proj_weight"][0]
        m = re.fullmatch(r"(.+)\.heads\*\1\.qk\|\1\.heads\*\1\.qk\|\1\.heads\*\1\.v", packed)
        assert m, packed
        x = m.group(1)
        assert spec.axes[f"{attn}.in_proj_bias"][0] == packed
        assert spec.axes[f"{attn}.in_proj_weight"][1] == stream
        assert spec.axes[f"{attn}.out_proj.weight"] == (stream, f"{x}.heads*{x}.v")
        assert (spec.groups[f"{x}.heads"].size, spec.groups[f"{x}.qk"].size, spec.groups[f"{x}.v"].size) == (4, 16, 16)
        for ln in ("ln_1", "ln_2"):
            assert spec.axes[f"{block}.{ln}.weight"] == spec.axes[f"{block}.{ln}.bias"] == (stream,)
        assert spec.axes[f"{block}.mlp.0.weight"][1] == spec.axes[f"{block}.mlp.3.weight"][0] == stream
    assert spec.axes["encoder.ln.weight"] == (stream,)
    assert spec.axes["heads.head.weight"] == (None, stream)
    # 1 stream + per block heads, qk, v and the MLP's hidden units
    assert len(spec.groups) == 1 + 4 * 4
    assert all(g.allowed(None) == {"permute"} for g in spec.groups.values())
    # not trivially the identity: every group moves its tensors (random values: torch's init leaves constants)
    g = torch.Generator().manual_seed(0)
    state = {t.name: torch.randn(t.shape, generator=g) for t in derived.layout.tensors}
    perms = {name: torch.randperm(group.size, generator=g) for name, group in spec.groups.items()}
    moved = spec.transform(derived.layout, state, perms)
    assert {k for k in state if not torch.equal(state[k], moved[k])} == set(spec.axes)


# --- 2. function preservation: every registered architecture x activation ------------------------------------------


@functools.cache
def _registered(name: str, activation: str | None):
    options: dict[str, Any] = {"activation": activation} if activation else {}
    arch = get_architecture(name, _shape(name), **options)
    torch.manual_seed(0)
    module = arch.module()
    return arch, module, arch.derive()


def _registered_cases():
    for name in ARCHITECTURES.names():
        for act in _activations(name):
            for kind in KINDS:
                label = act or ARCHITECTURES.get(name).activation
                yield pytest.param(name, act, kind, id=f"{name}-{label}-{kind}")


@pytest.mark.parametrize("name,activation,kind", list(_registered_cases()))
def test_registered_spec_preserves_function(name, activation, kind):
    arch, module, derived = _registered(name, activation)
    act = arch.activation
    expected = {"permute"}
    if name != "vit":  # LayerNorm, softmax attention and GELU: a ViT permutes only
        expected |= {"rescale"} if act in POSITIVE_HOMOGENEOUS else set()
        expected |= {"signflip"} if act in ODD else set()
    assert allowed_kinds(derived.spec, act) == expected, describe(derived.spec, act)
    assert not derived.notes  # every op of a registered architecture is understood
    if kind not in expected:
        return
    assert_moves(module, derived, act, kind)
    example = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(2))
    error = preservation_error(module, derived.layout, derived.spec, example, act, symmetries=(kind,))
    assert error <= TOLERANCE


# --- 3. op kinds: small hand-written modules ---------------------------------------------------------------------


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(3, 8, 3), nn.Conv1d(8, 6, 3)
        self.fc = nn.Linear(6 * 12, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


def test_conv1d_with_flatten():
    derived = assert_preserves(Conv1dNet(), torch.randn(2, 3, 16), kinds=("permute", "rescale"))
    spec = derived.spec
    assert spec.axes["conv2.weight"] == (group_of(spec, "conv2.weight", 0), group_of(spec, "conv1.weight", 0), None)
    assert spec.axes["fc.weight"] == (None, f"{group_of(spec, 'conv2.weight', 0)}*12")
    assert len(spec.groups) == 2


class Depthwise(nn.Module):
    def __init__(self, mult: int = 2) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(4, 4 * mult, 3, padding=1, groups=4)
        self.out = nn.Conv2d(4 * mult, 5, 1)
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.pw(x))))
        x = F.relu(self.out(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_depthwise_conv_with_channel_multiplier():
    derived = assert_preserves(Depthwise(), torch.randn(2, 3, 8, 8), kinds=("permute",))
    spec = derived.spec
    pw = group_of(spec, "pw.weight", 0)
    assert spec.axes["dw.weight"][:2] == (f"{pw}*2", None)
    assert spec.axes["dw.bias"] == (f"{pw}*2",)
    assert spec.axes["out.weight"][1] == f"{pw}*2"
    assert spec.groups[pw].allowed("relu") == {"permute"}  # a space crossing a depthwise conv permutes only


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.b = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.b(F.relu(self.g(F.relu(self.a(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def test_grouped_conv_pins_both_sides():
    derived = assert_preserves(Grouped(), torch.randn(2, 3, 8, 8), kinds=("permute", "rescale"))
    spec = derived.spec
    assert spec.axes.get("a.weight", (None,))[0] is None  # the grouped conv's input: pinned
    assert spec.axes.get("g.weight", (None, None))[:2] == (None, None)  # its output: pinned
    assert spec.axes["b.weight"][1] is None
    assert set(spec.axes) == {"b.weight", "b.bias", "fc.weight"}
    assert any("grouped convolution g" in n for n in derived.notes), derived.notes


class Normed(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(3, 8, 3), norm, nn.Conv2d(8, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.norm(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("groups", [1, 8], ids=["GroupNorm1", "GroupNorm8"])
def test_groupnorm_one_or_per_channel_permutes(groups):
    derived = assert_preserves(Normed(nn.GroupNorm(groups, 8)), torch.randn(2, 3, 10, 10), kinds=("permute",))
    spec = derived.spec
    g = group_of(spec, "conv1.weight", 0)
    assert spec.axes["norm.weight"] == spec.axes["norm.bias"] == (g,)
    assert spec.groups[g].allowed("relu") == {"permute"}
    assert spec.groups[group_of(spec, "conv2.weight", 0)].allowed("relu") == {"permute", "rescale"}


def test_groupnorm_with_groups_of_channels_is_pinned():
    derived = assert_preserves(Normed(nn.GroupNorm(2, 8)), torch.randn(2, 3, 10, 10), kinds=("permute", "rescale"))
    spec = derived.spec
    assert "norm.weight" not in spec.axes and spec.axes.get("conv1.weight", (None,))[0] is None
    assert spec.axes["conv2.weight"][1] is None
    assert any("GroupNorm norm" in n for n in derived.notes), derived.notes


class LayerNormMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln, self.fc2, self.fc3 = nn.Linear(5, 8), nn.LayerNorm(8), nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.ln(self.fc1(x))))))


def test_layernorm_permutes_only():
    derived = assert_preserves(LayerNormMLP(), torch.randn(4, 5), kinds=("permute", "rescale"))
    spec = derived.spec
    g = group_of(spec, "fc1.weight", 0)
    assert spec.axes["ln.weight"] == spec.axes["ln.bias"] == (g,)
    assert spec.axes["fc2.weight"][1] == g
    assert spec.groups[g].allowed("relu") == {"permute"}
    assert spec.groups[group_of(spec, "fc2.weight", 0)].allowed("relu") == {"permute", "rescale"}


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 5, 1)
        self.c = nn.Conv2d(9, 6, 3)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        return self.fc(F.relu(self.c(y)).mean(dim=(2, 3)))


def test_concatenated_branches():
    derived = assert_preserves(Concat(), torch.randn(2, 3, 8, 8), kinds=("permute", "rescale"))
    spec = derived.spec
    a, b = group_of(spec, "a.weight", 0), group_of(spec, "b.weight", 0)
    assert a != b and spec.groups[a].size == 4 and spec.groups[b].size == 5
    assert spec.axes["c.weight"][1] == f"{a}|{b}"
    assert len(spec.groups) == 3


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention between an embedding and a readout, as papers write it."""

    def __init__(self, e: int = 12, h: int = 3) -> None:
        super().__init__()
        self.h, self.d = h, e // h
        self.embed = nn.Linear(5, e)
        self.q, self.k, self.v = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)
        self.out = nn.Linear(e, e)
        self.head = nn.Linear(e, 2)

    def forward(self, x):
        x = self.embed(x)
        b, n, e = x.shape
        q = self.q(x).reshape(b, n, self.h, self.d).transpose(1, 2)
        k = self.k(x).reshape(b, n, self.h, self.d).transpose(1, 2)
        v = self.v(x).reshape(b, n, self.h, self.d).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, e)
        return self.head(x + self.out(y))


def test_hand_written_attention_has_heads():
    derived = assert_preserves(SelfAttention(), torch.randn(2, 7, 5))
    spec = derived.spec
    q, k, v = (parse_entry(spec.axes[f"{n}.weight"][0]) for n in "qkv")
    assert len(q) == 1 and len(q[0]) == 2, q  # one segment, a product: heads * within-head
    heads, qk = q[0]
    assert k == q and spec.groups[heads].size == 3 and spec.groups[qk].size == 4
    assert v[0][0] == heads and v[0][1] != qk and spec.groups[v[0][1]].size == 4
    assert spec.axes["out.weight"][1] == spec.axes["v.weight"][0]
    stream = group_of(spec, "embed.weight", 0)
    assert spec.axes["q.weight"][1] == spec.axes["out.weight"][0] == spec.axes["head.weight"][1] == stream
    # heads and q.k dimensions sit under the softmax; the stream and the value dimensions are linear
    assert spec.groups[heads].allowed(None) == spec.groups[qk].allowed(None) == {"permute"}
    assert spec.groups[stream].allowed(None) == spec.groups[v[0][1]].allowed(None) == set(KINDS)
    assert len(spec.groups) == 4


class ActMLP(nn.Module):
    def __init__(self, act: nn.Module, dropout: bool = False) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 8), act, nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5) if dropout else nn.Identity()

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


@pytest.mark.parametrize("act,activation,allowed", [
    (nn.GELU(), None, {"permute"}),
    (nn.GELU(), "gelu", {"permute"}),
    (nn.ReLU(), None, {"permute", "rescale"}),
    (nn.Tanh(), None, {"permute", "signflip"}),
    (nn.Tanh(), "tanh", {"permute", "signflip"}),
    (nn.Sigmoid(), None, {"permute"}),
], ids=["gelu", "gelu-option", "relu", "tanh", "tanh-option", "sigmoid"])
def test_activation_decides_the_group(act, activation, allowed):
    derived = assert_preserves(ActMLP(act), torch.randn(4, 6), activation, kinds=tuple(sorted(allowed)))
    group = derived.spec.groups[group_of(derived.spec, "fc1.weight", 0)]
    assert group.allowed(activation) == allowed
    if activation is not None:
        assert group.nonlinearity == "act"  # one spec for every activation of a zoo


def test_dropout_passes_through():
    derived = assert_preserves(ActMLP(nn.ReLU(), dropout=True), torch.randn(4, 6), kinds=("permute", "rescale"))
    assert derived.spec.axes["fc2.weight"][1] == group_of(derived.spec, "fc1.weight", 0)
    assert not derived.notes


class PoolTanh(nn.Module):
    def __init__(self, pool: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        x = torch.tanh(self.pool(self.conv1(x)))
        return self.fc(torch.tanh(self.conv2(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("activation", [None, "tanh"], ids=["fixed", "option"])
def test_max_pool_then_tanh_forbids_sign_flip(activation):
    derived = assert_preserves(PoolTanh(pool=True), torch.randn(2, 3, 8, 8), activation, kinds=("permute",))
    spec = derived.spec
    pooled = spec.groups[group_of(spec, "conv1.weight", 0)]
    assert pooled.allowed(activation) == {"permute"}
    assert pooled.nonlinearity == ("pool_act" if activation else "fixed")
    assert spec.groups[group_of(spec, "conv2.weight", 0)].allowed(activation) == {"permute", "signflip"}
    # without the pool the same group flips signs
    plain = assert_preserves(PoolTanh(pool=False), torch.randn(2, 3, 8, 8), activation, kinds=("signflip",))
    assert plain.spec.groups[group_of(plain.spec, "conv1.weight", 0)].allowed(activation) == {"permute", "signflip"}


class MyLeaf(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.scale


class WithLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.block = nn.Sequential(MyLeaf(8))
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.block(torch.relu(self.fc1(x))))


def test_unknown_leaf_with_tensors_is_refused():
    with pytest.raises(ZooError, match=r"module 'block\.0' \(MyLeaf\) holds tensors and is not understood"):
        derive(WithLeaf(), torch.randn(3, 4), leaves=(MyLeaf,))
    # traced through (not a leaf), it is understood: a free per-unit scale on fc1's units
    derived = assert_preserves(WithLeaf(), torch.randn(3, 4), kinds=("permute",))
    assert derived.spec.axes["block.0.scale"] == (group_of(derived.spec, "fc1.weight", 0),)


class Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):
        x = torch.cumsum(torch.relu(self.fc1(x)), dim=1)
        return self.fc3(torch.relu(self.fc2(x)))


def test_unknown_parameterless_op_pins_its_input():
    derived = assert_preserves(Cumsum(), torch.randn(3, 4), kinds=("permute", "rescale"))
    spec = derived.spec
    assert spec.axes.get("fc1.weight", (None,))[0] is None and spec.axes["fc2.weight"][1] is None
    assert list(spec.groups) == [group_of(spec, "fc2.weight", 0)]
    assert any("cumsum" in n for n in derived.notes), derived.notes


# --- 4. serialization and checks of composite entries ----------------------------------------------------------------


def test_composite_spec_round_trips():
    spec = _registered("vit", None)[2].spec
    assert any("|" in (e or "") for entries in spec.axes.values() for e in entries)
    assert SymmetrySpec.from_dict(spec.to_dict()) == spec
    assert SymmetrySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    _, _, derived = _torchvision("vit")
    assert SymmetrySpec.from_dict(json.loads(json.dumps(derived.spec.to_dict()))) == derived.spec


def test_build_refuses_a_composite_entry_of_the_wrong_size():
    layout = Layout.from_module(nn.MultiheadAttention(8, 2))
    nonlinearity = {"h": "fixed", "qk": "fixed", "v": "fixed"}
    axes = {"in_proj_weight": ("h*qk|h*qk|h*v", None)}
    SymmetrySpec.build(layout, axes, nonlinearity, sizes={"h": 2, "qk": 4, "v": 4})
    with pytest.raises(ZooError, match=r"'in_proj_weight' axis 0 has size 24, but 'h\*qk\|h\*qk\|h\*v' describes 22"):
        SymmetrySpec.build(layout, axes, nonlinearity, sizes={"h": 2, "qk": 4, "v": 3})
    with pytest.raises(ZooError, match=r"the size of group 'v' in 'h\*qk\|h\*qk\|h\*v' is not known"):
        SymmetrySpec.build(layout, axes, nonlinearity, sizes={"h": 2, "qk": 4})


# --- cases that once broke the derivation (regression tests) ------------------------------------------------


class TwoHeads(nn.Module):
    """Returns (logits, hidden): both are outputs, so neither's units may be permuted."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h), h


def test_tuple_outputs_are_pinned():
    derived = derive(TwoHeads(), torch.randn(3, 4))
    assert derived.spec.axes.get("b.weight", (None,))[0] is None  # the logits are never permuted
    assert derived.spec.axes.get("a.weight", (None,))[0] is None  # nor is a returned hidden value


class SortedUnits(nn.Module):
    def __init__(self, values: bool) -> None:
        super().__init__()
        self.values = values
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):
        s = torch.sort(torch.relu(self.fc1(x)), dim=1)
        return self.fc3(torch.relu(self.fc2(s.values if self.values else s[0])))


def test_sort_values_is_an_unknown_op():
    derived = assert_preserves(SortedUnits(values=True), torch.randn(3, 4), kinds=("permute", "rescale"))
    assert derived.spec.axes.get("fc1.weight", (None,))[0] is None
    assert any("sort" in n for n in derived.notes), derived.notes


def test_indexing_a_tuple_result_is_an_unknown_op():
    derived = derive(SortedUnits(values=False), torch.randn(3, 4))
    assert derived.spec.axes.get("fc1.weight", (None,))[0] is None
    assert any("sort" in n for n in derived.notes), derived.notes


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).data)


def test_tensor_attributes_keep_or_pin_labels():
    derived = derive(Detached(), torch.randn(3, 4))
    spec = derived.spec
    # either the group reaches b's in-axis, or it is pinned: never on a.weight alone
    assert spec.axes.get("a.weight", (None,))[0] is None or spec.axes.get("b.weight", (None, None))[1] is not None
    assert preservation_error(Detached(), derived.layout, spec, torch.randn(3, 4)) <= TOLERANCE


class NormalizedAndRaw(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b, self.c = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.relu(self.bn(h))) + self.c(h)


def test_batchnorm_group_also_read_raw_allows_no_rescale():
    module, example = NormalizedAndRaw(), torch.randn(5, 4)
    derived = derive(module, example)
    error = preservation_error(module, derived.layout, derived.spec, example, symmetries=("rescale",))
    assert error <= TOLERANCE  # c reads the raw value, so only permutations are exact


def _pooled(side: int) -> tuple[nn.Module, torch.Tensor]:
    return (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * (side // 2) ** 2, 2)), torch.randn(2, 3, side, side))


def _raise_timeout(signum, frame):
    raise TimeoutError("derive did not return")


def test_pooling_to_an_odd_side_terminates():
    side = 6  # 6 -> 3 and 10 -> 5 once looped forever in the reshape alignment
    module, example = _pooled(side)
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(3)
    try:
        derived = derive(module, example)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert derived.spec.axes["4.weight"][1] == f"{group_of(derived.spec, '0.weight', 0)}*{(side // 2) ** 2}"


@pytest.mark.parametrize("side", [8, 14])
def test_pooling_to_an_even_split(side):
    module, example = _pooled(side)
    derived = assert_preserves(module, example, kinds=("permute", "rescale"))
    assert derived.spec.axes["4.weight"][1] == f"{group_of(derived.spec, '0.weight', 0)}*{(side // 2) ** 2}"
