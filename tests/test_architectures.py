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
          "resnet": (3, 16, 16), "resnet18": (3, 32, 32), "siren": (1, 8, 8), "vit": (1, 8, 8)}


def test_every_registered_architecture_is_covered():
    assert sorted(SHAPES) == ARCHITECTURES.names()


@pytest.mark.parametrize("name,shape,classes,count", [
    ("cnn-s", (1, 28, 28), 10, 2464),
    ("cnn-l", (3, 32, 32), 10, 10853),
    ("smallcnn", (1, 28, 28), 10, 4970),
    ("resnet18", (3, 32, 32), 10, 11_173_962),
    ("mlp", (1, 8, 8), 10, 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10),
    ("siren", (1, 28, 28), 10, 1185),  # DWSNets' and NFN's MNIST INRs: 2 -> 32 -> 32 -> 1
    ("siren", (3, 32, 32), 10, 2 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3),
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
    transformed = spec.random_transform(arch.layout, state, activation or arch.activation, g)
    changed = [k for k in spec.axes if not torch.equal(state[k], transformed[k])]
    assert changed, "the transform must actually move weights"
    other = arch.module()
    other.load_state_dict(transformed)
    # the stored (float32) weights, evaluated in float64: what is tested is the symmetry, not the order of a sum
    # (a permutation reorders one; siren's w0 = 30 amplifies float32 rounding 30-fold)
    x = torch.randn(3, *arch.input_shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref, out = module.double()(x), other.double().eval()(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_allowed_symmetries_follow_activation_and_pooling():
    spec = get_architecture("cnn-s", (1, 28, 28), activation="tanh").symmetry
    assert spec.groups["conv1"].allowed("tanh") == {"permute"}  # max-pool breaks the sign flip
    assert spec.groups["fc1"].allowed("tanh") == {"permute", "signflip"}
    assert spec.groups["conv1"].allowed("relu") == {"permute", "rescale"}
    assert spec.groups["fc1"].allowed("gelu") == {"permute"}


def test_small_resnet_matches_torchvision_naming():
    small = get_architecture("resnet", (3, 32, 32), width=64, blocks=[2, 2, 2, 2]).layout
    big = get_architecture("resnet18", (3, 32, 32)).layout
    assert small == big  # same names, shapes, offsets and roles: one family, one symmetry table


def test_resnet_streams_are_tied():
    spec = get_architecture("resnet18", (3, 32, 32)).symmetry
    stream = {name for name, axis, _ in spec.perm_to_axes()["conv1"]}
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
                                               r"resnet, resnet18, siren, smallcnn, vit \(did you mean 'cnn-l'\?\)"):
        get_architecture("cnn-xl", (1, 28, 28))


def test_bad_option_is_named():
    with pytest.raises(ZooError, match=r"field 'architecture.activation': got 'tahn'.*did you mean 'tanh'"):
        get_architecture("cnn-s", (1, 28, 28), activation="tahn")


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        ARCHITECTURES.register("cnn-s", ARCHITECTURES.get("cnn-s"))


# --- siren: the neural field of the INR zoos ---------------------------------------------------------------------


def test_architectures_declare_what_their_module_reads():
    assert get_architecture("cnn-s", (1, 28, 28)).input_shape == (1, 28, 28)
    siren = get_architecture("siren", (3, 4, 5))
    assert siren.input_shape == (20, 2) and siren.definition.kind == "inr" and siren.activation == "sin"
    assert siren.module()(torch.zeros(7, *siren.input_shape)).shape == (7, 20, 3)
    assert {ARCHITECTURES.get(n).kind for n in ARCHITECTURES.names() if n != "siren"} == {"classifier"}


def test_architecture_options_do_not_shadow_training_fields():
    """Options and training fields both become metadata columns by name: one name may not be both."""
    from zoo.manifest import SECTIONS

    for name in ARCHITECTURES.names():
        assert not set(ARCHITECTURES.get(name).options) & set(SECTIONS["training"]), name


def test_sine_allows_sign_flips_not_rescaling():
    arch = get_architecture("siren", (1, 8, 8), hidden=[16, 8])
    spec = arch.symmetry
    assert set(spec.groups) == {"net.0", "net.1"} and spec.groups["net.1"].size == 8
    assert all(g.allowed("sin") == {"permute", "signflip"} for g in spec.groups.values())
    module = _randomized(arch)
    state = module.state_dict()
    x = torch.rand(5, 2) * 2 - 1
    with torch.no_grad():
        ref = module(x)
        for scale in (-1.0, 2.0):  # a sign flip of every unit of both layers is exact; doubling is no symmetry
            scales = {g: torch.full((v.size,), scale) for g, v in spec.groups.items()}
            other = arch.module().eval()
            other.load_state_dict(spec.transform(arch.layout, state, scales=scales))
            if scale < 0:
                torch.testing.assert_close(other(x), ref, rtol=1e-6, atol=1e-6)
            else:
                assert (other(x) - ref).abs().max() > 0.1


def _siren(seed: int = 0, **options):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_architecture("siren", (3, 8, 8), **options).module()


def _bound_hit(t: torch.Tensor, bound: float) -> None:
    """Values of a uniform draw on [-bound, bound]: within it, reaching close to it, and spread as a uniform."""
    assert t.abs().max() <= bound
    assert t.abs().max() >= 0.9 * bound
    assert abs(t.std().item() - bound / 3**0.5) < 0.1 * bound


def test_siren_init_conventions():
    width = 256
    nfn = _siren(hidden=[width, width], w0=30.0, first_w0=20.0)
    _bound_hit(nfn.net[0].weight, 1 / 2)  # Sitzmann's first layer: U(+-1/in), in = 2 coordinates
    _bound_hit(nfn.net[1].weight, (6 / width) ** 0.5 / 30)
    _bound_hit(nfn.net[2].weight, (6 / width) ** 0.5 / 30)  # NFN's outermost linear: the hidden layers' init
    _bound_hit(nfn.net[0].bias, 1 / 2**0.5)  # biases: nn.Linear's U(+-1/sqrt(in))
    _bound_hit(nfn.net[1].bias, 1 / width**0.5)
    assert nfn.net[2].bias.abs().max() <= 1 / width**0.5

    dws = _siren(hidden=[width, width], w0=30.0, first_w0=20.0, init_scheme="dwsnets")
    _bound_hit(dws.net[0].weight, (6 / 2) ** 0.5 / 20)  # no special first layer: U(+-sqrt(6/in)/its w0)
    _bound_hit(dws.net[1].weight, (6 / width) ** 0.5 / 30)
    assert not dws.net[0].bias.any() and not dws.net[1].bias.any()  # sine layers' biases are zero
    _bound_hit(dws.net[2].weight, 1 / width**0.5)  # the output layer keeps nn.Linear's init
    assert dws.net[2].bias.any() and dws.net[2].bias.abs().max() <= 1 / width**0.5

    # the model's seed decides its init (torch's global generator, as every architecture)
    assert torch.equal(_siren(3).net[1].weight, _siren(3).net[1].weight)
    assert not torch.equal(_siren(3).net[1].weight, _siren(4).net[1].weight)


def test_siren_coordinate_orders():
    from zoo.architectures.modules import coordinate_grid

    ij, xy = coordinate_grid(3, 4, "ij"), coordinate_grid(3, 4, "xy")
    assert ij.shape == (12, 2) and torch.equal(xy, ij.flip(-1))  # "xy" swaps the two input columns
    assert ij[1 * 4 + 3].tolist() == [0.0, 1.0]  # row-major pixels; pixel (1, 3): row 1 of 3, column 3 of 4
    assert torch.equal(ij[:4, 1], torch.linspace(-1, 1, 4)) and torch.equal(ij[::4, 0], torch.linspace(-1, 1, 3))
    # one field read in both orders: the same image when the first layer's input columns are swapped
    a, b = _siren(1, coords="ij"), _siren(1, coords="xy")
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.net[0].weight.copy_(a.net[0].weight.flip(-1))
        torch.testing.assert_close(b.image(5, 6), a.image(5, 6), rtol=0, atol=1e-6)
    with pytest.raises(ZooError, match=r"coords: got 'yx'; allowed: ij, xy"):
        coordinate_grid(2, 2, "yx")


def test_siren_renders_an_image_with_its_offset():
    from zoo.architectures.modules import coordinate_grid, from_unit, to_unit

    field = _siren(2, offset=0.5).eval()
    with torch.no_grad():
        image = field.image(5, 7)
        assert image.shape == (3, 5, 7)
        values = field(coordinate_grid(5, 7))  # (35, 3): pixel (r, c) is row r * 7 + c
        assert torch.equal(image[:, 4, 2], values[4 * 7 + 2])
        field.net[-1].weight.zero_()
        field.net[-1].bias.zero_()
        assert torch.equal(field.image(2, 3), torch.full((3, 2, 3), 0.5))  # DWSNets' +0.5: mid-gray at zero
    pixels = torch.rand(3, 4, 4)
    for mode in ("unit", "signed"):
        torch.testing.assert_close(to_unit(from_unit(pixels, mode), mode), pixels)
    assert torch.equal(from_unit(torch.tensor([0.0, 0.5, 1.0]), "signed"), torch.tensor([-1.0, 0.0, 1.0]))
    with pytest.raises(ZooError, match=r"pixels: got 'rgb'; allowed: signed, unit"):
        to_unit(pixels, "rgb")
    with pytest.raises(ZooError, match=r"field 'architecture.init_scheme': got 'nfn'; allowed: dwsnets, sitzmann"):
        get_architecture("siren", (1, 8, 8), init_scheme="nfn")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32)])
def test_vit_takes_the_small_image_sizes_of_model_zoos(shape):
    arch = get_architecture("vit", shape, 10, layers=2, width=16, mlp=32, heads=2)
    module = arch.module().eval()
    with torch.no_grad():
        assert module(torch.randn(2, *shape)).shape == (2, 10)
    assert module.patch_size == shape[1] // 4  # 4x4 patches by default
    groups = arch.symmetry.groups
    assert sum(g.endswith(".heads") for g in groups) == 2 and groups["conv_proj"].size == 16
    with pytest.raises(ZooError, match=r"vit: patch 3 does not divide the image side"):
        get_architecture("vit", shape, 10, patch=3).module()
