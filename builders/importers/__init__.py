"""Importers of published zoo formats: each reads a zoo in its own layout into a weightzoo store.

``IMPORTERS`` maps a format name to its function ``(src, store, **options) -> ImportReport``; the store's
layout is the registered architecture's, so every view and augmentation works on imported zoos.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.registry import Registry

from .common import ImportReport
from .modelzoo import import_modelzoo
from .smallcnnzoo import import_smallcnnzoo

IMPORTERS: Registry[Callable[..., ImportReport]] = Registry("importer")
IMPORTERS.register("modelzoo", import_modelzoo)
IMPORTERS.register("smallcnnzoo", import_smallcnnzoo)


def import_zoo(format: str, src: str | Path, store: str | Path, **options: Any) -> ImportReport:  # noqa: A002
    """Import ``src`` (in the named published format) into the store at ``store``."""
    return IMPORTERS.get(format)(src, store, **options)


__all__ = ["IMPORTERS", "ImportReport", "import_modelzoo", "import_smallcnnzoo", "import_zoo"]
