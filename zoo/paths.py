"""Where things are: store arguments (local paths or URLs) and weightzoo's cache folder.

One module for the helpers that the store, the Hugging Face interop and the importers all need. It sits at the
top of ``zoo`` with no imports of its own, because the architecture cache needs ``cache_root`` and ``zoo.store``
imports the architectures (a module under ``zoo/store`` would make the two import each other).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming weightzoo's cache folder (architecture facts, Hub imports).
CACHE_ENV = "WEIGHTZOO_CACHE"


def is_url(path: str | Path) -> bool:
    """True for a remote fsspec URL (``s3://``, ``hf://``, ...); ``file://`` URLs and ``Path`` objects are local."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_path(path: str | Path) -> Path:
    """The local path of a store argument (``file://`` stripped, ``~`` expanded): one spelling for every caller."""
    text = str(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def cache_root() -> Path:
    """The folder of weightzoo's caches (``$WEIGHTZOO_CACHE``, else ``~/.cache/weightzoo``)."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/weightzoo").expanduser()
