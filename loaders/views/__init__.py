"""Views: small pure functions from a batch of flat rows (+ the layout) to a learner's format, and back.

Each view is derived from the layout alone (names, shapes, offsets, roles), so
a new architecture gets every view without a line of code. ``encode`` maps
rows (B, P) to a dict of tensors; ``decode`` maps that dict back to rows where
the view is invertible (so generated tokens become models).

One module per view: ``rows`` (flat, state_dict), ``tokenizer`` (tokens, and the ``Tokenizer`` behind it), ``nfn``
(nfn, dws) and ``graph``. This package holds the registry ``VIEWS``, which lists every view from the start and
imports ``nfn`` and ``graph`` only on first use, and ``make_view``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo.errors import ZooError, allowed_text
from zoo.layout import Layout
from zoo.registry import Registry

from .base import View
from .rows import flat, state_dict
from .tokenizer import random_window, tokens

__all__ = ["VIEWS", "View", "check_view", "flat", "make_view", "random_window", "state_dict", "tokens"]

VIEWS: Registry[Callable[..., View]] = Registry("view")
# the views of their own modules, imported on first use: every view is known without importing any of them
VIEWS.register_lazy("nfn", "loaders.views.nfn", "nfn")
VIEWS.register_lazy("dws", "loaders.views.nfn", "dws")
VIEWS.register_lazy("graph", "loaders.views.graph", "graph")
VIEWS.register("flat", flat)
VIEWS.register("state_dict", state_dict)
VIEWS.register("tokens", tokens)


def make_view(name: str, layout: Layout, spec: Any = None, **options: Any) -> View:
    """Build view ``name``. ``spec`` (the architecture's ``SymmetrySpec``) reaches only the factories that
    take a ``spec`` keyword (nfn, dws, graph need it); an option the factory does not take is an error."""
    import inspect

    factory = VIEWS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p not in ("layout", "spec")]
    for key in options:
        if key not in allowed:
            raise ZooError(f"view {name!r}: unknown option: "
                           + (allowed_text(key, allowed) if allowed else f"got {key!r}; it takes no options"))
    if "spec" in params:
        options["spec"] = spec
    return factory(layout, **options)


def check_view(name: str) -> None:
    """Refuse an unknown view name before any work (a ZooError that lists the views and suggests one)."""
    if name not in VIEWS:
        raise ZooError(f"view: {allowed_text(name, VIEWS.names())}")
