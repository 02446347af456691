"""Importers of published zoo formats: each reads a zoo in its own layout into a weightzoo store.

Each format is an ``ImportSource`` (``common.py``: read and validate everything, then write unit by unit) with
one entry function; ``zoo import NAME`` reaches them through the CLI's one importer registry
(``zoo.cli.IMPORTERS``), which imports this package only when an import runs. The store's layout is the
registered architecture's, so every view and augmentation works on imported zoos.
"""

from __future__ import annotations

from .common import ImportReport, ImportSource
from .modelzoo import import_modelzoo
from .smallcnnzoo import import_smallcnnzoo

__all__ = ["ImportReport", "ImportSource", "import_modelzoo", "import_smallcnnzoo"]
