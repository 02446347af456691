"""Every registered architecture: parameter counts, exact flatten/unflatten, and a symmetry spec that
preserves the network's function (tested, so a typo in a spec cannot go unnoticed)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.architectures import ACTIVATIONS, ARCHITECTURES, get_architecture
from zoo.errors import UnknownNameError, ZooError
from zoo.layout import Layout
from zoo.symmetry import SymmetrySpec

SHAPES = {"cnn-s": (1, 28, 28), "cnn-l": (3, 32, 32), "smallcnn": (1, 28, 28), "mlp": (1, 8, 8),
          "resnet": (3, 16, 16), "resnet18": (3, 32, 32)}


def test_every_registered_architecture_is_covered():
    assert sorted(SHAPES) == ARCHITECTURES.names()


@pytest.mark.parametrize("name,shape,classes,count", [
    ("cnn-s", (1, 28, 28), 10, 2464),
    ("cnn-l", (3, 32, 32), 10, 10853),
    ("smallcnn", (1, 28, 28), 10, 4970),
    ("resnet18", (3, 32, 32), 10, 11_173_962),
    ("mlp", (1, 8, 8), 10, 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10),
])
def test_parameter_counts(name, shape, classes, count):
    arch = get_architecture(name, shape, classes)
    assert arch.layout.num_params == count
    assert arch.layout.num_params == sum(p.numel() for p in arch.module().parameters())


def test_resnet_layout_includes_running_statistics():
    layout = get_architecture("resnet18", (3, 32, 32)).layout
    roles = {t.role for t in layout.tensors}
    assert roles == {"weight", "bias", "bn_weight", "bn_bias", "running_mean", "running_var"}
    assert layout.size - layout.num_params == 2 * 4800  # mean and var of 4,800 BatchNorm channels
    assert "bn1.num_batches_tracked" not in layout


def _randomized(arch):
    """A module whose every stored tensor (BN statistics included) is non-trivial."""
    module = arch.module()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in arch.layout.tensors:
            value = module.state_dict()[t.name]
            if t.role == "running_var":
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            else:
                value.copy_(torch.randn(value.shape, generator=g) * 0.3)
    return module.eval()


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_flatten_unflatten_load_is_exact(name):
    arch = get_architecture(name, SHAPES[name])
    module = _randomized(arch)
    row = arch.layout.flatten(module.state_dict())
    assert row.shape == (arch.layout.size,)
    fresh = arch.layout.load_into(arch.module(), row.clone())
    for key, value in module.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    # batched: two rows at once
    batch = torch.stack([row, row * 2])
    assert torch.equal(arch.layout.flatten(arch.layout.unflatten(batch)), batch)


def _cases():
    for name in ARCHITECTURES.names():
        options = ARCHITECTURES.get(name).options
        for act in (sorted(ACTIVATIONS) if "activation" in options else [None]):
            yield name, act


@pytest.mark.parametrize("name,activation", list(_cases()))
def test_random_symmetry_transform_preserves_function(name, activation):
    options = {"activation": activation} if activation else {}
    arch = get_architecture(name, SHAPES[name], **options)
    module = _randomized(arch)
    spec = arch.symmetry
    g = torch.Generator().manual_seed(1)
    state = module.state_dict()
    transformed = spec.random_transform(arch.layout, state, activation or "relu", g)
    changed = [k for k in spec.axes if not torch.equal(state[k], transformed[k])]
    assert changed, "the transform must actually move weights"
    other = arch.module()
    other.load_state_dict(transformed)
    x = torch.randn(3, *SHAPES[name], generator=g)
    with torch.no_grad():
        ref, out = module(x), other.eval()(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_allowed_symmetries_follow_activation_and_pooling():
    spec = get_architecture("cnn-s", (1, 28, 28), activation="tanh").symmetry
    assert spec.groups["C1"].allowed("tanh") == {"permute"}  # max-pool breaks the sign flip
    assert spec.groups["H1"].allowed("tanh") == {"permute", "signflip"}
    assert spec.groups["C1"].allowed("relu") == {"permute", "rescale"}
    assert spec.groups["H1"].allowed("gelu") == {"permute"}


def test_small_resnet_matches_torchvision_naming():
    small = get_architecture("resnet", (3, 32, 32), width=64, blocks=[2, 2, 2, 2]).layout
    big = get_architecture("resnet18", (3, 32, 32)).layout
    assert small == big  # same names, shapes, offsets and roles: one family, one symmetry table


def test_resnet_streams_are_tied():
    spec = get_architecture("resnet18", (3, 32, 32)).symmetry
    stream = {name for name, axis, _ in spec.perm_to_axes()["S0"]}
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.bn2.weight", "layer1.1.conv1.weight",
            "layer2.0.downsample.0.weight", "layer2.0.conv1.weight"} <= stream
    assert len(spec.groups) == 4 + 8  # one stream per stage, one inner permutation per block


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_layout_and_spec_serialize(name):
    arch = get_architecture(name, SHAPES[name])
    assert Layout.from_dict(arch.layout.to_dict()) == arch.layout
    assert SymmetrySpec.from_dict(arch.symmetry.to_dict()) == arch.symmetry


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_permutation_then_inverse_restores_state_dict(seed):
    arch = get_architecture("cnn-s", (1, 28, 28))
    state = _randomized(arch).state_dict()
    g = torch.Generator().manual_seed(seed)
    perms = {k: torch.randperm(v.size, generator=g) for k, v in arch.symmetry.groups.items()}
    inverse = {k: torch.argsort(p) for k, p in perms.items()}
    there = arch.symmetry.transform(arch.layout, state, perms)
    back = arch.symmetry.transform(arch.layout, there, inverse)
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(UnknownNameError, match=r"unknown architecture: got 'cnn-xl'; allowed: cnn-l, cnn-s, mlp, "
                                               r"resnet, resnet18, smallcnn \(did you mean 'cnn-l'\?\)"):
        get_architecture("cnn-xl", (1, 28, 28))


def test_bad_option_is_named():
    with pytest.raises(ZooError, match=r"field 'architecture.activation': got 'tahn'.*did you mean 'tanh'"):
        get_architecture("cnn-s", (1, 28, 28), activation="tahn")


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        ARCHITECTURES.register("cnn-s", ARCHITECTURES.get("cnn-s"))
