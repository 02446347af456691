"""Population expansion: seeds, grid axes, random draws and explicit model lists, and the ``ModelSpec`` each
model becomes. Its own module because it carries the promise "same file, same model ids": the expansion is a
pure function of the manifest (fixed order, seeded draws), and the store's rows are laid out by the ids it gives.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..architectures import ARCHITECTURES, Architecture, definition
from ..datasets import DATASETS
from ..errors import ManifestError, ZooError, allowed_text
from ..fields import Field
from .schema import (
    DISTRIBUTIONS,
    FIXED_FIELDS,
    MAX_CHECKPOINTS,
    MAX_MODELS,
    MAX_SEED,
    RUN_FIELDS,
    SECTIONS,
    VARYING_SECTIONS,
)
from .validate import Reader

if TYPE_CHECKING:
    from . import Manifest


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


def population_seeds(manifest: Manifest) -> tuple[int, ...]:
    """The seeds each configuration trains with (a list, or a range whose stop is exclusive); with
    ``population.models``, each model's own seed in order."""
    r = Reader(manifest.source)
    if manifest._explicit is not None:
        return tuple(m["seed"] for m in manifest._explicit)
    spec = manifest.population["seeds"]
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


def explicit_models(manifest: Manifest) -> list[dict[str, Any]] | None:
    """``population.models`` validated: one {'seed': int, 'section.field': value, ...} per model, or None.

    For populations that no grid or random draw describes (zoos imported from other formats): each
    entry is one model, in model-id order, with its seed and the values that differ from the sections'.
    """
    r = Reader(manifest.source)
    entries = manifest.population["models"]
    if entries is None:
        return None
    others = [k for k in ("seeds", "grid", "random") if manifest.population[k]]
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
                specs[path] = field_spec(r, f"{where}.{path}", path)
            spec = specs[path]
            model[path] = r.value(f"{where}.{path}", spec, value) if spec is not None else value
        out.append(model)
    return out


def field_spec(r: Reader, where: str, path: str) -> Field | None:
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


def grid_axes(manifest: Manifest, r: Reader | None = None) -> list[tuple[str, list[Any]]]:
    """``population.grid`` validated: (path, values) per axis, in the file's order (the last axis varies fastest)."""
    r = r or Reader(manifest.source)
    axes = []
    for path, values in manifest.population["grid"].items():
        where = f"population.grid.{path}"
        spec = field_spec(r, where, path)
        if not isinstance(values, list) or not values:
            raise r.error(where, f"expected a non-empty list of values, got {values!r}")
        if spec is not None:
            values = [r.value(f"{where}[{i}]", spec, v) for i, v in enumerate(values)]
        axes.append((path, values))
    return axes


def random_space(manifest: Manifest, r: Reader | None = None
                 ) -> tuple[int, int, list[tuple[str, str, Any, Field | None]]]:
    """``population.random`` validated: (draws, seed, space), space one (path, distribution, arguments, Field)
    per varied field; without random draws (1, 0, []), one configuration of the sections' values."""
    r = r or Reader(manifest.source)
    table = manifest.population["random"]
    if table is None:
        return 1, 0, []
    rnd = r.section("population.random", table, {
        "draws": Field(int, required=True, positive=True, maximum=MAX_MODELS),
        "seed": Field(int, 0, minimum=0, maximum=MAX_SEED), "space": Field(dict, required=True)})
    space = []
    for path, dist in rnd["space"].items():
        where = f"population.random.space.{path}"
        spec = field_spec(r, where, path)
        if path in manifest.population["grid"]:
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


def configurations(manifest: Manifest) -> list[dict[str, Any]]:
    """Ordered (draw, grid point) combinations, each a {path: value} override."""
    draws, seed, space = random_space(manifest)
    grid = grid_axes(manifest)
    total = draws * math.prod(len(values) for _, values in grid) * len(manifest.seeds)
    if total > MAX_MODELS:  # counted before anything is expanded
        raise Reader(manifest.source).error("population", f"random draws x grid points x seeds give {total} models; "
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


def expand(manifest: Manifest) -> tuple[ModelSpec, ...]:
    """The expanded population: configurations in order, seeds innermost (or ``population.models`` in order)."""
    r = Reader(manifest.source)
    shape = manifest.input_shape
    classes = DATASETS.get(manifest.dataset["name"]).num_classes
    resolved: dict[str, Architecture] = {}
    configs = []
    expansion: list[tuple[dict[str, Any], tuple[int, ...]]]
    if manifest._explicit is not None:  # one configuration per model, each with its own seed
        expansion = [({k: v for k, v in m.items() if k != "seed"}, (m["seed"],)) for m in manifest._explicit]
    else:
        expansion = [(override, manifest.seeds) for override in configurations(manifest)]
    for override, seeds in expansion:
        arch = dict(manifest.architecture)
        training = dict(manifest.training)
        for path, value in override.items():
            section, _, name = path.partition(".")
            (arch if section == "architecture" else training)[name] = value
        key = json.dumps(arch, sort_keys=True)
        if key not in resolved:
            name = arch.pop("name")
            try:
                resolved[key] = definition(name).resolve(shape, classes, arch, where="architecture",
                                                         trusted=manifest.trust_code)
            except ZooError as e:
                raise ManifestError(f"{manifest.source}: {e}") from None
        configs.append((resolved[key], training, seeds))
    arch_ids = _arch_ids([a for a, _, _ in configs])
    models: list[ModelSpec] = []
    images: tuple[tuple[str, int] | None, ...] = manifest.image_refs or (None,)
    total = len(configs) * len(images) * max(len(seeds) for _, _, seeds in configs)
    if total > MAX_MODELS:
        raise r.error("population", f"{total} models (configurations x images x seeds); at most {MAX_MODELS}")
    if total * len(manifest.checkpoint_epochs) > MAX_CHECKPOINTS:  # counted before any model is expanded
        raise r.error("population", f"{total} models x {len(manifest.checkpoint_epochs)} checkpoint epochs give "
                                    f"{total * len(manifest.checkpoint_epochs)} checkpoints; at most "
                                    f"{MAX_CHECKPOINTS}")
    for architecture, training, seeds in configs:
        for image in images:  # inr zoos: each image gets a network (per seed); classifiers: one pass
            for seed in seeds:
                recipe = {k: v for k, v in training.items() if k not in RUN_FIELDS}
                hparams = {"architecture": architecture.name, **architecture.options, **recipe, "seed": seed,
                           "dataset": manifest.dataset["name"]}
                if image is not None:
                    hparams.update(image_index=image[1], image_split=image[0])
                models.append(ModelSpec(len(models), seed, arch_ids[architecture.shape_key], architecture,
                                        training, hparams))
    if not models:
        raise r.error("population", "the population is empty")
    return tuple(models)


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
