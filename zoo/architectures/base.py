"""What an architecture declares, and the resolved architecture a zoo stores.

An ``ArchDef`` is the declaration: its options (type, default, choices, and
whether they change tensor shapes), a constructor, and a function giving its
symmetry table. An ``Architecture`` is that declaration resolved for one
dataset (input shape, class count) and one set of options; its layout and
symmetry spec are derived from the constructed module, never written twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import nn

from ..errors import ZooError, allowed_text
from ..layout import Layout
from ..symmetry import SymmetrySpec

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


@dataclass(frozen=True)
class Option:
    kind: type | tuple[type, ...]
    default: Any
    choices: tuple[Any, ...] | None = None
    shape: bool = False  # True when the option changes tensor shapes (hence the layout)
    doc: str = ""

    def check(self, value: Any, where: str) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if list in kinds and isinstance(value, (list, tuple)):
            value = [int(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
            if not all(isinstance(v, int) and v > 0 for v in value):
                raise ZooError(f"field {where!r}: expected a list of positive integers, got {value!r}")
            return value
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ZooError(f"field {where!r}: expected {names}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ZooError(f"field {where!r}: {allowed_text(value, self.choices)}")
        return value


ACTIVATION_OPTION = Option(str, "relu", tuple(sorted(ACTIVATIONS)), doc="hidden-unit activation")
DROPOUT_OPTION = Option(float, 0.0, doc="dropout probability after each activation")


@dataclass(frozen=True)
class ArchDef:
    name: str
    options: Mapping[str, Option]
    build: Callable[..., nn.Module]  # build(in_shape, num_classes, **options)
    symmetry: Callable[[Layout, Mapping[str, Any]], tuple[dict, dict]]  # -> (axes, nonlinearity)
    doc: str = ""

    def resolve(self, in_shape: tuple[int, int, int], num_classes: int, options: Mapping[str, Any] | None = None,
                where: str = "architecture") -> Architecture:
        options = dict(options or {})
        unknown = set(options) - set(self.options)
        if unknown:
            bad = sorted(unknown)[0]
            raise ZooError(f"field '{where}.{bad}': unknown option of {self.name!r}; "
                           f"{allowed_text(bad, self.options) if self.options else 'it takes no options'}")
        full = {k: opt.check(options.get(k, opt.default), f"{where}.{k}") for k, opt in self.options.items()}
        return Architecture(self.name, tuple(int(x) for x in in_shape), int(num_classes),
                            json.dumps(full, sort_keys=True))


@dataclass(frozen=True)
class Architecture:
    """One architecture resolved for an input shape, class count and options."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    options_json: str = field(default="{}")

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    @property
    def definition(self) -> ArchDef:
        from . import ARCHITECTURES

        return ARCHITECTURES.get(self.name)

    @property
    def shape_key(self) -> str:
        """Identity of the layout: everything that changes a tensor shape."""
        shaping = {k: v for k, v in self.options.items() if self.definition.options[k].shape}
        return json.dumps([self.name, list(self.in_shape), self.num_classes, shaping], sort_keys=True)

    def module(self) -> nn.Module:
        """A freshly initialized module (torch's default init), in train mode."""
        return self.definition.build(self.in_shape, self.num_classes, **self.options)

    @cached_property
    def layout(self) -> Layout:
        return Layout.from_module(self.module())

    @cached_property
    def symmetry(self) -> SymmetrySpec:
        axes, nonlinearity = self.definition.symmetry(self.layout, self.options)
        return SymmetrySpec.build(self.layout, axes, nonlinearity)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "options": self.options}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Architecture:
        return cls(d["name"], tuple(d["in_shape"]), int(d["num_classes"]), json.dumps(d["options"], sort_keys=True))
