"""Importers of published zoo formats: each reads a zoo in its own layout into a weightzoo store.

Each format is an ``ImportSource`` (``protocol.py``: read and validate everything, then write unit by unit) with
one entry function; ``zoo import NAME`` reaches them through the CLI's one importer registry
(``zoo.cli.IMPORTERS``), which imports this package only when an import runs. The store's layout is the
registered architecture's, so every view and augmentation works on imported zoos.

Names load on first use (PEP 562): the worker processes of an import (``workers.py``) import
``builders.importers.statedicts`` and ``torchfile`` alone, without zarr, pyarrow or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.lazy import lazy_names

_LAZY = {"ImportReport": "common", "ImportSource": "common", "import_inr": "inr", "import_modelzoo": "modelzoo",
         "import_smallcnnzoo": "smallcnnzoo"}

if TYPE_CHECKING:
    from .inr import import_inr
    from .modelzoo import import_modelzoo
    from .protocol import ImportReport, ImportSource
    from .smallcnnzoo import import_smallcnnzoo


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["ImportReport", "ImportSource", "import_inr", "import_modelzoo", "import_smallcnnzoo"]
