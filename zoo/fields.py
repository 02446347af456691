"""One declaration of a checked value: type, default, allowed names, range.

Manifest fields (``zoo/manifest/schema.py``) and architecture options (``zoo/architectures/base.py``) are both
values a user writes in a manifest, so both are checked here, by one function, with the same messages. The
caller adds where the value was written (file and field path).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .errors import ZooError, allowed_text
from .registry import Registry


@dataclass(frozen=True)
class Field:
    """A value a manifest may give: its type(s), default and constraints."""

    kind: type | tuple[type, ...]
    default: Any = None
    choices: Collection[Any] | None = None  # a tuple, or a registry: its own names, never a second list
    required: bool = False
    minimum: float | None = None  # inclusive
    positive: bool = False  # strictly > 0
    maximum: float | None = None  # inclusive: where a larger value can only be a mistake (sizes, counts)
    doc: str = ""

    @property
    def allowed(self) -> tuple[Any, ...]:
        """The allowed values exactly as written (a registry's lookup would also take 'ADAM')."""
        choices = self.choices or ()
        return tuple(choices.names()) if isinstance(choices, Registry) else tuple(choices)

    def validate(self, value: Any) -> Any:
        """The value, normalized (an int where a float is accepted becomes a float), or a ``ZooError`` whose
        message says what is allowed; the caller prefixes where the value was written."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join("none" if k is type(None) else k.__name__ for k in kinds)
            raise ZooError(f"expected {names}, got {value!r}")
        if self.choices is not None and value not in self.allowed:
            raise ZooError(allowed_text(value, self.allowed))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._in_range(value)
        return value

    def _in_range(self, value: float) -> None:
        if not math.isfinite(value):
            raise ZooError(f"expected a finite number, got {value!r}")
        if self.positive and value <= 0:
            raise ZooError(f"expected a value > 0, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ZooError(f"expected a value >= {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ZooError(f"expected {self.range_text(isinstance(value, int))}, got {value!r}")

    def range_text(self, integer: bool) -> str:
        """'an integer in [1, 4096]', 'a number in (0, 1]': a bounded value's allowed range."""
        low = self.minimum if self.minimum is not None else (1 if integer else 0) if self.positive else None
        low = int(low) if integer and low is not None else low
        high = int(self.maximum) if integer and self.maximum is not None else self.maximum
        kind = "an integer" if integer else "a number"
        if low is None:
            return f"{kind} <= {high}"
        return f"{kind} in {'(' if self.positive and not integer else '['}{low}, {high}]"
