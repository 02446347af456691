"""SIREN: the neural field of the INR zoos (one network per image, mapping pixel coordinates to pixel values).

Sitzmann et al. 2020's sine network: ``len(hidden)`` sine layers ``sin(w0 * (W x + b))`` on 2-D coordinates, then
a linear layer to the image's C channels, plus a constant ``offset``. The weight-space benchmarks built on it
(DWSNets, NFN, neural graphs, ScaleGMN) use 2 -> 32 -> 32 -> C but differ in conventions that decide what a
checkpoint means; each is an option here, so each is a metadata column of the zoo:

======================  ====================================  ====================================
option                  DWSNets (AvivNavon/DWSNets)           NFN (AllanYangZhou/nfn)
======================  ====================================  ====================================
``hidden``              [32, 32]                              [32, 32]
``w0`` / ``first_w0``   30 / 30                               30 / 30
``init_scheme``         "dwsnets": every sine layer           "sitzmann": first layer U(+-1/in),
                        U(+-sqrt(6/in)/w0), zero sine         others U(+-sqrt(6/in)/w0), torch's
                        biases, torch's default output layer  default biases
``offset``              0.5                                   0.0
``coords``              "xy": (column, row)                   "ij": (row, column)
``pixels``              "unit": targets in [0, 1]             "signed": Normalize(0.5, 0.5), [-1, 1]
======================  ====================================  ====================================

The module's input is not the image: resolved with the image shape (C, H, W) as ``in_shape``, the architecture
reads one image's coordinate grid, ``input_shape = (H * W, 2)``, and writes (H * W, C) (``Siren.forward`` takes
any leading axes). ``num_classes`` plays no part. The init convention is named ``init_scheme``, not ``init``:
architecture options and training fields share the metadata's column names, and ``training.init`` is taken.

Symmetries: the units of each sine layer permute (``H1``..``Hn``), and sin is odd, so flipping a unit's sign
(incoming weights and bias, outgoing weights) is exact; sin is not homogeneous, so rescaling is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import MAX_WIDTH, ArchDef, Option

#: Names of the choices, with what each means (the module implements them: ``modules.Siren``).
INIT_SCHEMES = ("sitzmann", "dwsnets")
COORDS = ("ij", "xy")
PIXELS = ("unit", "signed")


def _build(in_shape: Sequence[int], num_classes: int, **options: Any):
    from .modules import Siren

    return Siren(in_shape[0], **options)


def _input_shape(in_shape: Sequence[int], options: Mapping[str, Any]) -> tuple[int, ...]:
    return (int(in_shape[1]) * int(in_shape[2]), 2)


SIREN = ArchDef(
    "siren",
    {"hidden": Option(list, [32, 32], maximum=MAX_WIDTH, shape=True, doc="widths of the sine layers"),
     "w0": Option(float, 30.0, positive=True, maximum=1e4, doc="omega of the hidden sine layers: sin(w0 (W x + b))"),
     "first_w0": Option(float, 30.0, positive=True, maximum=1e4, doc="omega of the first sine layer"),
     "offset": Option(float, 0.0, doc="constant added to the output (DWSNets: 0.5)"),
     "init_scheme": Option(str, "sitzmann", INIT_SCHEMES,
                           doc="sitzmann: first layer U(+-1/in), later layers and the output U(+-sqrt(6/in)/w0), "
                               "torch's default biases; dwsnets: every sine layer U(+-sqrt(6/in)/its w0) with zero "
                               "biases, torch's default output layer"),
     "coords": Option(str, "ij", COORDS,
                      doc="input order over linspace(-1, 1, side): ij (row, column) or xy (column, row)"),
     "pixels": Option(str, "unit", PIXELS,
                      doc="what the output fits: unit (pixel values in [0, 1]) or signed (2 v - 1, in [-1, 1])")},
    _build,
    "SIREN neural field (Sitzmann et al.): 2-D pixel coordinates -> C channel values through sine layers and a "
    "linear output (1,185 parameters for one channel with the default [32, 32]).",
    activation="sin",
    input_shape=_input_shape,
    kind="inr",
)
