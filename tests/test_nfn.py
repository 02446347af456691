"""The ``nfn`` view in the shapes NFN's layers accept: 4-D dense and 6-D conv weights only (a dense layer reading a
flattened C x H x W map is a 1 x k kernel), exact inverses, and permutation invariance through NFN-style layers."""

from __future__ import annotations

import pytest
import torch
from test_architectures import SHAPES

from loaders import make_view
from loaders.layers import Layer, network_layers
from loaders.nfn_views import LayerTensors, weights_and_biases
from loaders.symmetry import BatchSymmetry
from zoo.architectures import ARCHITECTURES, get_architecture
from zoo.errors import ZooError

SMALL = [n for n in ARCHITECTURES.names() if n not in ("resnet18", "vit")]  # the ViT has no nfn view (test_views)
FLATTENING = ("cnn-s", "cnn-l")  # Model Zoos CNNs: a dense layer reads the flattened last feature map


def _arch(name: str):
    return get_architecture(name, SHAPES[name])


def _rows(size: int, b: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["cnn-s", "cnn-l", "smallcnn"])
def test_nfn_round_trip_is_bit_exact(name):
    arch = _arch(name)
    rows = _rows(arch.layout.size)
    rows[0, :3] = torch.tensor([-0.0, 1e-42, float("nan")])
    view = make_view("nfn", arch.layout, spec=arch.symmetry)
    back = view.decode(view.encode(rows))
    assert torch.equal(back.view(torch.int32), rows.view(torch.int32))
    sd, sd_back = arch.layout.unflatten(rows), arch.layout.unflatten(back)
    assert all(torch.equal(sd[k].view(torch.int32), sd_back[k].view(torch.int32)) for k in sd)


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES.names() if n != "vit"])
def test_every_nfn_weight_is_4d_or_6d(name):
    arch = _arch(name)
    lt = LayerTensors(arch.layout, arch.symmetry, "nfn")  # shapes of one sample, without encoding (ResNet-18 too)
    for lay in lt.layers:
        shape = lt.shapes[f"weight.{lay.index}"]
        assert len(shape) in (3, 5), (name, lay.weight.name, shape)  # + batch axis: (B, 1, out, in[, kh, kw])
        assert shape[:3] == (1, lay.out_units, lay.in_units)
        assert lt.shapes[f"bias.{lay.index}"] == (1, lay.out_units)
    if name == "resnet18":
        return
    batch = make_view("nfn", arch.layout, spec=arch.symmetry).encode(_rows(arch.layout.size, b=2))
    weights, biases = weights_and_biases(batch)
    assert all(w.dim() in (4, 6) and w.shape[1] == 1 for w in weights)
    assert all(b.dim() == 3 and b.shape[1] == 1 for b in biases)


@pytest.mark.parametrize("name", FLATTENING)
def test_flattened_map_dense_layer_is_a_1xk_kernel(name):
    arch = _arch(name)
    layers = network_layers(arch.layout, arch.symmetry)
    flat = [lay for lay in layers if lay.kind == "flatten"]
    assert len(flat) == 1
    lay = flat[0]
    prev = layers[lay.index - 1]
    k = lay.weight.shape[1] // prev.out_units  # H*W positions per channel of the map the dense layer reads
    rows = _rows(arch.layout.size, b=2)
    nfn = make_view("nfn", arch.layout, spec=arch.symmetry).encode(rows)
    w = nfn[f"weight.{lay.index}"]
    assert w.shape == (2, 1, lay.out_units, prev.out_units, 1, k)
    dense = arch.layout.unflatten(rows)[lay.weight.name]  # (B, out, C*k), channel-major as torch flattens
    assert torch.equal(w[:, 0, :, :, 0, :], dense.view(2, lay.out_units, prev.out_units, k))
    # dws keeps its own convention: (B, C, out, k)
    dws = make_view("dws", arch.layout, spec=arch.symmetry).encode(rows)
    assert dws[f"weight.{lay.index}"].shape == (2, prev.out_units, lay.out_units, k)
    # the old 5-D form is refused on decode, naming the expected shape
    nfn[f"weight.{lay.index}"] = w[:, :, :, :, 0]
    with pytest.raises(ZooError, match=rf"'weight.{lay.index}' has shape \(2, 1, {lay.out_units}, "
                                       rf"{prev.out_units}, {k}\); expected \(B, 1, {lay.out_units}, "
                                       rf"{prev.out_units}, 1, {k}\)"):
        make_view("nfn", arch.layout, spec=arch.symmetry).decode(nfn)


# --- a tiny NFN-style permutation-equivariant layer, then invariant pooling ---------------------------------------

MIX = (0.7, -0.4, 0.9, 0.3, 0.6, -0.5)  # fixed scalars: self, mean over out, over in, over both, next layer, bias


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    """(B, 1, out, in[, kh, kw]) -> (B, kh*kw, out, in): kernel values as channels, as NFN does."""
    b, _, out, inp = w.shape[:4]
    return w.reshape(b, out, inp, -1).permute(0, 3, 1, 2)


def _chained(layers: list[Layer], i: int) -> bool:
    """Layer i+1 reads exactly the hidden units layer i writes (the chain NFN's layers assume)."""
    nxt = layers[i + 1] if i + 1 < len(layers) else None
    return nxt is not None and layers[i].out_group is not None and nxt.in_group == layers[i].out_group


def equivariant_layer(batch: dict[str, torch.Tensor], layers: list[Layer]) -> list[torch.Tensor]:
    """Per weight: a mix of the tensor, its means over out, in and both, the next layer's weights summed onto the
    shared hidden axis, and the bias along out; then tanh. Equivariant to any permutation of hidden units."""
    weights, biases = weights_and_biases(batch)
    mats = [_as_matrix(w) for w in weights]
    out = []
    for i, m in enumerate(mats):
        y = (MIX[0] * m + MIX[1] * m.mean(2, keepdim=True) + MIX[2] * m.mean(3, keepdim=True)
             + MIX[3] * m.mean((2, 3), keepdim=True))
        if _chained(layers, i):  # the next layer's in-axis is this layer's out-axis
            y = y + MIX[4] * mats[i + 1].mean((1, 2))[:, None, :, None]
        y = y + MIX[5] * biases[i][:, :, :, None]
        out.append(torch.tanh(y))
    return out


def invariant_pool(features: list[torch.Tensor]) -> torch.Tensor:
    """Mean (and mean square) over all axes of each layer's features, concatenated: (B, 2 L)."""
    return torch.cat([torch.stack([f.mean((1, 2, 3)), f.pow(2).mean((1, 2, 3))], dim=1) for f in features], dim=1)


def _permuted(arch, rows: torch.Tensor, seed: int = 5):
    sym = BatchSymmetry(arch.layout, arch.symmetry)
    perms, _ = sym.draw(rows.shape[0], None, torch.Generator().manual_seed(seed), symmetries=("permute",))
    return sym.apply(rows, perms), perms


@pytest.mark.parametrize("name", SMALL)
def test_nfn_style_layer_is_permutation_invariant(name):
    arch = _arch(name)
    layers = network_layers(arch.layout, arch.symmetry)
    view = make_view("nfn", arch.layout, spec=arch.symmetry)
    rows = _rows(arch.layout.size)
    moved, perms = _permuted(arch, rows)
    assert perms and not torch.equal(moved, rows)
    a, b = view.encode(rows), view.encode(moved)
    fa, fb = equivariant_layer(a, layers), equivariant_layer(b, layers)
    # equivariance: the permuted batch's features are the original's with hidden axes permuted per sample
    for lay, x, y in zip(layers, fa, fb):
        for s in range(rows.shape[0]):
            expect = x[s]
            if lay.out_group:
                expect = expect.index_select(1, perms[lay.out_group][s])
            if lay.in_group:
                expect = expect.index_select(2, perms[lay.in_group][s])
            torch.testing.assert_close(y[s], expect, atol=1e-5, rtol=0, msg=f"{name} {lay.weight.name}")
    torch.testing.assert_close(invariant_pool(fb), invariant_pool(fa), atol=1e-5, rtol=0)


def test_the_invariance_check_sees_a_broken_symmetry():
    """Permuting the channels a flattened-map dense layer reads without permuting the conv writing them is no
    symmetry: the NFN-style layer notices (so the invariance above is not trivially true)."""
    arch = _arch("cnn-s")
    layers = network_layers(arch.layout, arch.symmetry)
    flat = next(lay for lay in layers if lay.kind == "flatten")
    batch = make_view("nfn", arch.layout, spec=arch.symmetry).encode(_rows(arch.layout.size))
    broken = dict(batch)
    w = batch[f"weight.{flat.index}"]
    broken[f"weight.{flat.index}"] = w.roll(1, dims=3)
    pa, pb = invariant_pool(equivariant_layer(batch, layers)), invariant_pool(equivariant_layer(broken, layers))
    assert (pa - pb).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["cnn-s", "smallcnn"])
def test_real_nfn_layers_accept_the_view(name):
    pytest.importorskip("nfn")
    from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
    from nfn.layers import HNPLinear, NPLinear

    arch = _arch(name)
    view = make_view("nfn", arch.layout, spec=arch.symmetry)
    rows = _rows(arch.layout.size)
    moved, _ = _permuted(arch, rows)
    feats = [WeightSpaceFeatures(*weights_and_biases(view.encode(r))) for r in (rows, moved)]
    spec = network_spec_from_wsfeat(feats[0], set_all_dims=True)
    for cls in (NPLinear, HNPLinear):
        torch.manual_seed(0)
        layer = cls(spec, 1, 3)
        pooled = []
        for f in feats:
            out = layer(f)
            assert len(out.weights) == len(f.weights)
            pooled.append(torch.cat([t.flatten(2).mean(2) for t in (*out.weights, *out.biases)], dim=1))
        torch.testing.assert_close(pooled[1], pooled[0], atol=1e-4, rtol=1e-4, msg=cls.__name__)
