"""Public names loaded on first use (PEP 562), so importing a package costs none of its heavy dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, names: Mapping[str, str], aliases: Mapping[str, str] | None = None
               ) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: name -> the submodule (relative) that defines it; ``aliases``
    maps a public name to the defining one (``zoo.open`` is ``open_zoo``)."""
    aliases = dict(aliases or {})

    def __getattr__(name: str) -> Any:
        name = aliases.get(name, name)
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{names[name]}", package), name)

    return __getattr__
