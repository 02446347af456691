"""Views: small pure functions from a batch of flat rows (+ the layout) to a learner's format, and back.

Each view is derived from the layout alone (names, shapes, offsets, roles), so
a new architecture gets every view without a line of code. ``encode`` maps
rows (B, P) to a dict of tensors; ``decode`` maps that dict back to rows where
the view is invertible (so generated tokens become models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zoo.errors import ZooError, allowed_text
from zoo.layout import Layout
from zoo.registry import Registry

from .symmetry import BatchSymmetry
from .tokens import Tokenizer


@dataclass(frozen=True)
class View:
    """A view's two directions; ``decode`` is None for a view that cannot give rows back."""

    name: str
    encode: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    decode: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None
    owner: Any = None  # the object behind encode/decode, for paths that fuse more into it (the Tokenizer)


VIEWS: Registry[Callable[..., View]] = Registry("view")
# the views of their own modules, imported on first use: every view is known without importing any of them
VIEWS.register_lazy("nfn", "loaders.nfn_views", "nfn")
VIEWS.register_lazy("dws", "loaders.nfn_views", "dws")
VIEWS.register_lazy("graph", "loaders.graph_view", "graph")


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


@VIEWS.decorator("flat")
def flat(layout: Layout) -> View:
    """``{"weights": rows}``, the (B, P) rows unchanged: for learners that take one vector per model."""
    return View("flat", lambda rows: {"weights": rows}, lambda batch: batch["weights"])


@VIEWS.decorator("state_dict")
def state_dict(layout: Layout) -> View:
    """Tensor name -> (B, *shape): each model as its checkpoint's tensors (``Layout.unflatten``)."""
    return View("state_dict", lambda rows: layout.unflatten(rows), lambda batch: layout.flatten(batch))



@VIEWS.decorator("tokens")
def tokens(layout: Layout, tokensize: int = 64, spec: Any = None) -> View:
    """SANE-style tokens of ``tokensize`` values (``Tokenizer``, ``view.owner``: with ``spec`` it applies a
    batch's symmetry draws on the way, and cuts windows that read only their own values)."""
    tok = Tokenizer(layout, tokensize, BatchSymmetry(layout, spec) if spec is not None else None)
    return View("tokens", tok.encode, tok.decode, tok)


def random_window(batch: dict[str, torch.Tensor], windowsize: int, generator: torch.Generator | None = None
                  ) -> dict[str, torch.Tensor]:
    """A random window of ``windowsize`` consecutive tokens per sample (SANE's training windows), cut from whole
    encoded rows: the reference that ``Tokenizer.window`` equals without building them."""
    b, t = batch["tokens"].shape[:2]
    if windowsize >= t:
        return batch
    start = torch.randint(0, t - windowsize + 1, (b, 1), generator=generator)
    idx = (start + torch.arange(windowsize)).to(batch["tokens"].device)
    return {k: v.gather(1, idx.view(b, windowsize, *([1] * (v.dim() - 2))).expand(b, windowsize, *v.shape[2:]))
            for k, v in batch.items()}


def check_view(name: str) -> None:
    """Refuse an unknown view name before any work (a ZooError that lists the views and suggests one)."""
    if name not in VIEWS:
        raise ZooError(f"view: {allowed_text(name, VIEWS.names())}")
