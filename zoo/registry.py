"""A named registry: decorator registration that rejects duplicates.

One registry per kind (architectures, datasets, ...). Names are validated
against the registry's own keys, never against a second hand-kept list.
An entry may be lazy (``register_lazy``): the registry knows its name from the
start, and imports the module that defines it on first use, so no module has
to be imported for its side effect of registering.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError, ZooError, allowed_text

T = TypeVar("T")
Impl = TypeVar("Impl")  # an implementation attached to a declaration


class Registry(Generic[T]):
    """Name -> item for one kind of thing; names are case-insensitive, and registering a taken name raises, so two
    modules cannot silently claim one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | _Lazy] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name`` (lower-cased); a taken name raises ``ZooError``. Returns ``item``."""
        self._add(name, item)
        return item

    def register_lazy(self, name: str, module: str, attr: str) -> None:
        """Register ``name`` as ``module``'s attribute ``attr`` (absolute module name), imported on first ``get``:
        the name is listed and checked at once, and the module's cost is paid only by whoever uses it."""
        self._add(name, _Lazy(module, attr))

    def _add(self, name: str, item: T | _Lazy) -> None:
        key = name.lower()
        if key in self._items:
            raise ZooError(f"{self.kind} {key!r} is already registered; register it under another name (taken: "
                           f"{', '.join(sorted(self._items))})")
        self._items[key] = item

    def decorator(self, name: str) -> Callable[[T], T]:
        """``register`` as a decorator: ``@REGISTRY.decorator(name)`` above the definition it registers."""

        def wrap(item: T) -> T:
            return self.register(name, item)

        return wrap

    def get(self, name: str) -> T:
        """The item, case-insensitive; an unknown name (or a non-string read from a manifest) raises
        ``UnknownNameError`` listing the registered names."""
        key = name.lower() if isinstance(name, str) else name
        try:
            item = self._items[key]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind}: {allowed_text(name, self._items)}") from None
        if isinstance(item, _Lazy):
            item = self._items[key] = item.load(f"{self.kind} {key!r}")
        return item

    def names(self) -> list[str]:
        """Registered names, lower-cased and sorted."""
        return sorted(self._items)

    def values(self) -> list[T]:
        """The items in registration order (a command table lists its commands as declared); lazy ones are
        imported."""
        return [self.get(key) for key in list(self._items)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


class Declarations(Registry["Declaration"]):
    """Names declared in ``zoo`` (torch-free), implemented elsewhere (``builders``) by name.

    A manifest is validated against the declarations without importing torch; the implementing module
    attaches each implementation with ``@REGISTRY.implement(name)``. A name implemented but not declared,
    or implemented twice, is an error at import time, so the two sides cannot drift apart.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._implementations: dict[str, object] = {}

    def declare(self, name: str, doc: str) -> Declaration:
        """Declare ``name`` with a one-line description (what ``allowed_text`` and docs show)."""
        return self.register(name, Declaration(name.lower(), doc))

    def implement(self, name: str) -> Callable[[Impl], Impl]:
        """Decorator: attach the implementation of the declared ``name``."""
        key = name.lower()

        def attach(item: Impl) -> Impl:
            if key not in self._items:
                raise UnknownNameError(f"{self.kind} {name!r} is implemented but not declared (declare it beside "
                                       f"the others); {allowed_text(name, self._items)}")
            if key in self._implementations:
                raise ZooError(f"{self.kind} {key!r} has two implementations: "
                               f"{_qualname(self._implementations[key])} and {_qualname(item)}")
            self._implementations[key] = item
            return item

        return attach

    def implementation(self, name: str) -> Any:
        """The implementation of ``name``; an unknown name raises listing the declared ones."""
        key = self.get(name).name
        try:
            return self._implementations[key]
        except KeyError:
            raise ZooError(f"{self.kind} {key!r} is declared but not implemented; its implementation attaches "
                           "when the module that implements it is imported (builders)") from None

    def unimplemented(self) -> list[str]:
        """Declared names without an implementation (empty once the implementing modules are imported)."""
        return [n for n in self.names() if n not in self._implementations]


@dataclass(frozen=True)
class _Lazy:
    """A registry entry not imported yet: attribute ``attr`` of module ``module``."""

    module: str
    attr: str

    def load(self, what: str) -> Any:
        item = getattr(importlib.import_module(self.module), self.attr, None)
        if item is None:
            raise ZooError(f"{what} is registered as {self.module}.{self.attr}, which that module does not define")
        return item


@dataclass(frozen=True)
class Declaration:
    """A declared name and what it means, in one line."""

    name: str
    doc: str


def _qualname(item: object) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', type(item).__qualname__)}"
