"""``nfn`` and ``dws`` views: one tensor per layer weight and bias, in the shapes NFN and DWSNets expect.

Both views read the layers off the layout and symmetry spec (``loaders.layers``)
and emit, for layer ``i`` in layout order (``L`` layers, ``B`` samples):

=============  ======================================  ======================================
key            ``nfn`` (NFN's ``WeightSpaceFeatures``)  ``dws`` (DWSNets)
=============  ======================================  ======================================
``weight.i``   (B, 1, out, in[, kh, kw])                (B, in, out, kh*kw) (dense: ..., 1)
``bias.i``     (B, 1, out)                              (B, out, 1)
``norm.i``     (B, 4, out)                              (B, out, 4)
=============  ======================================  ======================================

- A dense layer reading a flattened (C, H, W) feature map (spec axis ``"C*k"``,
  k = H*W) is split per channel, like a conv with a kernel of k values:
  nfn (B, 1, out, C, 1, k), a 1 x k kernel, since NFN's layers take only 4-D
  (dense) and 6-D (conv) weights (the equivariance is the same: the channel
  permutation acts on C alone, the k values move together); dws
  (B, C, out, k). Its in-axis then has the size of the previous layer's
  out-axis.
- A layer without a bias gets a zero ``bias.i`` (both libraries want one per
  layer); decode ignores it.
- ``norm.i`` exists only for layers followed by a BatchNorm and stacks its
  (bn weight, bn bias, running mean, running var) per output unit, as four
  channels beside the bias; roles the BatchNorm lacks are zero.
- Residual networks: layers are listed in layout order (a ResNet's 1x1
  downsample convs included); NFN's and DWSNets' layer-chain equivariance does
  not describe residual streams, use the ``graph`` view for those.

``weights_and_biases(batch)`` returns the two tuples both libraries take:
``WeightSpaceFeatures(*weights_and_biases(batch))`` (NFN), ``model(weights_and_biases(batch))`` (DWSNets).

Both views share ``LayerTensors``, so they share this module, which ``VIEWS`` imports when one of them is first
used.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.symmetry import SymmetrySpec

from ..layers import NORM_ROLES, Layer, network_layers, require_spec
from .base import View

STYLES = ("nfn", "dws")


class LayerTensors:
    """Per-layer weight/bias/norm tensors of a batch of rows, NFN- or DWS-shaped, and back."""

    def __init__(self, layout: Layout, spec: SymmetrySpec, style: str) -> None:
        if style not in STYLES:
            raise ZooError(f"layer tensor style {style!r}; allowed: {', '.join(STYLES)}")
        self.layout, self.style = layout, style
        self.layers: list[Layer] = network_layers(layout, spec)
        placed = sum(lay.weight.size + (lay.bias.size if lay.bias else 0) + sum(t.size for t in lay.norm.values())
                     for lay in self.layers)
        if placed != layout.size:  # network_layers places each tensor once; this guards the arithmetic
            raise ZooError(f"{style} view places {placed} values of a {layout.size}-value layout")
        self.shapes = {key: shape for lay in self.layers for key, shape in self._shapes(lay).items()}

    # --- shapes of one sample ----------------------------------------------------------------
    def _kernel(self, lay: Layer) -> tuple[int, ...]:
        """Trailing weight axes of one (out, in) pair in this style: nfn writes a flattened-map dense layer's
        k values as a 1 x k kernel (NFN's layers take 2-D kernels only); dws flattens every kernel."""
        if self.style == "nfn":
            return (1, *lay.kernel) if lay.kind == "flatten" else lay.kernel
        return (lay.values_per_pair,)

    def _shapes(self, lay: Layer) -> dict[str, tuple[int, ...]]:
        i, out, inp, kernel = lay.index, lay.out_units, lay.in_units, self._kernel(lay)
        if self.style == "nfn":
            shapes = {f"weight.{i}": (1, out, inp, *kernel), f"bias.{i}": (1, out)}
            if lay.norm:
                shapes[f"norm.{i}"] = (len(NORM_ROLES), out)
        else:
            shapes = {f"weight.{i}": (inp, out, *kernel), f"bias.{i}": (out, 1)}
            if lay.norm:
                shapes[f"norm.{i}"] = (out, len(NORM_ROLES))
        return shapes

    # --- encode / decode ---------------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows (B, P) as ``weight.i``, ``bias.i`` and ``norm.i`` in this style's shapes (module docstring)."""
        if rows.dim() != 2 or rows.shape[1] != self.layout.size:
            raise ZooError(f"{self.style} view: rows of shape {tuple(rows.shape)}; expected (B, {self.layout.size})")
        b = rows.shape[0]
        out: dict[str, torch.Tensor] = {}
        for lay in self.layers:
            i = lay.index
            w = rows[:, lay.weight.offset:lay.weight.stop].reshape(b, lay.out_units, lay.in_units,
                                                                    *self._kernel(lay))
            bias = (rows[:, lay.bias.offset:lay.bias.stop] if lay.bias is not None
                    else rows.new_zeros(b, lay.out_units))
            if self.style == "nfn":
                out[f"weight.{i}"] = w.unsqueeze(1).contiguous()
                out[f"bias.{i}"] = bias.unsqueeze(1).contiguous()
            else:
                out[f"weight.{i}"] = w.transpose(1, 2).contiguous()
                out[f"bias.{i}"] = bias.unsqueeze(2).contiguous()
            if lay.norm:
                stats = torch.stack([rows[:, t.offset:t.stop] if (t := lay.norm.get(r)) is not None
                                     else rows.new_zeros(b, lay.out_units) for r in NORM_ROLES], dim=1)
                out[f"norm.{i}"] = stats if self.style == "nfn" else stats.transpose(1, 2).contiguous()
        return out

    def decode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rows (B, P); a key missing or of the wrong shape is a ZooError; zero biases of bias-free layers are
        ignored."""
        first = self._get(batch, "weight.0")
        b = first.shape[0]
        rows = first.new_empty(b, self.layout.size)
        for lay in self.layers:
            i = lay.index
            w = self._get(batch, f"weight.{i}")
            if self.style == "dws":
                w = w.transpose(1, 2)
            rows[:, lay.weight.offset:lay.weight.stop] = w.reshape(b, -1)
            if lay.bias is not None:
                rows[:, lay.bias.offset:lay.bias.stop] = self._get(batch, f"bias.{i}").reshape(b, -1)
            if lay.norm:
                stats = self._get(batch, f"norm.{i}")
                if self.style == "dws":
                    stats = stats.transpose(1, 2)
                for k, role in enumerate(NORM_ROLES):
                    if role in lay.norm:
                        t = lay.norm[role]
                        rows[:, t.offset:t.stop] = stats[:, k]
        return rows

    def _get(self, batch: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
        if key not in batch:
            raise ZooError(f"{self.style} batch lacks {key!r} (a {len(self.layers)}-layer network needs "
                           f"weight.0..{len(self.layers) - 1}, bias.*, and norm.* where a BatchNorm follows)")
        value = batch[key]
        if tuple(value.shape[1:]) != self.shapes[key]:
            raise ZooError(f"{self.style} batch: {key!r} has shape {tuple(value.shape)}; expected "
                           f"(B, {', '.join(map(str, self.shapes[key]))})")
        return value


def weights_and_biases(batch: Mapping[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``(weights, biases)`` tuples in layer order from an nfn or dws batch (other keys are ignored)."""
    n = sum(1 for k in batch if k.startswith("weight."))
    missing = [k for i in range(n) for k in (f"weight.{i}", f"bias.{i}") if k not in batch]
    if n == 0 or missing:
        raise ZooError(f"not an nfn/dws batch: missing {missing[0] if missing else 'weight.0'!r}")
    return tuple(batch[f"weight.{i}"] for i in range(n)), tuple(batch[f"bias.{i}"] for i in range(n))


def nfn(layout: Layout, spec: SymmetrySpec | None = None) -> View:
    """NFN's layout, one tensor per layer weight and bias; needs the architecture's symmetry spec."""
    lt = LayerTensors(layout, require_spec("nfn", spec), "nfn")
    return View("nfn", lt.encode, lt.decode)


def dws(layout: Layout, spec: SymmetrySpec | None = None) -> View:
    """DWSNets' layout (input axis first); needs the architecture's symmetry spec."""
    lt = LayerTensors(layout, require_spec("dws", spec), "dws")
    return View("dws", lt.encode, lt.decode)
