"""The nfn, dws and graph views: exact inverses for every registered architecture, documented shapes, graph
nodes that follow the spec's permutations, batching through a DataLoader, and clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import fill_units, tiny_dict
from reference_specs import dense, norm
from test_architectures import SHAPES, _randomized
from torch import nn
from torch.utils.data import DataLoader

import zoo
from loaders import ZooDataset, make_view
from loaders.graph_view import EDGE_TYPES, NODE_FEATURES, NeuralGraph, disjoint_union
from loaders.layers import network_layers
from loaders.nfn_views import weights_and_biases
from zoo.architectures import ARCHITECTURES, get_architecture
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.manifest import Manifest
from zoo.symmetry import SymmetrySpec

NEW_VIEWS = ("nfn", "dws", "graph")
#: The registered architectures inside the layer model of the nfn/dws/graph views (the ViT is not: see below).
SMALL = [n for n in ARCHITECTURES.names() if n not in ("resnet18", "vit")]


def _arch(name: str):
    return get_architecture(name, SHAPES[name])


def _awkward_rows(size: int, b: int = 3) -> torch.Tensor:
    """Random rows with values whose bits a sloppy copy would change: -0.0, a subnormal, inf, NaN."""
    rows = torch.randn(b, size, generator=torch.Generator().manual_seed(0))
    rows[0, :4] = torch.tensor([-0.0, 1e-42, float("inf"), float("nan")])
    return rows


@pytest.mark.parametrize("view", NEW_VIEWS)
@pytest.mark.parametrize("name", SMALL)
def test_encode_decode_is_bit_exact(name, view):
    arch = _arch(name)
    rows = _awkward_rows(arch.layout.size)
    v = make_view(view, arch.layout, spec=arch.symmetry)
    batch = v.encode(rows)
    assert all(t.shape[0] == 3 for t in batch.values()), "every tensor is batch-first"
    back = v.decode(batch)
    assert back.dtype == rows.dtype and torch.equal(back.view(torch.int32), rows.view(torch.int32))
    rows64 = rows.double()
    assert torch.equal(v.decode(v.encode(rows64)).view(torch.int64), rows64.view(torch.int64))


@pytest.mark.parametrize("view", NEW_VIEWS)
def test_layer_views_refuse_attention_saying_why(view):
    arch = _arch("vit")
    with pytest.raises(ZooError, match=r"the nfn, dws and graph views are defined for networks of Linear/Conv "
                                       r"layers with BatchNorm; 'class_token' is outside that model: a free tensor"):
        make_view(view, arch.layout, spec=arch.symmetry).encode(torch.zeros(1, arch.layout.size))
    plain = get_architecture("mlp", SHAPES["mlp"])
    assert make_view(view, plain.layout, spec=plain.symmetry).encode(torch.zeros(1, plain.layout.size))


@pytest.mark.parametrize("view", NEW_VIEWS)
def test_layer_views_refuse_depthwise_convolutions_saying_why(view):
    arch = get_architecture("torchvision:mobilenet_v2", (3, 32, 32), 10)
    with pytest.raises(ZooError, match=r"'features\.1\.conv\.0\.0\.weight' is outside that model: a depthwise"):
        make_view(view, arch.layout, spec=arch.symmetry).encode(torch.zeros(1, arch.layout.size))
    resnet = get_architecture("torchvision:resnet18", (3, 32, 32), 10)  # torchvision's own CNNs are inside it
    assert make_view(view, resnet.layout, spec=resnet.symmetry).encode(torch.zeros(1, resnet.layout.size))


def test_resnet18_round_trip_one_row():
    arch = _arch("resnet18")
    row = torch.randn(1, arch.layout.size)
    for view in NEW_VIEWS:
        v = make_view(view, arch.layout, spec=arch.symmetry)
        assert torch.equal(v.decode(v.encode(row)), row), view
    g = NeuralGraph(arch.layout, arch.symmetry)
    # 4,800 BatchNorm channels + 3 input channels + 10 outputs; 3 projection shortcuts (128+256+512) and
    # 5 identity shortcuts (2*64 + 128 + 256 + 512) as residual edges
    assert g.num_nodes == 4800 + 3 + 10 and g.feature_width == 9
    assert int((g.edge_type == EDGE_TYPES.index("residual")).sum()) == 896 + 1024


def test_nfn_and_dws_shapes_and_values_cnn_s():
    arch = _arch("cnn-s")
    rows = torch.randn(2, arch.layout.size)
    sd = arch.layout.unflatten(rows)
    nfn = make_view("nfn", arch.layout, spec=arch.symmetry).encode(rows)
    assert {k: tuple(v.shape) for k, v in nfn.items()} == {
        "weight.0": (2, 1, 8, 1, 5, 5), "bias.0": (2, 1, 8), "weight.1": (2, 1, 6, 8, 5, 5), "bias.1": (2, 1, 6),
        "weight.2": (2, 1, 4, 6, 2, 2), "bias.2": (2, 1, 4),
        "weight.3": (2, 1, 20, 4, 1, 9), "bias.3": (2, 1, 20),  # dense over the flattened 4x3x3 map: 1x9 kernels
        "weight.4": (2, 1, 10, 20), "bias.4": (2, 1, 10)}
    assert torch.equal(nfn["weight.3"][1, 0, 7, 2, 0], sd["fc1.weight"][1, 7, 18:27])
    assert torch.equal(nfn["weight.1"][:, 0], sd["conv2.weight"])
    dws = make_view("dws", arch.layout, spec=arch.symmetry).encode(rows)
    assert {k: tuple(v.shape) for k, v in dws.items()} == {
        "weight.0": (2, 1, 8, 25), "bias.0": (2, 8, 1), "weight.1": (2, 8, 6, 25), "bias.1": (2, 6, 1),
        "weight.2": (2, 6, 4, 4), "bias.2": (2, 4, 1), "weight.3": (2, 4, 20, 9), "bias.3": (2, 20, 1),
        "weight.4": (2, 20, 10, 1), "bias.4": (2, 10, 1)}
    assert torch.equal(dws["weight.1"][1, 3, 5], sd["conv2.weight"][1, 5, 3].flatten())
    weights, biases = weights_and_biases({**dws, "test_acc": torch.zeros(2)})
    assert len(weights) == len(biases) == 5 and weights[4] is dws["weight.4"] and biases[0] is dws["bias.0"]


def test_batchnorm_goes_to_norm_keys_and_missing_biases_are_zero():
    arch = get_architecture("resnet", SHAPES["resnet"], width=4, blocks=[1, 1])
    rows = torch.randn(2, arch.layout.size)
    sd = arch.layout.unflatten(rows)
    nfn = make_view("nfn", arch.layout, spec=arch.symmetry).encode(rows)
    expected = torch.stack([sd[f"bn1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")], dim=1)
    assert torch.equal(nfn["norm.0"], expected) and nfn["norm.0"].shape == (2, 4, 4)
    assert torch.equal(nfn["bias.0"], torch.zeros(2, 1, 4))  # conv1 has no bias
    assert "norm.6" not in nfn and torch.equal(nfn["bias.6"][:, 0], sd["fc.bias"])  # fc: no BatchNorm
    dws = make_view("dws", arch.layout, spec=arch.symmetry).encode(rows)
    assert torch.equal(dws["norm.0"], expected.transpose(1, 2))
    # layers in layout order; the 1x1 downsample conv of stage 2 is the layer after that stage's conv2
    names = [lay.weight.name for lay in network_layers(arch.layout, arch.symmetry)]
    assert names == ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight",
                     "layer2.0.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"]


def test_graph_of_an_mlp_and_cnn_s():
    arch = get_architecture("mlp", (1, 8, 8), hidden=[6, 5])
    g = NeuralGraph(arch.layout, arch.symmetry)
    assert (g.num_nodes, g.num_edges, g.feature_width) == (64 + 6 + 5 + 10, 64 * 6 + 6 * 5 + 5 * 10, 1)
    rows = torch.randn(1, arch.layout.size)
    sd = arch.layout.unflatten(rows)
    batch = g.encode(rows)
    assert torch.equal(batch["node_features"][0, 64:70, 0], sd["fc1.bias"][0])
    assert torch.equal(batch["node_features"][0, :64], torch.zeros(64, 5))  # inputs carry nothing
    assert batch["node_type"][0].tolist() == [0] * 64 + [1] * 11 + [2] * 10
    assert batch["node_layer"][0].tolist() == [0] * 64 + [1] * 6 + [2] * 5 + [3] * 10
    src, dst = batch["edge_index"][0]
    e = 64 * 6 + 2 * 6 + 4  # fc2 (out-major, 6 inputs each): output 2 reads hidden unit 4
    assert (src[e].item(), dst[e].item()) == (64 + 4, 70 + 2) and batch["edge_features"][0, e, 0] == sd[
        "fc2.weight"][0, 2, 4]

    arch = _arch("cnn-s")
    g = NeuralGraph(arch.layout, arch.symmetry)
    assert g.num_nodes == 1 + 8 + 6 + 4 + 20 + 10 and g.feature_width == 25
    assert g.num_edges == 8 * 1 + 6 * 8 + 4 * 6 + 20 * 4 + 10 * 20
    assert torch.bincount(g.edge_type, minlength=4).tolist() == [200, 8 + 48 + 24, 80, 0]
    rows = torch.randn(1, arch.layout.size)
    sd = arch.layout.unflatten(rows)
    feats = g.encode(rows)["edge_features"][0]
    conv3 = 8 + 48  # first conv3 edge: (conv2 unit 0 -> conv3 unit 0), a 2x2 kernel padded to 25
    assert torch.equal(feats[conv3], torch.cat([sd["conv3.weight"][0, 0, 0].flatten(), torch.zeros(21)]))
    fc1 = 8 + 48 + 24 + 3 * 4 + 1  # (conv3 channel 1 -> fc1 unit 3): that channel's 9 flattened inputs
    assert torch.equal(feats[fc1], torch.cat([sd["fc1.weight"][0, 3, 9:18], torch.zeros(16)]))


def test_graph_residual_edges_and_batchnorm_nodes():
    arch = get_architecture("resnet", SHAPES["resnet"], width=4, blocks=[1, 1])
    g = NeuralGraph(arch.layout, arch.symmetry)
    sets = {s.name: s for s in g.node_sets}
    residual = g.edge_type == EDGE_TYPES.index("residual")
    pairs = set(map(tuple, g.edge_index[:, residual].T.tolist()))
    stem, block1 = sets["conv1.weight"], sets["layer1.0.conv2.weight"]
    down, block2 = sets["layer2.0.downsample.0.weight"], sets["layer2.0.conv2.weight"]
    # identity shortcut: stem -> block output; projection shortcut: downsample -> block output (the sum)
    assert pairs == ({(stem.start + i, block1.start + i) for i in range(4)}
                     | {(down.start + i, block2.start + i) for i in range(8)})
    rows = torch.randn(2, arch.layout.size)
    sd = arch.layout.unflatten(rows)
    batch = g.encode(rows)
    assert torch.equal(batch["edge_features"][:, residual], torch.tensor([1.0] + [0.0] * 8).expand(2, 12, 9))
    stem_nodes = batch["node_features"][:, stem.start:stem.start + 4]
    assert torch.equal(stem_nodes[..., 0], torch.zeros(2, 4))  # no conv bias
    for col, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        assert torch.equal(stem_nodes[..., col], sd[f"bn1.{key}"]), NODE_FEATURES[col]
    # the fc reads the stage-2 stream's sum node set, i.e. block 2's output
    fc = (g.edge_type == EDGE_TYPES.index("dense"))
    assert set(g.edge_index[0, fc].tolist()) == set(range(block2.start, block2.start + 8))


@pytest.mark.parametrize("name", SMALL)
def test_permuting_hidden_units_permutes_graph_nodes_and_layer_axes(name):
    arch = _arch(name)
    layout, spec = arch.layout, arch.symmetry
    state = _randomized(arch).state_dict()
    gen = torch.Generator().manual_seed(3)
    perms = {g: torch.randperm(group.size, generator=gen) for g, group in spec.groups.items()}
    moved = spec.transform(layout, state, perms)
    rows = torch.stack([layout.flatten(state), layout.flatten(moved)])

    graph = NeuralGraph(layout, spec)
    a, b = (graph.encode(r[None]) for r in rows)
    idx = graph.node_permutation(perms)
    assert sorted(idx.tolist()) == list(range(graph.num_nodes)) and not torch.equal(idx, torch.arange(len(idx)))
    assert not torch.equal(a["node_features"], b["node_features"])
    assert torch.equal(b["node_features"][0], a["node_features"][0, idx])
    assert torch.equal(a["node_layer"][0, idx], a["node_layer"][0])
    # the edge multiset: edge (s, d) of the permuted graph is edge (idx[s], idx[d]) of the original
    n = graph.num_nodes
    s, d = graph.edge_index
    key = s * n + d
    order = key.argsort()
    mapped = idx[s] * n + idx[d]
    pos = torch.searchsorted(key[order], mapped)
    assert torch.equal(key[order][pos], mapped), "every permuted edge exists in the original graph"
    old = order[pos]
    assert torch.equal(b["edge_features"][0], a["edge_features"][0, old])
    assert torch.equal(graph.edge_type[old], graph.edge_type)

    for style in ("nfn", "dws"):
        x, y = (make_view(style, layout, spec=spec).encode(r[None]) for r in rows)
        out_axis, in_axis = (2, 3) if style == "nfn" else (2, 1)
        for lay in network_layers(layout, spec):
            w = x[f"weight.{lay.index}"]
            if lay.out_group:
                w = w.index_select(out_axis, perms[lay.out_group])
            if lay.in_group:
                w = w.index_select(in_axis, perms[lay.in_group])
            assert torch.equal(y[f"weight.{lay.index}"], w), (style, lay.weight.name)


def test_disjoint_union_offsets_nodes_per_sample():
    arch = get_architecture("mlp", (1, 8, 8), hidden=[6, 5])
    v = make_view("graph", arch.layout, spec=arch.symmetry)
    batch = v.encode(torch.randn(2, arch.layout.size))
    big = disjoint_union(batch)
    n, e = batch["node_features"].shape[1], batch["edge_index"].shape[2]
    assert big["x"].shape == (2 * n, 5) and big["edge_attr"].shape == (2 * e, 1)
    assert torch.equal(big["edge_index"][:, e:], batch["edge_index"][0] + n)
    assert big["batch"].tolist() == [0] * n + [1] * n and big["edge_type"].shape == (2 * e,)
    assert torch.equal(big["x"][n:], batch["node_features"][1])


@pytest.fixture
def resnet_store(tmp_path):
    """Three tiny ResNets (BatchNorm, a downsample shortcut) on 8x8 digits, random weights."""
    data = tiny_dict()
    data["architecture"] = {"name": "resnet", "width": 4, "blocks": [1, 1]}
    data["population"] = {"seeds": {"start": 0, "stop": 3}}
    data["checkpoints"] = {"epochs": [0, 1]}
    writer = zoo.create(tmp_path / "resnet.zoo", Manifest.from_dict(data, source="resnet.toml"), group_size=3)
    fill_units(writer, writer.plan.units)
    return writer.url


@pytest.mark.parametrize("view", NEW_VIEWS)
def test_views_batch_through_a_dataloader(resnet_store, view):
    ds = ZooDataset(resnet_store, view=view)
    loader = DataLoader(ds, batch_size=4, collate_fn=ds.collate)
    z = zoo.open(resnet_store)
    seen = 0
    for batch in loader:
        b = batch["model_id"].shape[0]
        assert all(t.shape[0] == b for t in batch.values())
        expected = torch.from_numpy(z.read_rows(ds.arch, ds.rows[seen:seen + b]))
        assert torch.equal(ds.decode(batch), expected)
        seen += b
    assert seen == len(ds) == 6
    one = ds[0]  # item-wise access strips the batch axis: the graph's edge index is (2, E)
    if view == "graph":
        assert one["edge_index"].shape == (2, NeuralGraph(ds.layout, z.symmetry(ds.arch)).num_edges)


def test_graph_view_in_dataloader_workers_with_augmentation(filled):
    writer, _ = filled
    ds = ZooDataset(writer.url, view="graph", augment=("permute",))
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork", collate_fn=ds.collate)
    z = zoo.open(writer.url)
    reference = NeuralGraph(ds.layout, z.symmetry(ds.arch))
    count = 0
    for batch in loader:
        assert torch.equal(batch["edge_index"][0], reference.edge_index)
        rows = ds.decode(batch)  # permuted checkpoints: same multiset of values per row as stored
        stored = torch.from_numpy(z.read_rows(ds.arch, ds.rows[count:count + len(rows)]))
        assert torch.equal(rows.sort(dim=1).values, stored.sort(dim=1).values) and not torch.equal(rows, stored)
        count += len(rows)
    assert count == len(ds)


def test_bad_options_and_inputs_give_clear_errors(filled):
    arch = _arch("cnn-s")
    layout, spec = arch.layout, arch.symmetry
    with pytest.raises(ZooError, match=r"view 'graph' needs the architecture's symmetry spec"):
        make_view("graph", layout)
    with pytest.raises(ZooError, match=r"view 'nfn': unknown option: got 'tokensize'; it takes no options"):
        make_view("nfn", layout, spec=spec, tokensize=3)
    with pytest.raises(ZooError, match=r"view 'tokens': unknown option: got 'tokensise'; allowed: tokensize "
                                       r"\(did you mean 'tokensize'\?\)"):
        make_view("tokens", layout, tokensise=3)
    with pytest.raises(ZooError, match=r"symmetry spec names 'fc1.bias', which is not in the layout"):
        make_view("dws", _arch("smallcnn").layout, spec=spec)
    with pytest.raises(ZooError, match=r"nfn batch lacks 'weight.0'"):
        make_view("nfn", layout, spec=spec).decode({})
    graph = make_view("graph", layout, spec=spec)
    batch = graph.encode(torch.randn(1, layout.size))
    batch["edge_features"] = batch["edge_features"][..., :9]
    with pytest.raises(ZooError, match=r"'edge_features' has shape \(1, 360, 9\); expected \(B, 360, 25\)"):
        graph.decode(batch)
    with pytest.raises(ZooError, match=r"rows of shape \(1, 5\); expected \(B, 2464\)"):
        graph.encode(torch.zeros(1, 5))
    with pytest.raises(ZooError, match=r"not an nfn/dws batch: missing 'weight.0'"):
        weights_and_biases({"tokens": torch.zeros(1)})
    with pytest.raises(ZooError, match=r"view: got 'graf'; allowed: .*graph.* \(did you mean 'graph'\?\)"):
        ZooDataset(filled[0].url, view="graf")


def test_networks_the_views_cannot_read_are_named():
    """Views read any layout + spec, registered or not; an inconsistent one is an error naming the tensor."""
    bn_first = Layout.from_module(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)))
    spec = SymmetrySpec.build(bn_first, {**norm("0", "A"), **dense("1", "A", None)}, {"A": "act"})
    with pytest.raises(ZooError, match=r"BatchNorm module '0': no earlier layer writes permutation 'A'"):
        make_view("graph", bn_first, spec=spec)
    unfed = Layout.from_module(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    spec = SymmetrySpec.build(unfed, {**dense("0", None, "A"), **dense("1", "B", None)}, {"A": "act", "B": "act"})
    with pytest.raises(ZooError, match=r"'1.weight' reads permutation 'B' before any layer writes it"):
        make_view("graph", unfed, spec=spec)
    # a residual MLP x + W2 act(W1 x) written in plain modules: the spec ties the stream, the graph adds the edge
    resmlp = Layout.from_module(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5), nn.Linear(5, 3), nn.Linear(3, 2)))
    axes = {**dense("0", None, "S"), **dense("1", "S", "H"), **dense("2", "H", "S"), **dense("3", "S", None)}
    g = NeuralGraph(resmlp, SymmetrySpec.build(resmlp, axes, {"S": "act", "H": "act"}))
    residual = g.edge_index[:, g.edge_type == EDGE_TYPES.index("residual")]
    assert residual.T.tolist() == [[4 + i, 4 + 3 + 5 + i] for i in range(3)]


def test_every_view_is_known_without_importing_its_module():
    """``import loaders`` is lazy, and the registry names nfn/dws/graph before their modules are imported (no
    import for its side effect); the first use imports the one module it needs."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, loaders\n"
            "first = sorted(m for m in ('torch', 'loaders.views', 'loaders.dataset') if m in sys.modules)\n"
            "names = loaders.VIEWS.names()\n"
            "before = sorted(m for m in ('loaders.views.nfn', 'loaders.views.graph') if m in sys.modules)\n"
            "from zoo.architectures import get_architecture\n"
            "arch = get_architecture('mlp', (1, 8, 8))\n"
            "view = loaders.make_view('graph', arch.layout, spec=arch.symmetry)\n"
            "after = sorted(m for m in ('loaders.views.nfn', 'loaders.views.graph') if m in sys.modules)\n"
            "print(first, names, before, after, view.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == ("[] ['dws', 'flat', 'graph', 'nfn', 'state_dict', 'tokens'] [] ['loaders.views.graph'] graph")


def test_an_unknown_view_lists_every_view():
    with pytest.raises(ZooError, match=r"unknown view: got 'nfm'; allowed: dws, flat, graph, nfn, state_dict, tokens"):
        make_view("nfm", _arch("mlp").layout)


def test_a_lazy_entry_naming_nothing_is_an_error_naming_it():
    from zoo.registry import Registry

    things: Registry[object] = Registry("thing")
    things.register_lazy("x", "loaders.views", "no_such_view")
    assert things.names() == ["x"] and "x" in things
    with pytest.raises(ZooError, match=r"thing 'x' is registered as loaders.views.no_such_view, which that module"):
        things.get("x")
    with pytest.raises(ZooError, match=r"thing 'x' is already registered"):
        things.register("X", object())
