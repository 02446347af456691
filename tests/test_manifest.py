"""Manifests: the published zoos' counts, stable expansion, and errors that name file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_dict, tiny_manifest

import zoo
from zoo.errors import ManifestError, ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.plan import Plan

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def _count(path: Path) -> int:
    return len(load_manifest(path).models)


def test_model_zoos_total_matches_the_paper():
    files = sorted((MANIFESTS / "modelzoo").glob("*.toml"))
    assert len(files) == 27
    assert sum(_count(f) for f in files) == 50_360


@pytest.mark.parametrize("name,models", [
    ("mnist-seed", 1000), ("mnist-hyp-10-fixed", 2560), ("mnist-hyp-10-rand", 2560), ("usps-hyp-10-fixed", 2560),
    ("svhn-hyp-fixed", 4320), ("cifar10-s-hyp-rand", 1280), ("stl10-l-hyp-fixed", 2560),
    ("resnet18-cifar10", 1000), ("resnet18-tiny-imagenet", 1000),
])
def test_model_zoos_grids(name, models):
    assert _count(MANIFESTS / "modelzoo" / f"{name}.toml") == models


def test_model_zoos_hyp_grid_values():
    m = load_manifest(MANIFESTS / "modelzoo" / "mnist-hyp-10-fixed.toml")
    columns = {k: sorted({spec.hparams[k] for spec in m.models}, key=str) for k in
               ("activation", "dropout", "init", "optimizer", "lr", "weight_decay", "seed")}
    assert columns["activation"] == ["gelu", "relu", "sigmoid", "tanh"]
    assert columns["dropout"] == [0.0, 0.5]
    assert columns["init"] == ["kaiming_normal", "kaiming_uniform", "normal", "uniform"]
    assert columns["optimizer"] == ["adam", "sgd"]
    assert columns["lr"] == [0.0001, 0.001]
    assert columns["weight_decay"] == [0.0001, 0.001]
    assert sorted(columns["seed"]) == list(range(1, 11))
    assert m.checkpoint_epochs == tuple(range(51))


def test_resnet_zoo_recipe():
    m = load_manifest(MANIFESTS / "modelzoo" / "resnet18-cifar10.toml")
    spec = m.models[0]
    assert spec.architecture.name == "resnet18"
    assert spec.architecture.layout.num_params == 11_173_962
    assert (spec.training["optimizer"], spec.training["momentum"], spec.training["weight_decay"]) == ("sgd", 0.9, 5e-4)
    assert (spec.training["schedule"], spec.training["lr"], spec.training["epochs"]) == ("onecycle", 0.05, 50)


def test_small_cnn_zoo_manifests():
    for f in sorted((MANIFESTS / "smallcnnzoo").glob("*.toml")):
        m = load_manifest(f)
        assert len(m.models) == 30_000, f
        assert m.checkpoint_epochs == (0, 1, 2, 3, 20, 40, 60, 80, 86)
        assert m.architectures["smallcnn"].layout.num_params == 4970


def test_quickstart_is_small():
    m = load_manifest(MANIFESTS / "quickstart.toml")
    assert 24 <= len(m.models) <= 96
    assert m.dataset["name"] == "digits"


def test_expansion_is_stable_and_ordered():
    a, b = tiny_manifest(), tiny_manifest()
    assert [(s.model_id, s.seed, dict(s.hparams)) for s in a.models] == \
           [(s.model_id, s.seed, dict(s.hparams)) for s in b.models]
    assert len(a.models) == 5 * 2 * 2
    # configurations in grid order, seeds innermost
    assert [s.seed for s in a.models[:6]] == [0, 1, 2, 3, 4, 0]
    assert [(s.hparams["activation"], s.hparams["lr"]) for s in a.models[::5]] == \
           [("relu", 1e-3), ("relu", 1e-2), ("tanh", 1e-3), ("tanh", 1e-2)]


def test_random_draws_are_reproducible_and_in_range():
    data = tiny_dict(population__random={"draws": 7, "seed": 3, "space": {
        "training.lr": {"log_uniform": [1e-4, 1e-2]}, "architecture.dropout": {"uniform": [0.0, 0.5]},
        "training.optimizer": {"choice": ["adam", "sgd"]}, "training.batch_size": {"int_uniform": [8, 64]}}})
    data["population"]["grid"] = {}
    a, b = Manifest.from_dict(data), Manifest.from_dict(data)
    assert len(a.models) == 7 * 5
    assert [dict(s.hparams) for s in a.models] == [dict(s.hparams) for s in b.models]
    assert all(1e-4 <= s.hparams["lr"] <= 1e-2 and 8 <= s.hparams["batch_size"] <= 64 for s in a.models)
    assert len({s.hparams["lr"] for s in a.models}) == 7


def test_random_seeds_are_drawn_once_and_reproducibly():
    a = tiny_manifest(population__seeds={"count": 4, "seed": 9})
    assert len(set(a.seeds)) == 4 and a.seeds == tiny_manifest(population__seeds={"count": 4, "seed": 9}).seeds


def test_checkpoint_epochs_all():
    assert tiny_manifest(checkpoints__epochs="all").checkpoint_epochs == (0, 1, 2, 3)


@pytest.mark.parametrize("overrides,message", [
    ({"architecture__name": "cnn-xs"}, r"tiny.toml: field 'architecture.name': got 'cnn-xs'; allowed: cnn-l, cnn-s, "
                                       r"mlp, resnet, resnet18, siren, smallcnn, vit \(did you mean 'cnn-s'\?\); or "
                                       r"'torchvision:NAME' .*'package.module:function'"),
    ({"checkpoints__epochs": [0, -1]}, r"tiny.toml: field 'checkpoints.epochs': got -1; epochs are integers in the "
                                       r"inclusive range \[0, 3\]"),
    ({"checkpoints__epochs": [0, 9]}, r"field 'checkpoints.epochs': got 9"),
    ({"training__epochs": -2}, r"tiny.toml: field 'training.epochs': expected a value > 0, got -2"),
    ({"training__learning_rate": 0.1}, r"tiny.toml: field 'training.learning_rate': unknown field; got "
                                       r"'learning_rate'; allowed: .*"),
    ({"training__optimizer": "adamm"}, r"field 'training.optimizer': got 'adamm'; allowed: adam, adamw, rmsprop, sgd "
                                       r"\(did you mean 'adam'\?\)"),
    ({"training__lr": "fast"}, r"field 'training.lr': expected float, got 'fast'"),
    ({"dataset__name": "imagenet"}, r"field 'dataset.name': got 'imagenet'; allowed: cifar10, .*"),
    ({"architecture__widht": 3}, r"field 'architecture.widht': unknown field"),
    ({"architecture__activation": "tahn"}, r"tiny.toml: field 'architecture.activation': got 'tahn'"),
    ({"population__seeds": "1..10"}, r"field 'population.seeds': expected list or dict, got '1..10'"),
    ({"population__grid": {"training.lrr": [1]}}, r"field 'population.grid.training.lrr': unknown field "
                                                  r"'training.lrr'.*did you mean 'lr'"),
    ({"population__grid": {"training.epochs": [1, 2]}}, r"training.epochs cannot vary within one zoo"),
    ({"population__grid": {"training.lr": [0.1, -1.0]}}, r"field 'population.grid.training.lr\[1\]': expected a "
                                                         r"value > 0, got -1.0"),
    ({"zoo__name": "My Zoo"}, r"field 'zoo.name': got 'My Zoo'"),
])
def test_bad_manifest_errors_name_file_field_and_value(overrides, message):
    with pytest.raises(ManifestError, match=message):
        tiny_manifest(**overrides)


def test_unknown_section(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[zoo]\nname = "x"\n[trainig]\nepochs = 1\n')
    with pytest.raises(ManifestError, match=r"bad.toml: field 'trainig': unknown section; .*did you mean 'training'"):
        load_manifest(path)


def test_bad_manifest_creates_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[zoo]\nname = "x"\n[dataset]\nname = "mnist"\n[architecture]\nname = "cnn-q"\n'
                    '[training]\nepochs = 1\n[population]\nseeds = [1]\n')
    out = tmp_path / "out.zoo"
    with pytest.raises(ManifestError, match="cnn-q"):
        zoo.create(out, load_manifest(path))
    assert not out.exists()


def test_missing_file_and_invalid_toml(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.toml: manifest file not found"):
        load_manifest(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("[zoo\n")
    with pytest.raises(ManifestError, match=r"broken.toml: not valid TOML"):
        load_manifest(tmp_path / "broken.toml")


def test_plan_groups_share_structure_and_units_tile_rows():
    m = tiny_manifest()
    plan = Plan(m, group_size=3)
    for g in plan.groups:
        acts = {m.models[i].hparams["activation"] for i in g.model_ids}
        assert len(acts) == 1  # activation changes the computation: never mixed in one group
    assert sorted(i for g in plan.groups for i in g.model_ids) == list(range(len(m.models)))
    rows = [u.row_start + k for u in plan.units for k in range(len(u.model_ids))]
    assert len(rows) == len(set(rows)) == plan.checkpoints
    assert all(u.row_start % 3 == 0 for u in plan.units)
    shards = [plan.shard(i, 3) for i in range(3)]
    assert sorted(g.group for s in shards for g in s) == [g.group for g in plan.groups]


def _external(architecture: dict, grid: dict | None = None, trust_code: bool = True) -> Manifest:
    data = tiny_dict(population__grid=grid or {"training.lr": [1e-3, 1e-2]})
    data["architecture"] = architecture
    return Manifest.from_dict(data, source="tiny.toml", trust_code=trust_code)


def test_torchvision_architecture_takes_a_kwargs_table():
    m = _external({"name": "torchvision:VisionTransformer",
                   "kwargs": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}})
    assert m.architecture == {"name": "torchvision:VisionTransformer", "kwargs": '{"hidden_dim": 8, "mlp_dim": 16, '
                                                                          '"num_heads": 2, "num_layers": 1, '
                                                                          '"patch_size": 4}'}
    assert list(m.architectures) == ["torchvision-VisionTransformer"]  # the id names a weights array: no ':'
    spec = m.models[0]
    assert spec.hparams["architecture"] == "torchvision:VisionTransformer"
    assert spec.hparams["kwargs"] == m.architecture["kwargs"]
    assert spec.architecture.in_shape == (1, 8, 8) and spec.architecture.num_classes == 10  # from the dataset
    assert m.hparam_columns()["kwargs"] is str
    assert _external({"name": "torchvision:resnet18"}).architecture == {"name": "torchvision:resnet18",
                                                                        "kwargs": "{}"}


def test_factory_architecture(tmp_path, monkeypatch):
    (tmp_path / "wz_manifest_nets.py").write_text(
        "from torch import nn\n\n"
        "def make_net(in_shape, num_classes, width=32):\n"
        "    c, h, w = in_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),\n"
        "                         nn.Linear(width, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = _external({"factory": "wz_manifest_nets:make_net", "kwargs": {"width": 7}})
    assert m.architecture == {"name": "wz_manifest_nets:make_net", "kwargs": '{"width": 7}'}
    arch = m.architectures["wz_manifest_nets-make_net"]
    assert arch.layout.num_params == 64 * 7 + 7 + 7 * 10 + 10
    assert [g.size for g in arch.symmetry.groups.values()] == [7]
    assert m.to_dict()["architecture"] == {"factory": "wz_manifest_nets:make_net", "kwargs": {"width": 7}}
    # the same manifest as data (not marked as the caller's): its factory is never imported
    untrusted = _external({"factory": "wz_manifest_nets:make_net", "kwargs": {"width": 7}}, trust_code=False)
    assert untrusted == m
    with pytest.raises(ZooError, match=r"architecture factory 'wz_manifest_nets:make_net': refused to import and "
                                       r"call it.*Manifest.from_dict\(\.\.\., trust_code=True\)"):
        untrusted.architectures["wz_manifest_nets-make_net"].layout  # noqa: B018


@pytest.mark.parametrize("architecture,grid,message", [
    ({"name": "torchvision:resnet18", "factory": "a.b:c"},
     None, r"field 'architecture.factory': got factory = 'a.b:c' and name = 'torchvision:resnet18'; give "
           r"architecture.name .* or architecture.factory, not both"),
    ({"name": "mlp", "hidden": [4], "kwargs": {"x": 1}},
     None, r"field 'architecture.kwargs': \[architecture.kwargs\] is for 'torchvision:NAME' and architecture.factory "
           r"architectures; the registered 'mlp' takes its options as flat keys of \[architecture\] \(hidden, "),
    ({"factory": "not a factory"}, None, r"field 'architecture.factory': got 'not a factory'; expected "
                                         r"'package.module:function'"),
    ({"factory": "torchvision:resnet18"}, None, r"field 'architecture.factory': .*architecture.name = "
                                                r"'torchvision:NAME'"),
    ({"name": "mypkg.nets:make_net"}, None, r"field 'architecture.name': got 'mypkg.nets:make_net'; a factory is "
                                            r"given as architecture.factory = 'mypkg.nets:make_net'"),
    ({"name": "torchvision:"}, None, r"field 'architecture.name': got 'torchvision:'; expected 'torchvision:NAME'"),
    ({"kwargs": {}}, None, r"field 'architecture.name': required field is missing \(or give architecture.factory"),
    ({"name": "torchvision:resnet18", "width": 3}, None, r"field 'architecture.width': unknown field; "
                                                         r"'torchvision:resnet18' takes its constructor's arguments in "
                                                         r"\[architecture.kwargs\]"),
    ({"name": "torchvision:resnet18", "kwargs": 3}, None, r"field 'architecture.kwargs': expected a table of keyword "
                                                          r"arguments, got 3"),
    ({"name": "torchvision:resnet18", "kwargs": {"when": __import__("datetime").date(2024, 1, 1)}},
     None, r"field 'architecture.kwargs': Object of type date is not JSON serializable"),
    ({"name": "torchvision:resnet18"}, {"architecture.kwargs.num_classes": [3, 4]},
     r"field 'population.grid.architecture.kwargs.num_classes': architecture.kwargs.num_classes cannot vary within "
     r"one zoo"),
    ({"name": "torchvision:resnet18"}, {"architecture.factory": ["a:b"]},
     r"field 'population.grid.architecture.factory': architecture.factory cannot vary"),
])
def test_external_architecture_errors(architecture, grid, message):
    with pytest.raises(ManifestError, match=r"tiny.toml: " + message):
        _external(architecture, grid)
