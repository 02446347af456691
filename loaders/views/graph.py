"""``graph`` view: a checkpoint as a neural graph (Kofinas et al. 2024; Lim et al.'s graph metanetworks).

Nodes are the network's input features/channels, then the output units of every
layer in layout order (``loaders.layers``: a layer is a weight tensor with its
bias and BatchNorm). Per sample (B samples, N nodes, E edges):

- ``node_features`` (B, N, 5): bias, bn weight, bn bias, running mean, running
  var of the unit (``NODE_FEATURES``); zero where the layer has none of them.
- ``node_layer`` (B, N) int: 0 for input nodes, i + 1 for the outputs of layer i.
- ``node_type`` (B, N) int: index into ``NODE_TYPES`` (input, hidden, output).
- ``edge_index`` (B, 2, E) int: (source, target) node of each edge, PyTorch
  Geometric's order; the same for every sample (an expanded view, so
  ``edge_index[0]`` is the (2, E) index; one sample from the dataset has (2, E)).
- ``edge_features`` (B, E, F): the weights of one (input unit -> output unit)
  pair: 1 for a dense layer, the kh*kw kernel flattened for a conv, the k
  weights of one channel for a dense layer reading a flattened feature map
  (spec axis ``"C*k"``); zero-padded at the end to F = the largest of these.
- ``edge_type`` (B, E) int: index into ``EDGE_TYPES``.

Residual streams (one permutation group written by several layers, as the spec
ties them) become ``residual`` edges i -> i of weight 1 (feature ``[1, 0, ...]``,
no parameter). When a layer writes a group whose current node set is among its
own ancestors (the identity shortcut of a block), the edge runs from that node
set to the layer's nodes, which become the group's current node set; when it is
not (a parallel projection shortcut such as a 1x1 downsample conv), the edge runs
from the layer's nodes into the current node set (the sum).

Node order follows the spec: nodes of a layer whose outputs carry group g are
g's units in order, so permuting g's hidden units permutes exactly those nodes
(``NeuralGraph.node_permutation``). Every stored value appears exactly once among
node and edge features (checked on construction), so ``decode`` is exact.
``disjoint_union(batch)`` turns a batch into one big PyG-style graph.

Its own module, which ``VIEWS`` imports when the graph view is first used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.symmetry import SymmetrySpec

from ..layers import NORM_ROLES, Layer, network_layers, require_spec
from .base import View

NODE_FEATURES = ("bias", *NORM_ROLES)
NODE_TYPES = ("input", "hidden", "output")
EDGE_TYPES = ("dense", "conv", "flatten", "residual")


@dataclass(frozen=True)
class NodeSet:
    """A run of nodes: the network's input, or the output units of one layer."""

    name: str  # the layer's weight tensor, or "input"
    group: str | None  # the permutation group its units carry
    start: int
    size: int
    layer: int
    type: str


class NeuralGraph:
    """Precomputed gather indices from a flat row to node and edge features, and back."""

    def __init__(self, layout: Layout, spec: SymmetrySpec) -> None:
        self.layout = layout
        # slots that hold no stored value read one of two columns encode appends to a row: 0, then 1
        zero, one = layout.size, layout.size + 1
        layers = network_layers(layout, spec)
        readers = {lay.in_units for lay in layers if lay.in_group is None}
        if len(readers) != 1:
            raise ZooError("graph view: the layers that read the network input (input axis without a "
                           f"permutation) must agree on its size; found {sorted(readers) or 'none'}")
        self.feature_width = max(lay.values_per_pair for lay in layers)
        width = len(NODE_FEATURES)
        self.node_sets = [NodeSet("input", None, 0, readers.pop(), 0, "input")]
        node_slots = [torch.full((self.node_sets[0].size, width), zero, dtype=torch.int64)]
        src_parts, dst_parts, type_parts, slot_parts = [], [], [], []
        current: dict[str, int] = {}  # group -> the node set that holds its current value
        ancestors: list[set[int]] = [set()]

        def add_edges(src: NodeSet, dst: NodeSet, pairs_src, pairs_dst, kind: str, slots: torch.Tensor):
            src_parts.append(src.start + pairs_src)
            dst_parts.append(dst.start + pairs_dst)
            type_parts.append(torch.full((len(pairs_src),), EDGE_TYPES.index(kind), dtype=torch.int64))
            padded = torch.full((len(pairs_src), self.feature_width), zero, dtype=torch.int64)
            padded[:, :slots.shape[1]] = slots
            slot_parts.append(padded)

        for lay in layers:
            source = 0 if lay.in_group is None else current.get(lay.in_group)
            if source is None:
                raise ZooError(f"graph view: {lay.weight.name!r} reads permutation {lay.in_group!r} before any "
                               "layer writes it")
            src = self.node_sets[source]
            if src.size != lay.in_units:
                raise ZooError(f"graph view: {lay.weight.name!r} reads {lay.in_units} units of "
                               f"{lay.in_group or 'the input'}, but {src.name!r} has {src.size}")
            start = self.node_sets[-1].start + self.node_sets[-1].size
            dst = NodeSet(lay.weight.name, lay.out_group, start, lay.out_units, lay.index + 1,
                          "output" if lay.out_group is None else "hidden")
            new = len(self.node_sets)
            self.node_sets.append(dst)
            node_slots.append(_node_slots(lay, zero))
            ancestors.append({source} | ancestors[source])
            # weight (out, in, *kernel) flattened is already (edge, value) in (out-major, in-minor) order
            out_idx = torch.arange(lay.out_units).repeat_interleave(lay.in_units)
            in_idx = torch.arange(lay.in_units).repeat(lay.out_units)
            slots = lay.weight.offset + torch.arange(lay.weight.size).view(-1, lay.values_per_pair)
            add_edges(src, dst, in_idx, out_idx, lay.kind, slots)
            group = lay.out_group
            if group is None:
                continue
            if group not in current:
                current[group] = new
                continue
            held = current[group]
            unit = torch.arange(lay.out_units)
            ones = torch.full((lay.out_units, 1), one, dtype=torch.int64)
            if held in ancestors[new]:  # identity shortcut: the earlier value adds into this layer's sum
                add_edges(self.node_sets[held], dst, unit, unit, "residual", ones)
                current[group] = new
            else:  # a parallel branch (projection shortcut) adds into the current sum
                add_edges(dst, self.node_sets[held], unit, unit, "residual", ones)
                ancestors[held] |= {new} | ancestors[new]

        self.num_nodes = self.node_sets[-1].start + self.node_sets[-1].size
        self.node_layer = torch.cat([torch.full((s.size,), s.layer) for s in self.node_sets])
        self.node_type = torch.cat([torch.full((s.size,), NODE_TYPES.index(s.type)) for s in self.node_sets])
        self.edge_index = torch.stack([torch.cat(src_parts), torch.cat(dst_parts)])
        self.edge_type = torch.cat(type_parts)
        size = layout.size
        self.node_gather = torch.cat(node_slots).view(-1)
        self.edge_gather = torch.cat(slot_parts).view(-1)
        counts = torch.bincount(torch.cat([self.node_gather, self.edge_gather]), minlength=size + 2)[:size]
        if not bool((counts == 1).all()):  # every stored value appears exactly once
            raise ZooError("graph view does not cover the layout exactly once")
        self._inverse: tuple[torch.Tensor, ...] | None = None

    @property
    def num_edges(self) -> int:
        """Edges per graph (E): every model of the layout has the same graph, only its features differ."""
        return self.edge_index.shape[1]

    # --- encode / decode ---------------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows (B, P) as the keys of the module docstring; the integer tensors are expanded views, not copies."""
        if rows.dim() != 2 or rows.shape[1] != self.layout.size:
            raise ZooError(f"graph view: rows of shape {tuple(rows.shape)}; expected (B, {self.layout.size})")
        b, dev = rows.shape[0], rows.device
        ext = torch.cat([rows, rows.new_zeros(b, 1), rows.new_ones(b, 1)], dim=1)
        nodes = ext.index_select(1, self.node_gather.to(dev)).view(b, self.num_nodes, len(NODE_FEATURES))
        edges = ext.index_select(1, self.edge_gather.to(dev)).view(b, self.num_edges, self.feature_width)
        return {"node_features": nodes, "node_layer": self.node_layer.to(dev).expand(b, -1),
                "node_type": self.node_type.to(dev).expand(b, -1),
                "edge_index": self.edge_index.to(dev).expand(b, -1, -1), "edge_features": edges,
                "edge_type": self.edge_type.to(dev).expand(b, -1)}

    def decode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rows (B, P) from ``node_features`` and ``edge_features`` alone (exact: each value is stored once)."""
        nodes = self._get(batch, "node_features", (self.num_nodes, len(NODE_FEATURES)))
        edges = self._get(batch, "edge_features", (self.num_edges, self.feature_width))
        if self._inverse is None:  # (slot, position) pairs of stored values, built on first use
            size = self.layout.size
            self._inverse = tuple(x for g in (self.node_gather, self.edge_gather)
                                  for x in (torch.nonzero(g < size).view(-1), g[g < size]))
        n_slot, n_pos, e_slot, e_pos = (x.to(nodes.device) for x in self._inverse)
        b = nodes.shape[0]
        rows = nodes.new_empty(b, self.layout.size)
        rows[:, n_pos] = nodes.reshape(b, -1)[:, n_slot]
        rows[:, e_pos] = edges.reshape(b, -1)[:, e_slot]
        return rows

    def _get(self, batch: Mapping[str, torch.Tensor], key: str, shape: tuple[int, int]) -> torch.Tensor:
        if key not in batch:
            raise ZooError(f"graph batch lacks {key!r}")
        value = batch[key]
        if tuple(value.shape[1:]) != shape:
            raise ZooError(f"graph batch: {key!r} has shape {tuple(value.shape)}; expected (B, {shape[0]}, "
                           f"{shape[1]})")
        return value

    # --- symmetry ------------------------------------------------------------------------------
    def node_permutation(self, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(N,) index: node ``j`` of the permuted network is node ``index[j]`` of the original, for unit
        permutations ``perms`` (group -> new-to-old order, as ``SymmetrySpec.transform`` takes them)."""
        index = torch.arange(self.num_nodes)
        for s in self.node_sets:
            if s.group is not None and s.group in perms:
                index[s.start:s.start + s.size] = s.start + perms[s.group].to(torch.int64).cpu()
        return index


def _node_slots(lay: Layer, zero: int) -> torch.Tensor:
    """(out, 5) flat positions of a layer's bias and BatchNorm values per unit (``zero`` where absent)."""
    slots = torch.full((lay.out_units, len(NODE_FEATURES)), zero, dtype=torch.int64)
    for col, role in enumerate(NODE_FEATURES):
        t = lay.bias if role == "bias" else lay.norm.get(role)
        if t is not None:
            slots[:, col] = t.offset + torch.arange(t.size)
    return slots


def disjoint_union(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of graphs as one graph of B * N nodes (PyTorch Geometric's batching): ``x`` (B*N, 5),
    ``edge_index`` (2, B*E) with per-sample node offsets, ``edge_attr`` (B*E, F), ``batch`` (B*N,) sample id
    of each node, and ``node_layer``, ``node_type``, ``edge_type`` flattened alike."""
    for key in ("node_features", "edge_index", "edge_features"):
        if key not in batch:
            raise ZooError(f"not a graph batch: missing {key!r}")
    nodes, index = batch["node_features"], batch["edge_index"]
    b, n = nodes.shape[:2]
    offsets = (torch.arange(b, device=index.device) * n).view(b, 1, 1)
    out = {"x": nodes.reshape(b * n, -1),
           "edge_index": (index + offsets).transpose(0, 1).reshape(2, -1),
           "edge_attr": batch["edge_features"].reshape(-1, batch["edge_features"].shape[-1]),
           "batch": torch.arange(b, device=nodes.device).repeat_interleave(n)}
    for key in ("node_layer", "node_type", "edge_type"):
        if key in batch:
            out[key] = batch[key].reshape(-1)
    return out


def graph(layout: Layout, spec: SymmetrySpec | None = None) -> View:
    """The ``NeuralGraph`` of ``layout``; needs the architecture's symmetry spec to connect the layers."""
    g = NeuralGraph(layout, require_spec("graph", spec))
    return View("graph", g.encode, g.decode)
