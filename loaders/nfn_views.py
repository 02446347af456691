"""Compatibility: the ``nfn`` and ``dws`` views moved to ``loaders.views.nfn``; this module re-exports their public
names for code that imports them from here."""

from __future__ import annotations

from .views.nfn import STYLES, LayerTensors, dws, nfn, weights_and_biases

__all__ = ["STYLES", "LayerTensors", "dws", "nfn", "weights_and_biases"]
