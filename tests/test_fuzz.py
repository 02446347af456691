"""Hostile manifests: a randomly mutated quickstart manifest is either accepted or refused with a ``ZooError``.

What ``zoo plan`` computes before any training (``load_manifest`` then ``Plan(...).summary()``) must never
end in another exception (a ``TypeError`` from an overflow, a conv's ``RuntimeError``, a failed allocation).
The mutations are what hand-edited files get wrong: wrong types, huge and negative numbers, floats for
integers, empty strings and lists, missing and extra keys, tables where scalars belong.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import tomllib
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zoo.architectures import ARCHITECTURES
from zoo.errors import ZooError
from zoo.manifest import SECTIONS, load_manifest
from zoo.plan import Plan

QUICKSTART = Path(__file__).resolve().parents[1] / "manifests" / "quickstart.toml"
BASE = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
#: The quickstart with its learning rates drawn at random instead of from the grid, so that mutations reach
#: ``[population.random]`` too.
RANDOM = copy.deepcopy(BASE)
RANDOM["population"]["grid"].pop("training.lr")
RANDOM["population"]["random"] = {"draws": 4, "seed": 0, "space": {
    "training.lr": {"log_uniform": [1e-4, 1e-2]}, "training.weight_decay": {"uniform": [0.0, 1e-3]},
    "training.batch_size": {"choice": [16, 32]}}}

HUGE = [2**31, 2**32 + 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**70, 10**30]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([-1, 0, 1, 100_000, 10**9, -(2**70), *HUGE]))
FLOATS = st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 3.0, 16.0, 1e-300, 1e300, -1e300, math.inf, -math.inf,
                          math.nan, 2.0**70])
STRINGS = st.sampled_from(["", " ", "relu", "tanh", "digits", "mnist", "all", "none", "adam", "start", "x" * 300,
                           "Quickstart", "étoile", "../etc", "1"])
SCALARS = st.one_of(INTS, FLOATS, STRINGS, st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["start", "stop", "step", "count", "seed", "a",
                                                                  "name", "uniform", "choice"]), inner, max_size=3)),
    max_leaves=6)
#: Every field a manifest may set (architecture options of every architecture included), as (section, field).
KNOWN = sorted({(section, name) for section, fields in SECTIONS.items() for name in fields}
               | {("architecture", option) for name in ARCHITECTURES.names()
                  for option in ARCHITECTURES.get(name).options})
EXTRA_KEYS = st.sampled_from(["extra", "name", "seeds", "resize", "lr", "epochs", "grid", "zoo", "format_version",
                              "training.lr", "architecture.hidden", "activation", "dropout", ""])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in the manifest a value sits (dict keys and list positions), the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def _near(value: Any) -> list[Any]:
    """Values a careless edit of ``value`` gives: floats for integers, scaled, negated, emptied."""
    if isinstance(value, bool):
        return [int(value), "true", not value]
    if isinstance(value, int):
        return [float(value), -value, value * 10**6, value + 2**70, 0, str(value)]
    if isinstance(value, float):
        return [int(value), -value, value * 1e6, 0.0, str(value)]
    if isinstance(value, str):
        return ["", value.upper(), value + "x", [value], {"value": value}]
    if isinstance(value, list):
        return [[], value[:1], value * 3, [value], {"a": value}]
    return [{}, [value], 1]


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    data = copy.deepcopy(draw(st.sampled_from([BASE, RANDOM])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        op = draw(st.sampled_from(["replace", "near", "delete", "add", "set"] if paths else ["add", "set"]))
        if op == "set":  # a field the manifest may hold, given a hostile value
            section, name = draw(st.sampled_from(KNOWN))
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                data[section] = table = {}
            table[name] = draw(st.one_of(INTS, FLOATS, VALUES))  # numbers first: most fields are numeric
            continue
        if op == "add":
            containers = [()] + [p for p in paths if isinstance(_parent(data, (*p, None)), dict)]
            where = draw(st.sampled_from(containers))
            target = _parent(data, (*where, None))
            target[draw(EXTRA_KEYS)] = draw(VALUES)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        if op == "delete":
            del parent[path[-1]]
        elif op == "near":
            parent[path[-1]] = draw(st.sampled_from(_near(parent[path[-1]])))
        else:
            parent[path[-1]] = draw(VALUES)
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value).replace("inf", "inf")
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict) -> str:
    """A small TOML writer (none ships with Python): top-level scalars, then one table per section."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines.extend(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def test_writer_round_trips_the_quickstart():
    assert tomllib.loads(to_toml(BASE)) == BASE and tomllib.loads(to_toml(RANDOM)) == RANDOM
    assert Plan(load_manifest(QUICKSTART)).summary()["models"] == 72


def _random(**space: Any) -> dict:
    """``RANDOM`` with some of its space replaced."""
    data = copy.deepcopy(RANDOM)
    data["population"]["random"]["space"].update(space)
    return data


def _with(**changes: Any) -> dict:
    """The quickstart with ``section__field=value`` changes (None deletes the field)."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if value is None:
            data[section].pop(name, None)
        else:
            data[section][name] = value
    return data


def _plan(tmp_path_factory, data: dict) -> dict | None:
    """``zoo plan``'s computation on ``data`` written as a file: the summary, or None if refused (ZooError)."""
    path = _write(tmp_path_factory, data)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == data or _has_nan(data)
    try:
        return Plan(load_manifest(path)).summary()
    except ZooError as e:
        assert str(path) in str(e), f"the message does not name the file: {e}"
        return None


# the raw exceptions a 600-manifest fuzz found (issue 12) come first
@example(_with(dataset__resize=1))  # was a conv RuntimeError: input smaller than the kernel
@example(_with(dataset__resize=100_000))  # was a failed allocation
@example(_with(dataset__resize=2**70))  # was a TypeError overflow
@example(_with(dataset__center_crop=2**70))
@example(_with(population__seeds={"start": 0, "stop": 2**70}))  # would expand 2**70 seeds
@example(_with(population__seeds={"start": 0, "stop": 5, "step": 0}))  # range() ValueError
@example(_with(population__seeds={"count": 2**40, "seed": 0}))  # random.sample ValueError
@example(_with(training__epochs=2**70, checkpoints__epochs="all"))
@example(_random(**{"training.weight_decay": {"uniform": ["a", "b"]}}))  # was a TypeError in the draw
@example(_random(**{"training.batch_size": {"int_uniform": [1, 2**70]}}))  # was accepted
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_manifest_is_accepted_or_refused_with_a_zoo_error(tmp_path_factory, data):
    summary = _plan(tmp_path_factory, data)
    if summary is not None:
        assert summary["models"] >= 1
        assert summary["checkpoints"] == summary["models"] * len(summary["checkpoint_epochs"])


@pytest.mark.parametrize("data,message", [
    (_with(dataset__resize=100_000), r"field 'dataset.resize': expected an integer in \[1, 4096\], got 100000"),
    (_with(dataset__resize=2**70), r"field 'dataset.resize': expected an integer in \[1, 4096\], got 1180591620717"),
    (_with(training__batch_size=2**31), r"field 'training.batch_size': expected an integer in \[1, 1048576\]"),
    (_with(training__epochs=10**6), r"field 'training.epochs': expected an integer in \[1, 10000\], got 1000000"),
    (_with(training__train_fraction=1.5), r"field 'training.train_fraction': expected a number in \(0, 1.0\], got 1.5"),
    (_with(dataset__split_seed=-1), r"field 'dataset.split_seed': expected a value >= 0, got -1"),
    (_with(population__seeds={"start": 0, "stop": 5, "step": 0}),
     r"field 'population.seeds': range step must not be 0"),
    (_with(population__seeds={"start": 0, "stop": 2**40}),
     r"field 'population.seeds': range .* gives 1099511627776 seeds; at most 1000000"),
    (_with(population__seeds={"start": 0, "stop": 2**70}), r"field 'population.seeds': range .* leaves \[0, "),
    (_with(population__seeds=[2**70]), r"field 'population.seeds': expected a non-empty list of integers in \[0, "),
    (_with(population__seeds={"count": 2**40, "seed": 0}),
     r"field 'population.seeds': count: expected an integer in \[1, 1000000\]"),
    (_with(population__seeds={"start": 0, "stop": 100_000}),
     r"field 'population': random draws x grid points x seeds give 1200000 models; at most 1000000"),
    (_random(**{"training.weight_decay": {"uniform": [1e-3, "b"]}}),
     r"field 'population.random.space.training.weight_decay': uniform bounds must be finite numbers, got "
     r"\[0.001, 'b'\]"),
    (_random(**{"training.batch_size": {"int_uniform": [1, 2**70]}}),
     r"field 'population.random.space.training.batch_size\[1\]': expected an integer in \[1, 1048576\]"),
    (_random(**{"training.weight_decay": {"uniform": [-5.0, 1.0]}}),
     r"field 'population.random.space.training.weight_decay\[0\]': expected a value >= 0.0, got -5.0"),
])
def test_out_of_range_numbers_are_refused_naming_field_value_and_range(tmp_path_factory, data, message):
    with pytest.raises(ZooError, match=message):
        Plan(load_manifest(_write(tmp_path_factory, data))).summary()


@pytest.mark.parametrize("options", [{"dropout": 2.0}, {"name": "mlp", "hidden": [2**40]}])
def test_architecture_options_out_of_range_are_refused(tmp_path_factory, options):
    data = copy.deepcopy(BASE)
    data["architecture"] = {"name": "smallcnn", **options}
    assert _plan(tmp_path_factory, data) is None


def _write(tmp_path_factory, data: dict) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "manifest.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False
