"""Manifests: one TOML file declares one zoo.

The field table below is the single declaration of what a manifest may say:
it drives validation (unknown fields, types, choices, ranges), defaults, grid
and random-draw validation, and the typed metadata column of every
hyperparameter. Expansion is a pure function of the file: the same manifest
gives the same models, with the same ids, in the same order.

Errors name the file, the field path, the bad value and what is allowed.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from . import recipes
from .architectures import ARCHITECTURES, Architecture, definition, is_external, kwargs_json
from .architectures.external import FACTORY, TORCHVISION
from .datasets import DATASETS, input_shape
from .errors import ManifestError, ZooError, allowed_text
from .fields import Field

MANIFEST_VERSION = 1
#: Upper bounds where a larger value can only be a mistake (and would exhaust memory or overflow before any
#: training): image sides, images, batch, epochs, models. Seeds stay below 2**62 so that seed offsets and the
#: int64 metadata columns hold them.
MAX_SIDE = 4096
MAX_IMAGES = 10**8
MAX_BATCH = 2**20
MAX_EPOCHS = 10_000
MAX_MODELS = 1_000_000
#: Checkpoints (models x checkpoint epochs) a zoo may plan: ten times the largest published zoos' count, and a bound
#: on what a plan, a status or a metadata read of a stranger's store may cost.
MAX_CHECKPOINTS = 10_000_000
MAX_SEED = 2**62


PRECISIONS = ("fp32", "tf32", "bf16-mixed")
COMPILE = ("auto", "off")

#: The manifest's fields, section by section. ``architecture`` also takes the chosen architecture's options.
SECTIONS: dict[str, dict[str, Field]] = {
    "zoo": {
        "name": Field(str, required=True, doc="zoo name: lowercase letters, digits, '.', '_', '-'"),
        "kind": Field(str, "classifier", choices=("classifier", "inr"),
                      doc="classifier: networks trained on a dataset; inr: one neural field fitted per image "
                          "(its [images] say which)"),
        "description": Field(str, ""),
        "license": Field(str, "unknown"),
        "citation": Field(str, ""),
    },
    "dataset": {
        "name": Field(str, required=True, choices=DATASETS),
        "root": Field(str, "~/.cache/weightzoo/data", doc="where the dataset files are (or are downloaded to)"),
        "download": Field(bool, False),
        "grayscale": Field(bool, False),
        "resize": Field((int, type(None)), None, positive=True, maximum=MAX_SIDE),
        "center_crop": Field((int, type(None)), None, positive=True, maximum=MAX_SIDE),
        "normalize": Field(bool, True, doc="standardize per channel (with mean/std, or the train split's)"),
        "mean": Field((list, type(None)), None, doc="fixed per-channel means (the published zoos' constants)"),
        "std": Field((list, type(None)), None, doc="fixed per-channel standard deviations"),
        "val_size": Field((int, type(None)), None, minimum=0, maximum=MAX_IMAGES,
                          doc="training images held out for validation"),
        "split_seed": Field(int, 42, minimum=0, maximum=MAX_SEED),
    },
    "architecture": {  # exactly one of name and factory (checked by _architecture, not by Field.required)
        "name": Field(str, None, choices=ARCHITECTURES,
                      doc="a registered architecture (its options as flat keys of [architecture]), or "
                          "'torchvision:NAME' (its constructor's arguments in [architecture.kwargs])"),
        "factory": Field(str, None, doc="'package.module:function' returning a torch.nn.Module, importable where the "
                                        "zoo is built (its arguments in [architecture.kwargs]); excludes name"),
        "kwargs": Field(dict, None, doc="keyword arguments of a torchvision:NAME or factory constructor (any TOML "
                                        "values JSON can hold); the dataset fills in num_classes and the input shape"),
    },
    "training": {
        "optimizer": Field(str, "adam", choices=recipes.OPTIMIZERS),
        "lr": Field(float, 1e-3, positive=True),
        "momentum": Field(float, 0.0, minimum=0.0),
        "weight_decay": Field(float, 0.0, minimum=0.0),
        "schedule": Field(str, "constant", choices=recipes.SCHEDULES),
        "batch_size": Field(int, 32, positive=True, maximum=MAX_BATCH),
        "epochs": Field(int, required=True, positive=True, maximum=MAX_EPOCHS),
        "init": Field(str, "default", choices=recipes.INITS),
        "init_std": Field((float, type(None)), None, positive=True, doc="std of normal/truncated_normal init"),
        "train_fraction": Field(float, 1.0, positive=True, maximum=1.0, doc="fraction of the train split used"),
        "augmentation": Field(str, "none", choices=recipes.AUGMENTATIONS),
        "precision": Field(str, "fp32", choices=PRECISIONS,
                           doc="fp32 (default: reproducible, as the published zoos), or tf32 / bf16-mixed for GPU "
                               "recipes; recorded per checkpoint in the 'precision' column"),
        "compile": Field(str, "auto", choices=COMPILE,
                         doc="auto: the training step runs as a CUDA graph on a GPU, compiled on a CPU for long "
                             "populations; off: eager. Recorded per checkpoint in the 'step_mode' column"),
    },
    "population": {
        "seeds": Field((list, dict), None, doc="required unless `models` lists every model"),
        "grid": Field(dict, {}),
        "random": Field(dict, None),
        "models": Field(list, None, doc="explicit models, one table each: `seed` and 'section.field' values "
                                        "(imported zoos whose models form no grid); excludes seeds, grid, random"),
        "grouping": Field(str, "structure", choices=("structure", "architecture"),
                          doc="which models share a unit of work: 'structure' (models that train together, as "
                              "zoo build needs) or 'architecture' (any models of one layout: imported zoos, where "
                              "nothing trains and fewer, fuller units mean fewer files)"),
    },
    "checkpoints": {
        "epochs": Field((str, list), "all"),
    },
    "images": {  # inr zoos only: the images of the dataset that get a network each
        "split": Field(str, "train", choices=("train", "test"), doc="the source dataset's split"),
        "start": Field(int, 0, minimum=0, maximum=MAX_IMAGES, doc="index of the first image in that split"),
        "count": Field((int, str), "all", doc="how many consecutive images, or 'all' (to the split's end)"),
        "indices": Field((list, dict, type(None)), None,
                         doc="the images listed instead of start and count (imported zoos): indices in `split`, or "
                             "{train = [...], test = [...]} for images of both splits (the train ones first)"),
    },
}
#: The source splits an inr zoo's images come from, in the order a table of ``images.indices`` lists them.
IMAGE_SPLITS = ("train", "test")

#: Sections whose fields may vary between models (grid, random draws) and become metadata columns.
VARYING_SECTIONS = ("architecture", "training")
#: Training fields that must be equal across a zoo (epochs fix the number of checkpoints; precision and
#: compile say how the whole build runs).
FIXED_FIELDS = ("training.epochs", "training.precision", "training.compile")
#: Training fields about how a build runs, not what a model is: no hyperparameter columns (the store records
#: their effect per checkpoint: 'precision' and 'step_mode').
RUN_FIELDS = ("precision", "compile")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class _Reader:
    """Validates values, raising errors that name the file and field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str) -> ManifestError:
        return ManifestError(f"{self.source}: field {path!r}: {message}")

    def value(self, path: str, spec: Field, value: Any) -> Any:
        try:
            return spec.validate(value)
        except ZooError as e:
            raise self.error(path, str(e)) from None

    def section(self, name: str, table: Any, fields: Mapping[str, Field], extra: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
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


@dataclass(frozen=True)
class ModelSpec:
    """One model of the population: its id, seed, architecture and full recipe."""

    model_id: int
    seed: int
    arch_id: str
    architecture: Architecture
    training: Mapping[str, Any]
    hparams: Mapping[str, Any]  # flat column name -> value: every hyperparameter of this model

    @property
    def activation(self) -> str | None:
        """The hidden-unit activation, as the architecture declares it (``Architecture.activation``)."""
        return self.architecture.activation


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
        r = _Reader(source)
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
        if not _NAME.match(zoo["name"]):
            raise r.error("zoo.name", f"got {zoo['name']!r}; use lowercase letters, digits, '.', '_', '-'")
        dataset = r.section("dataset", data.get("dataset", {}), SECTIONS["dataset"])
        architecture = _architecture(r, data.get("architecture", {}))
        training = r.section("training", data.get("training", {}), SECTIONS["training"])
        population = r.section("population", data.get("population", {}), SECTIONS["population"])
        checkpoints = r.section("checkpoints", data.get("checkpoints", {}), SECTIONS["checkpoints"])
        epochs = _checkpoint_epochs(r, checkpoints["epochs"], training["epochs"])
        if "images" in data and zoo["kind"] != "inr":
            raise r.error("images", "only an inr zoo (zoo.kind = 'inr') fits networks to images")
        images = r.section("images", data.get("images", {}), SECTIONS["images"]) if zoo["kind"] == "inr" else {}
        if isinstance(images.get("indices"), dict) and "split" not in data["images"]:
            # a table of images by split: images.split names the first split listed (one split: that one)
            images["split"] = next((s for s in IMAGE_SPLITS if s in images["indices"]), images["split"])
        manifest = cls(source, zoo, dataset, architecture, training, population, epochs, dict(data), images,
                       trust_code)
        manifest._validate(r)
        return manifest

    def _validate(self, r: _Reader) -> None:
        if self.kind == "inr":
            self._check_inr(r)
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

    def _check_inr(self, r: _Reader) -> None:
        fields = [n for n in ARCHITECTURES.names() if ARCHITECTURES.get(n).kind == "inr"]
        if self.architecture["name"] not in fields:
            raise r.error("architecture.name", f"an inr zoo fits a neural field; "
                                               f"{allowed_text(self.architecture['name'], fields)}")
        if self.training["init"] != "default":  # the field's own init_scheme is its initialization
            raise r.error("training.init", f"got {self.training['init']!r}; a neural field is initialized by its "
                                           "architecture's init_scheme (leave training.init at 'default')")
        self.image_refs  # noqa: B018 - validates [images]

    @cached_property
    def image_refs(self) -> tuple[tuple[str, int], ...]:
        """inr zoos: (source split, index in that split) of each image that gets a network, in model order:
        ``images.start`` and ``count`` in ``images.split``, or the images ``images.indices`` lists."""
        if self.kind != "inr":
            return ()
        if self.images["indices"] is None:
            return tuple((self.images["split"], i) for i in self._image_range())
        r = _Reader(self.source)
        given = self._raw.get("images", {})
        for key in ("start", "count"):
            if key in given:
                raise r.error(f"images.{key}", f"images.indices lists the images itself; remove images.{key}")
        indices = self.images["indices"]
        if isinstance(indices, dict):
            if "split" in given:
                raise r.error("images.split", "images.indices is a table of the images of each split; remove "
                                              "images.split")
            unknown = [k for k in indices if k not in IMAGE_SPLITS]
            if unknown:
                raise r.error(f"images.indices.{unknown[0]}", f"unknown split; "
                                                              f"{allowed_text(unknown[0], IMAGE_SPLITS)}")
            lists = [(split, f"images.indices.{split}", indices[split]) for split in IMAGE_SPLITS if split in indices]
        else:
            lists = [(self.images["split"], "images.indices", indices)]
        refs: list[tuple[str, int]] = []
        for split, where, values in lists:
            total = DATASETS.get(self.dataset["name"]).split_size(split)
            if not isinstance(values, list) or not values:
                raise r.error(where, f"expected a non-empty list of image indices, got {values!r}")
            for i, v in enumerate(values):
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < total:
                    raise r.error(f"{where}[{i}]", f"got {v!r}; the {split} split of {self.dataset['name']!r} has "
                                                   f"{total} images (0..{total - 1})")
            seen: set[int] = set()
            for i, v in enumerate(values):
                if v in seen:
                    raise r.error(f"{where}[{i}]", f"image {v} is listed twice")
                seen.add(v)
            refs.extend((split, v) for v in values)
        if len(refs) > MAX_IMAGES:
            raise r.error("images.indices", f"{len(refs)} images; at most {MAX_IMAGES}")
        return tuple(refs)

    @cached_property
    def image_indices(self) -> tuple[int, ...]:
        """inr zoos: the indices (in the source split ``images.split``) of the images that get a network; a zoo
        whose ``images.indices`` lists images of both splits has no one split (a ``ManifestError``: ``image_refs``
        gives each image's split)."""
        refs = self.image_refs
        splits = {split for split, _ in refs}
        if len(splits) > 1:
            raise _Reader(self.source).error("images.indices", "lists images of both splits; what fits the images "
                                                               "of one split (zoo build) takes one split per zoo")
        return tuple(i for _, i in refs)

    def _image_range(self) -> range:
        """``images.start`` and ``images.count`` validated against the split's size."""
        r = _Reader(self.source)
        total = DATASETS.get(self.dataset["name"]).split_size(self.images["split"])
        start, count = self.images["start"], self.images["count"]
        if isinstance(count, str) and count != "all":
            raise r.error("images.count", f"got {count!r}; allowed: a number of images or 'all'")
        if start >= total:
            raise r.error("images.start", f"got {start}; the {self.images['split']} split of "
                                          f"{self.dataset['name']!r} has {total} images (0..{total - 1})")
        stop = total if count == "all" else start + count
        if isinstance(count, int) and (count < 1 or stop > total):
            raise r.error("images.count", f"got {count}; from image {start} the {self.images['split']} split of "
                                          f"{self.dataset['name']!r} has {total - start} images")
        return range(start, stop)

    # --- the population ------------------------------------------------------------
    @cached_property
    def seeds(self) -> tuple[int, ...]:
        """The seeds each configuration trains with (a list, or a range whose stop is exclusive); with
        ``population.models``, each model's own seed in order."""
        r = _Reader(self.source)
        if self._explicit is not None:
            return tuple(m["seed"] for m in self._explicit)
        spec = self.population["seeds"]
        if spec is None:
            raise r.error("population.seeds", "required field is missing (or list every model in population.models)")
        if isinstance(spec, list):
            if not spec or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                   for s in spec):
                raise r.error("population.seeds", f"expected a non-empty list of integers in [0, {MAX_SEED}], got "
                                                  f"{spec!r}")
            if len(set(spec)) != len(spec):
                raise r.error("population.seeds", "seeds repeat")
            return tuple(spec)
        keys = set(spec)
        if keys == {"start", "stop"} or keys == {"start", "stop", "step"}:
            values = [spec[k] for k in sorted(keys)]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise r.error("population.seeds", f"range bounds must be integers, got {spec!r}")
            if spec.get("step", 1) == 0:
                raise r.error("population.seeds", f"range step must not be 0, got {spec!r}")
            start, stop, step = spec["start"], spec["stop"], spec.get("step", 1)
            count = max(0, -((start - stop) // step))  # sized before it is expanded (len() overflows past 2**63)
            last = start + (count - 1) * step
            if not count or min(start, last) < 0 or max(start, last) > MAX_SEED:
                raise r.error("population.seeds", f"range {spec!r} is empty or leaves [0, {MAX_SEED}]")
            if count > MAX_MODELS:
                raise r.error("population.seeds", f"range {spec!r} gives {count} seeds; at most {MAX_MODELS}")
            return tuple(range(start, stop, step))
        if keys == {"count", "seed"}:
            count, seed = spec["count"], spec["seed"]
            if not (isinstance(count, int) and not isinstance(count, bool) and 0 < count <= MAX_MODELS
                    and isinstance(seed, int)):
                raise r.error("population.seeds", f"count: expected an integer in [1, {MAX_MODELS}] and an integer "
                                                  f"seed, got {spec!r}")
            return tuple(random.Random(seed).sample(range(1, 2**31 - 1), count))
        raise r.error("population.seeds", f"got {spec!r}; allowed: a list of integers, "
                                          "{start, stop[, step]} or {count, seed}")

    @cached_property
    def _explicit(self) -> list[dict[str, Any]] | None:
        """``population.models`` validated: one {'seed': int, 'section.field': value, ...} per model, or None.

        For populations that no grid or random draw describes (zoos imported from other formats): each
        entry is one model, in model-id order, with its seed and the values that differ from the sections'.
        """
        r = _Reader(self.source)
        entries = self.population["models"]
        if entries is None:
            return None
        others = [k for k in ("seeds", "grid", "random") if self.population[k]]
        if others:
            raise r.error("population.models", f"lists every model itself; remove population.{others[0]}")
        if not entries:
            raise r.error("population.models", "the list of models is empty")
        out, specs = [], {}
        for i, entry in enumerate(entries):
            where = f"population.models[{i}]"
            if not isinstance(entry, Mapping):
                raise r.error(where, f"expected a table of 'section.field' values and a seed, got {entry!r}")
            seed = entry.get("seed")
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
                raise r.error(f"{where}.seed", "required integer >= 0" if seed is None else
                              f"expected an integer in [0, {MAX_SEED}], got {seed!r}")
            model = {"seed": seed}
            for path, value in entry.items():
                if path == "seed":
                    continue
                if path not in specs:  # one lookup per path (imported zoos list tens of thousands of models)
                    specs[path] = self._field_spec(r, f"{where}.{path}", path)
                spec = specs[path]
                model[path] = r.value(f"{where}.{path}", spec, value) if spec is not None else value
            out.append(model)
        return out

    def _field_spec(self, r: _Reader, where: str, path: str) -> Field | None:
        """The Field for a varying path (None for an architecture option, checked on resolve)."""
        section, _, name = path.partition(".")
        if section not in VARYING_SECTIONS or not name:
            raise r.error(where, f"got {path!r}; keys are 'architecture.FIELD' or 'training.FIELD'")
        if path in FIXED_FIELDS:
            raise r.error(where, f"{path} cannot vary within one zoo (it fixes the checkpoints or how the whole "
                                 "build runs)")
        if section == "architecture" and (name in ("factory", "kwargs") or name.startswith("kwargs.")):
            raise r.error(where, f"{path} cannot vary within one zoo: a torchvision:NAME or factory architecture "
                                 "takes one [architecture.kwargs] table (write one manifest per constructor "
                                 "configuration, or vary a registered architecture's options)")
        if name in SECTIONS[section]:
            return SECTIONS[section][name]
        if section == "architecture":
            allowed = set(SECTIONS["architecture"]) | set().union(*(a.options for a in map(ARCHITECTURES.get,
                                                                                          ARCHITECTURES.names())))
            if name in allowed:
                return None
            raise r.error(where, f"unknown field {path!r}; {allowed_text(name, allowed)}")
        raise r.error(where, f"unknown field {path!r}; {allowed_text(name, SECTIONS[section])}")

    def _grid_axes(self, r: _Reader | None = None) -> list[tuple[str, list[Any]]]:
        r = r or _Reader(self.source)
        axes = []
        for path, values in self.population["grid"].items():
            where = f"population.grid.{path}"
            spec = self._field_spec(r, where, path)
            if not isinstance(values, list) or not values:
                raise r.error(where, f"expected a non-empty list of values, got {values!r}")
            if spec is not None:
                values = [r.value(f"{where}[{i}]", spec, v) for i, v in enumerate(values)]
            axes.append((path, values))
        return axes

    def _random_space(self, r: _Reader | None = None) -> tuple[int, int, list[tuple[str, str, Any, Field | None]]]:
        r = r or _Reader(self.source)
        table = self.population["random"]
        if table is None:
            return 1, 0, []
        rnd = r.section("population.random", table, {
            "draws": Field(int, required=True, positive=True, maximum=MAX_MODELS),
            "seed": Field(int, 0, minimum=0, maximum=MAX_SEED), "space": Field(dict, required=True)})
        space = []
        for path, dist in rnd["space"].items():
            where = f"population.random.space.{path}"
            spec = self._field_spec(r, where, path)
            if path in self.population["grid"]:
                raise r.error(where, "varied by both the grid and random draws")
            if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
                raise r.error(where, f"got {dist!r}; expected one of " + ", ".join(
                    f"{{{d} = [...]}}" for d in DISTRIBUTIONS))
            kind, args = next(iter(dist.items()))
            if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
                raise r.error(where, f"{kind} takes {'a non-empty list' if kind == 'choice' else '[low, high]'}, "
                                     f"got {args!r}")
            if kind != "choice" and not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                            and math.isfinite(a) for a in args):
                raise r.error(where, f"{kind} bounds must be finite numbers, got {args!r}")
            if kind == "log_uniform" and min(args) <= 0:
                raise r.error(where, f"log_uniform bounds must be > 0, got {args!r}")
            if kind != "choice" and args[0] > args[1]:
                raise r.error(where, f"low > high in {args!r}")
            if kind == "choice" and spec is not None:
                args = [r.value(f"{where}[{i}]", spec, v) for i, v in enumerate(args)]
            elif spec is not None:  # every draw lies between the bounds: they must be values the field allows
                rounded = spec.kind is int  # an integer field rounds its draws (below)
                for i, a in enumerate(args):
                    r.value(f"{where}[{i}]", spec, int(round(a)) if rounded else a)
            space.append((path, kind, args, spec))
        return rnd["draws"], rnd["seed"], space

    def _configurations(self) -> list[dict[str, Any]]:
        """Ordered (draw, grid point) combinations, each a {path: value} override."""
        draws, seed, space = self._random_space()
        grid = self._grid_axes()
        total = draws * math.prod(len(values) for _, values in grid) * len(self.seeds)
        if total > MAX_MODELS:  # counted before anything is expanded
            raise _Reader(self.source).error("population", f"random draws x grid points x seeds give {total} models; "
                                                           f"at most {MAX_MODELS}")
        rng = random.Random(seed)
        sampled = []
        for _ in range(draws):
            point = {}
            for path, kind, args, spec in space:
                if kind == "uniform":
                    value = rng.uniform(args[0], args[1])
                elif kind == "log_uniform":
                    value = math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
                elif kind == "int_uniform":
                    value = rng.randint(int(args[0]), int(args[1]))
                else:
                    value = rng.choice(args)
                if spec is not None and spec.kind is int and isinstance(value, float):
                    value = int(round(value))
                point[path] = value
            sampled.append(point)
        combos = list(itertools.product(*[values for _, values in grid]))
        return [{**point, **{path: v for (path, _), v in zip(grid, combo)}} for point in sampled for combo in combos]

    @cached_property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the models see, after grayscale, resize and crop."""
        return input_shape(self.dataset["name"], grayscale=self.dataset["grayscale"], resize=self.dataset["resize"],
                           center_crop=self.dataset["center_crop"])

    @cached_property
    def models(self) -> tuple[ModelSpec, ...]:
        """The expanded population: configurations in order, seeds innermost (or ``population.models`` in order)."""
        r = _Reader(self.source)
        shape = self.input_shape
        classes = DATASETS.get(self.dataset["name"]).num_classes
        resolved: dict[str, Architecture] = {}
        configs = []
        expansion: list[tuple[dict[str, Any], tuple[int, ...]]]
        if self._explicit is not None:  # one configuration per model, each with its own seed
            expansion = [({k: v for k, v in m.items() if k != "seed"}, (m["seed"],)) for m in self._explicit]
        else:
            expansion = [(override, self.seeds) for override in self._configurations()]
        for override, seeds in expansion:
            arch = dict(self.architecture)
            training = dict(self.training)
            for path, value in override.items():
                section, _, name = path.partition(".")
                (arch if section == "architecture" else training)[name] = value
            key = json.dumps(arch, sort_keys=True)
            if key not in resolved:
                name = arch.pop("name")
                try:
                    resolved[key] = definition(name).resolve(shape, classes, arch, where="architecture",
                                                             trusted=self.trust_code)
                except ZooError as e:
                    raise ManifestError(f"{self.source}: {e}") from None
            configs.append((resolved[key], training, seeds))
        arch_ids = _arch_ids([a for a, _, _ in configs])
        models: list[ModelSpec] = []
        images: tuple[tuple[str, int] | None, ...] = self.image_refs or (None,)
        total = len(configs) * len(images) * max(len(seeds) for _, _, seeds in configs)
        if total > MAX_MODELS:
            raise r.error("population", f"{total} models (configurations x images x seeds); at most {MAX_MODELS}")
        if total * len(self.checkpoint_epochs) > MAX_CHECKPOINTS:  # counted before any model is expanded
            raise r.error("population", f"{total} models x {len(self.checkpoint_epochs)} checkpoint epochs give "
                                        f"{total * len(self.checkpoint_epochs)} checkpoints; at most "
                                        f"{MAX_CHECKPOINTS}")
        for architecture, training, seeds in configs:
            for image in images:  # inr zoos: each image gets a network (per seed); classifiers: one pass
                for seed in seeds:
                    recipe = {k: v for k, v in training.items() if k not in RUN_FIELDS}
                    hparams = {"architecture": architecture.name, **architecture.options, **recipe, "seed": seed,
                               "dataset": self.dataset["name"]}
                    if image is not None:
                        hparams.update(image_index=image[1], image_split=image[0])
                    models.append(ModelSpec(len(models), seed, arch_ids[architecture.shape_key], architecture,
                                            training, hparams))
        if not models:
            raise r.error("population", "the population is empty")
        return tuple(models)

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


def _architecture(r: _Reader, table: Any) -> dict[str, Any]:
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


def _arch_ids(archs: list[Architecture]) -> dict[str, str]:
    """One id per distinct layout: the architecture's name, suffixed when one name has several layouts. The id
    names the store's weights array, so the ':' of 'torchvision:NAME' and 'package.module:function' becomes '-'
    (a file name on every file system and object store)."""
    keys: dict[str, list[str]] = {}
    for a in archs:
        base = re.sub(r"[^A-Za-z0-9._-]", "-", a.name)
        keys.setdefault(base, [])
        if a.shape_key not in keys[base]:
            keys[base].append(a.shape_key)
    out = {}
    for name, shape_keys in keys.items():
        for i, k in enumerate(shape_keys):
            out[k] = name if len(shape_keys) == 1 else f"{name}-{i}"
    return out


def _checkpoint_epochs(r: _Reader, value: Any, epochs: int) -> tuple[int, ...]:
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
