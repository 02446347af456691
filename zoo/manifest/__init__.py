"""Manifests: one TOML file declares one zoo.

The field table (``schema.SECTIONS``) is the single declaration of what a manifest may say:
it drives validation (unknown fields, types, choices, ranges), defaults, grid
and random-draw validation, and the typed metadata column of every
hyperparameter. Expansion is a pure function of the file: the same manifest
gives the same models, with the same ids, in the same order.

Errors name the file, the field path, the bad value and what is allowed.

The package's modules: ``schema`` (the fields, constants and limits), ``validate`` (the field-path reader and
the section checks), ``images`` (an inr zoo's image references) and ``expand`` (the population and its model
ids). ``Manifest`` and ``load_manifest`` live here, and every name other modules import from ``zoo.manifest``
is re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ..architectures import Architecture, definition
from ..datasets import input_shape
from ..errors import ManifestError, ZooError
from ..fields import Field
from . import expand
from . import images as inr_images
from .expand import ModelSpec
from .schema import (
    COMPILE,
    DISTRIBUTIONS,
    FIXED_FIELDS,
    IMAGE_SPLITS,
    MANIFEST_VERSION,
    MAX_BATCH,
    MAX_CHECKPOINTS,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_MODELS,
    MAX_SEED,
    MAX_SIDE,
    PRECISIONS,
    RUN_FIELDS,
    SECTIONS,
    VARYING_SECTIONS,
)
from .validate import Reader, check_inr, read_sections

__all__ = ["COMPILE", "DISTRIBUTIONS", "FIXED_FIELDS", "IMAGE_SPLITS", "MANIFEST_VERSION", "MAX_BATCH",
           "MAX_CHECKPOINTS", "MAX_EPOCHS", "MAX_IMAGES", "MAX_MODELS", "MAX_SEED", "MAX_SIDE", "PRECISIONS",
           "RUN_FIELDS", "SECTIONS", "VARYING_SECTIONS", "Manifest", "ModelSpec", "load_manifest"]


@dataclass(frozen=True)
class Manifest:
    """A validated manifest with every default filled in; made by ``from_dict`` or ``load_manifest``, which refuse
    a bad one with a ``ManifestError`` naming the file and field."""

    source: str
    zoo: Mapping[str, Any]
    dataset: Mapping[str, Any]
    architecture: Mapping[str, Any]
    training: Mapping[str, Any]
    population: Mapping[str, Any]
    checkpoint_epochs: tuple[int, ...]
    _raw: Mapping[str, Any] = field(compare=False, repr=False)
    images: Mapping[str, Any] = field(default_factory=dict)  # inr zoos: split, start, count
    #: Whether the caller wrote this manifest (a file given to ``zoo build``, a dict given to ``build``): only then
    #: may its architecture factory be imported and called (``Architecture.trusted``). A manifest read from a store
    #: or an export is data, and is not.
    trust_code: bool = field(default=False, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """``classifier`` or ``inr`` (``zoo.kind``)."""
        return self.zoo["kind"]

    @property
    def name(self) -> str:
        """``zoo.name``, validated to lowercase letters, digits, '.', '_' and '-'."""
        return self.zoo["name"]

    # --- loading ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<manifest>", *, trust_code: bool = False
                  ) -> Manifest:
        """Validate a parsed manifest (a TOML table) and expand its population; ``source`` names it in errors.
        ``trust_code``: the caller wrote it, so a factory it names may run (see ``trust_code`` above).

        Validation never imports or builds anything an architecture names; a manifest nested too deeply for
        validation is refused like any other bad one."""
        try:
            return cls._from_dict(data, source, trust_code)
        except RecursionError:
            raise ManifestError(f"{source}: nested too deeply to be a manifest") from None

    def trusted(self) -> Manifest:
        """This manifest, as the caller's own (``trust_code``): what a build does with the manifest it is given."""
        return self if self.trust_code else Manifest.from_dict(self._raw, self.source, trust_code=True)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], source: str, trust_code: bool) -> Manifest:
        r = Reader(source)
        sections = read_sections(r, data)
        manifest = cls(source, **sections, _raw=dict(data), trust_code=trust_code)
        manifest._validate(r)
        return manifest

    def _validate(self, r: Reader) -> None:
        if self.kind == "inr":
            check_inr(self, r)
        elif definition(self.architecture["name"]).kind == "inr":
            raise r.error("architecture.name", f"{self.architecture['name']!r} is a neural field: it belongs in an "
                                               "inr zoo (zoo.kind = 'inr', with an [images] section)")
        arch = dict(self.architecture)
        try:  # the base values too, even where the grid overrides them
            definition(arch.pop("name")).resolve(self.input_shape, 10, arch, where="architecture")
        except ZooError as e:
            raise ManifestError(f"{self.source}: {e}") from None
        self._explicit  # noqa: B018 - validates population.models
        self.seeds  # noqa: B018 - validates the seeds field
        self._grid_axes(r)
        self._random_space(r)
        self.models  # noqa: B018 - resolves every architecture option combination

    # --- inr zoos: the images (images.py) -------------------------------------------
    @cached_property
    def image_refs(self) -> tuple[tuple[str, int], ...]:
        """inr zoos: (source split, index in that split) of each image that gets a network, in model order:
        ``images.start`` and ``count`` in ``images.split``, or the images ``images.indices`` lists."""
        return inr_images.image_refs(self)

    @cached_property
    def image_indices(self) -> tuple[int, ...]:
        """inr zoos: the indices (in the source split ``images.split``) of the images that get a network; a zoo
        whose ``images.indices`` lists images of both splits has no one split (a ``ManifestError``: ``image_refs``
        gives each image's split)."""
        return inr_images.image_indices(self)

    # --- the population (expand.py) ------------------------------------------------------
    @cached_property
    def seeds(self) -> tuple[int, ...]:
        """The seeds each configuration trains with (a list, or a range whose stop is exclusive); with
        ``population.models``, each model's own seed in order."""
        return expand.population_seeds(self)

    @cached_property
    def _explicit(self) -> list[dict[str, Any]] | None:
        """``population.models`` validated (``expand.explicit_models``), once: imported zoos list tens of
        thousands of models."""
        return expand.explicit_models(self)

    def _grid_axes(self, r: Reader | None = None) -> list[tuple[str, list[Any]]]:
        return expand.grid_axes(self, r)

    def _random_space(self, r: Reader | None = None) -> tuple[int, int, list[tuple[str, str, Any, Field | None]]]:
        return expand.random_space(self, r)

    @cached_property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the models see, after grayscale, resize and crop."""
        return input_shape(self.dataset["name"], grayscale=self.dataset["grayscale"], resize=self.dataset["resize"],
                           center_crop=self.dataset["center_crop"])

    @cached_property
    def models(self) -> tuple[ModelSpec, ...]:
        """The expanded population: configurations in order, seeds innermost (or ``population.models`` in order)."""
        return expand.expand(self)

    @cached_property
    def architectures(self) -> dict[str, Architecture]:
        """arch_id -> a representative resolved architecture (one layout per id)."""
        out: dict[str, Architecture] = {}
        for m in self.models:
            out.setdefault(m.arch_id, m.architecture)
        return out

    def hparam_columns(self) -> dict[str, type]:
        """Metadata column -> Python type for every hyperparameter (from the field table)."""
        columns: dict[str, type] = {"architecture": str}
        for arch in {m.architecture.name for m in self.models}:
            for name, opt in definition(arch).options.items():  # torchvision:/factory: one str, kwargs
                columns[name] = opt.kind if isinstance(opt.kind, type) else opt.kind[0]
        for name, spec in SECTIONS["training"].items():
            if name not in RUN_FIELDS:
                columns[name] = spec.kind if isinstance(spec.kind, type) else spec.kind[0]
        columns["seed"] = int
        columns["dataset"] = str
        if self.kind == "inr":
            columns.update(image_index=int, image_split=str)
        return columns

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written (for the store's attributes: rebuildable with ``from_dict``)."""
        return json.loads(json.dumps(self._raw))


def load_manifest(path: str | Path, *, trust_code: bool = True) -> Manifest:
    """Read and validate a manifest file; raises ``ManifestError`` naming the file and field. A file the user
    names is the user's own (``trust_code``: its factory may run when the zoo is built)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest file not found") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: not valid TOML: {e}") from None
    except ValueError as e:  # an integer of more digits than Python converts (int_max_str_digits)
        raise ManifestError(f"{path}: not a usable TOML manifest: {e}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise ManifestError(f"{path}: not a usable TOML manifest: values nested too deeply") from None
    return Manifest.from_dict(data, source=str(path), trust_code=trust_code)
