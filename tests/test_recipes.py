"""Recipe names are declared once (``zoo.recipes``) and implemented once (``builders``), by name."""

from __future__ import annotations

import pytest
from conftest import tiny_dict, tiny_manifest

import builders.orchestration  # noqa: F401 - what `zoo build` imports: attaches every implementation
from builders.importers import modelzoo, smallcnnzoo
from zoo.architectures import ACTIVATIONS, ARCHITECTURES
from zoo.errors import ManifestError, UnknownNameError, ZooError
from zoo.manifest import SECTIONS, Manifest
from zoo.recipes import AUGMENTATIONS, INITS, OPTIMIZERS, RECIPES, SCHEDULES
from zoo.registry import Declarations
from zoo.symmetry import ODD


def test_every_declared_name_has_exactly_one_implementation():
    """After the builder is imported, every declared name is implemented (and ``implement`` refuses undeclared
    names and second implementations, tested below)."""
    assert set(RECIPES.values()) == {OPTIMIZERS, SCHEDULES, INITS, AUGMENTATIONS}
    for registry in RECIPES.values():
        assert registry.unimplemented() == [], registry.kind
        assert sorted(registry._implementations) == registry.names(), registry.kind


def test_the_manifest_validates_against_the_declarations():
    for path, registry in RECIPES.items():
        section, _, name = path.partition(".")
        assert SECTIONS[section][name].choices is registry
    assert OPTIMIZERS.names() == ["adam", "adamw", "rmsprop", "sgd"]
    with pytest.raises(ManifestError, match=r"field 'training.schedule': got 'cosine'; allowed: constant, onecycle$"):
        tiny_manifest(training__schedule="cosine")
    with pytest.raises(ManifestError, match=r"field 'training.optimizer': got 'ADAM'; allowed: adam, adamw, rmsprop"):
        tiny_manifest(training__optimizer="ADAM")  # names are exact, as written in the declarations


def test_implementing_an_undeclared_name_or_twice_is_an_error():
    reg = Declarations("widget")
    reg.declare("a", "the first")
    reg.declare("b", "the second")
    reg.implement("a")(len)
    with pytest.raises(UnknownNameError, match=r"widget 'c' is implemented but not declared .*got 'c'; allowed: a, b"):
        reg.implement("c")(len)
    with pytest.raises(ZooError, match=r"widget 'a' has two implementations: builtins.len and builtins.abs"):
        reg.implement("a")(abs)
    assert reg.implementation("a") is len
    with pytest.raises(ZooError, match=r"widget 'b' is declared but not implemented"):
        reg.implementation("b")
    with pytest.raises(UnknownNameError, match=r"unknown widget: got 'z'; allowed: a, b"):
        reg.implementation("z")
    assert reg.unimplemented() == ["b"] and reg.get("b").doc == "the second"


def test_a_builder_lookup_of_an_unknown_name_lists_the_declared_ones():
    from builders.initializers import initialize
    from builders.optim import lr_factor, make_optimizer

    with pytest.raises(UnknownNameError, match=r"unknown optimizer: got 'adan'; allowed: adam, adamw, rmsprop, sgd "
                                                r"\(did you mean 'adam'\?\)"):
        make_optimizer("adan", [], None, None, None)
    with pytest.raises(UnknownNameError, match=r"unknown schedule: got 'cosine'; allowed: constant, onecycle"):
        lr_factor("cosine", 0, 10)
    with pytest.raises(UnknownNameError, match=r"unknown init: got 'he'; allowed: default, kaiming_normal"):
        initialize(None, "he")


def test_importer_translation_tables_name_declared_recipes():
    """The importers map their formats' names onto ours; every target must be a declared name."""
    assert set(smallcnnzoo.OPTIMIZERS.values()) <= set(OPTIMIZERS)
    assert set(smallcnnzoo.INITS.values()) <= set(INITS)
    assert set(smallcnnzoo.ACTIVATIONS.values()) <= set(ACTIVATIONS)
    assert set(modelzoo.ACTIVATIONS.values()) <= set(ACTIVATIONS)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_declares_its_activation(name):
    """The activation comes from the declaration: the option where there is one, else a fixed one."""
    arch = ARCHITECTURES.get(name)
    resolved = arch.resolve((3, 32, 32), 10)
    if "activation" in arch.options:
        assert resolved.activation in ACTIVATIONS and arch.activation is None
        assert arch.resolve((3, 32, 32), 10, {"activation": "tanh"}).activation == "tanh"
    else:  # fixed: ReLU networks, sine fields (odd: sign flips are their symmetry), the ViT's GELU MLPs
        assert resolved.activation == arch.activation in ("relu", "sin", "gelu")
        assert resolved.activation in ACTIVATIONS or resolved.activation in ODD


def test_model_activation_is_the_architectures():
    data = tiny_dict(population__grid={"training.lr": [0.1, 0.2]})
    data["architecture"] = {"name": "resnet", "width": 4, "blocks": [1]}
    assert {s.activation for s in Manifest.from_dict(data).models} == {"relu"}
    assert [s.activation for s in tiny_manifest().models[::5]] == ["relu", "relu", "tanh", "tanh"]
