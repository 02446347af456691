"""Compatibility: the ``graph`` view moved to ``loaders.views.graph``; this module re-exports its public names for
code that imports them from here."""

from __future__ import annotations

from .views.graph import EDGE_TYPES, NODE_FEATURES, NODE_TYPES, NeuralGraph, NodeSet, disjoint_union, graph

__all__ = ["EDGE_TYPES", "NODE_FEATURES", "NODE_TYPES", "NeuralGraph", "NodeSet", "disjoint_union", "graph"]
