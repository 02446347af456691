"""The ``flat`` and ``state_dict`` views: a row as it is stored, whole or cut into the checkpoint's tensors. Their
own module (not named for either view, so that ``loaders.views.flat`` stays the view's function) because both
only reshape, and need nothing but the layout.
"""

from __future__ import annotations

from zoo.layout import Layout

from .base import View


def flat(layout: Layout) -> View:
    """``{"weights": rows}``, the (B, P) rows unchanged: for learners that take one vector per model."""
    return View("flat", lambda rows: {"weights": rows}, lambda batch: batch["weights"])


def state_dict(layout: Layout) -> View:
    """Tensor name -> (B, *shape): each model as its checkpoint's tensors (``Layout.unflatten``)."""
    return View("state_dict", lambda rows: layout.unflatten(rows), lambda batch: layout.flatten(batch))
