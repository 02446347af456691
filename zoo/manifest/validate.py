"""Reading a manifest's tables: the field-path ``Reader`` whose errors name the file, field and value, the
sections in the order they are checked, the ``[architecture]`` table and the checkpoint epochs, and the checks
that need the whole manifest. Its own module so that what a manifest may say is checked in one place, apart from
what the checked manifest expands to (``expand.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..architectures import ARCHITECTURES, is_external, kwargs_json
from ..architectures.external import FACTORY, TORCHVISION
from ..errors import ManifestError, ZooError, allowed_text
from ..fields import Field
from .schema import IMAGE_SPLITS, MANIFEST_VERSION, SECTIONS, ZOO_NAME

if TYPE_CHECKING:
    from . import Manifest


class Reader:
    """Validates values, raising errors that name the file and field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str) -> ManifestError:
        """The error to raise for field ``path``: '<file>: field '<path>': <message>'."""
        return ManifestError(f"{self.source}: field {path!r}: {message}")

    def value(self, path: str, spec: Field, value: Any) -> Any:
        """``value`` validated by ``spec``; a bad one is an ``error`` naming ``path``."""
        try:
            return spec.validate(value)
        except ZooError as e:
            raise self.error(path, str(e)) from None

    def section(self, name: str, table: Any, fields: Mapping[str, Field], extra: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
        """Table ``name`` validated field by field, defaults filled in; ``extra`` names keys taken as they are."""
        if not isinstance(table, dict):
            raise self.error(name, f"expected a table, got {table!r}")
        out = dict()
        for key, spec in fields.items():  # declared fields first: a bad name explains the unknown options
            if key not in table:
                if spec.required:
                    raise self.error(f"{name}.{key}", "required field is missing")
                out[key] = spec.default
            else:
                out[key] = self.value(f"{name}.{key}", spec, table[key])
        for key in table:
            if key not in fields and key not in extra:
                raise self.error(f"{name}.{key}", f"unknown field; {allowed_text(key, set(fields) | extra)}")
        for key in extra & set(table):
            out[key] = table[key]
        return out


def read_sections(r: Reader, data: Any) -> dict[str, Any]:
    """The sections of a parsed manifest, validated in file order and with every default filled in: the keyword
    arguments of ``Manifest`` from ``zoo`` to ``images``. The first bad field raises (``r.error``)."""
    if not isinstance(data, Mapping):
        raise r.error("", "a manifest is a table")
    known = set(SECTIONS) | {"format_version"}
    for key in data:
        if key not in known:
            raise r.error(key, f"unknown section; {allowed_text(key, known)}")
    version = data.get("format_version", MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise r.error("format_version", f"got {version!r}; this version of weightzoo reads {MANIFEST_VERSION}")
    zoo = r.section("zoo", data.get("zoo", {}), SECTIONS["zoo"])
    if not ZOO_NAME.match(zoo["name"]):
        raise r.error("zoo.name", f"got {zoo['name']!r}; use lowercase letters, digits, '.', '_', '-'")
    dataset = r.section("dataset", data.get("dataset", {}), SECTIONS["dataset"])
    architecture = architecture_table(r, data.get("architecture", {}))
    training = r.section("training", data.get("training", {}), SECTIONS["training"])
    population = r.section("population", data.get("population", {}), SECTIONS["population"])
    checkpoints = r.section("checkpoints", data.get("checkpoints", {}), SECTIONS["checkpoints"])
    epochs = checkpoint_epochs(r, checkpoints["epochs"], training["epochs"])
    if "images" in data and zoo["kind"] != "inr":
        raise r.error("images", "only an inr zoo (zoo.kind = 'inr') fits networks to images")
    images = r.section("images", data.get("images", {}), SECTIONS["images"]) if zoo["kind"] == "inr" else {}
    if isinstance(images.get("indices"), dict) and "split" not in data["images"]:
        # a table of images by split: images.split names the first split listed (one split: that one)
        images["split"] = next((s for s in IMAGE_SPLITS if s in images["indices"]), images["split"])
    return {"zoo": zoo, "dataset": dataset, "architecture": architecture, "training": training,
            "population": population, "checkpoint_epochs": epochs, "images": images}


def check_inr(manifest: Manifest, r: Reader) -> None:
    """What only an inr zoo must satisfy: a neural-field architecture, its own initialization, valid [images]."""
    fields = [n for n in ARCHITECTURES.names() if ARCHITECTURES.get(n).kind == "inr"]
    if manifest.architecture["name"] not in fields:
        raise r.error("architecture.name", f"an inr zoo fits a neural field; "
                                           f"{allowed_text(manifest.architecture['name'], fields)}")
    if manifest.training["init"] != "default":  # the field's own init_scheme is its initialization
        raise r.error("training.init", f"got {manifest.training['init']!r}; a neural field is initialized by its "
                                       "architecture's init_scheme (leave training.init at 'default')")
    manifest.image_refs  # noqa: B018 - validates [images]


def architecture_table(r: Reader, table: Any) -> dict[str, Any]:
    """``[architecture]`` validated into {"name": ..., **options}.

    A registered name takes its options as flat keys. ``torchvision:NAME`` and ``factory`` take their constructor's
    arguments as one ``[architecture.kwargs]`` table, kept as their one option ``kwargs`` (sorted JSON), so that
    every architecture reaches ``ArchDef.resolve``, the metadata columns and the store the same way; a factory's
    name is its ``package.module:function``. Nothing is imported here (manifests stay torch-free): an unknown
    torchvision model or a factory that does not import is refused when the zoo is planned or built.
    """
    if not isinstance(table, dict):
        raise r.error("architecture", f"expected a table, got {table!r}")
    name, factory = table.get("name"), table.get("factory")
    if factory is not None:
        if name is not None:
            raise r.error("architecture.factory", f"got factory = {factory!r} and name = {name!r}; give "
                                                  "architecture.name (a registered architecture or "
                                                  "'torchvision:NAME') or architecture.factory, not both")
        if not isinstance(factory, str) or not FACTORY.match(factory) or factory.startswith(TORCHVISION):
            raise r.error("architecture.factory", f"got {factory!r}; expected 'package.module:function' (a function "
                                                  "returning a torch.nn.Module; torchvision models are given as "
                                                  "architecture.name = 'torchvision:NAME')")
        name = factory
    elif name is None:
        raise r.error("architecture.name", "required field is missing (or give architecture.factory = "
                                           "'package.module:function' for your own module)")
    else:
        name = r.value("architecture.name", Field(str), name)
        if is_external(name) and not name.startswith(TORCHVISION):
            raise r.error("architecture.name", f"got {name!r}; a factory is given as architecture.factory = "
                                               f"{name!r}")
        if name.startswith(TORCHVISION) and not re.match(r"^[A-Za-z_]\w*$", name[len(TORCHVISION):]):
            raise r.error("architecture.name", f"got {name!r}; expected 'torchvision:NAME' with NAME a model of "
                                               "torchvision.models (resnet18, vit_b_16, VisionTransformer, ...)")
    if is_external(name):
        given = "factory" if factory is not None else "name"
        for key in table:
            if key not in (given, "kwargs"):
                raise r.error(f"architecture.{key}", f"unknown field; {name!r} takes its constructor's arguments in "
                                                     f"[architecture.kwargs]; {allowed_text(key, (given, 'kwargs'))}")
        kwargs = table.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise r.error("architecture.kwargs", f"expected a table of keyword arguments, got {kwargs!r}")
        try:
            return {"name": name, "kwargs": kwargs_json(kwargs, "architecture.kwargs")}
        except ZooError as e:
            raise ManifestError(f"{r.source}: {e}") from None
    if name not in ARCHITECTURES.names():
        raise r.error("architecture.name", f"{allowed_text(name, ARCHITECTURES.names())}; or 'torchvision:NAME' "
                                           "(a torchvision model), or architecture.factory = "
                                           "'package.module:function' (your own)")
    options = ARCHITECTURES.get(name).options
    if "kwargs" in table:
        raise r.error("architecture.kwargs", f"[architecture.kwargs] is for 'torchvision:NAME' and "
                                             f"architecture.factory architectures; the registered {name!r} takes its "
                                             f"options as flat keys of [architecture] "
                                             f"({', '.join(options) or 'it has none'})")
    return r.section("architecture", table, {"name": SECTIONS["architecture"]["name"]}, frozenset(options))


def checkpoint_epochs(r: Reader, value: Any, epochs: int) -> tuple[int, ...]:
    """``checkpoints.epochs`` as the sorted epochs to keep: 'all' (0 = initialization to ``epochs``) or a list."""
    if value == "all":
        return tuple(range(epochs + 1))
    if isinstance(value, str):
        raise r.error("checkpoints.epochs", f"got {value!r}; allowed: 'all' or a list of epochs")
    if not value:
        raise r.error("checkpoints.epochs", "the list of checkpoint epochs is empty")
    for e in value:
        if not isinstance(e, int) or isinstance(e, bool) or not 0 <= e <= epochs:
            raise r.error("checkpoints.epochs", f"got {e!r}; epochs are integers in the inclusive range "
                                                f"[0, {epochs}] (0 = initialization)")
    if len(set(value)) != len(value):
        raise r.error("checkpoints.epochs", f"epochs repeat in {value!r}")
    return tuple(sorted(value))
