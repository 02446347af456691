"""On-disk memo of what is read off a constructed module (its layout, symmetry spec and activation sizes).

All are pure functions of the architecture's declaration and options, but computing them means importing torch
(seconds) and building the module (for a ResNet-18, 11 M parameters). ``zoo plan`` and manifest checks only need
the numbers, so they are kept under ``$WEIGHTZOO_CACHE`` (default ``~/.cache/weightzoo``). The key covers the
declaration (the architecture's dict), the sources of this package and of ``layout.py`` and ``symmetry.py``, and
the versions of weightzoo, torch and torchvision: an edit to any of them is a new key, never a stale value. An
unreadable entry is recomputed; an unwritable cache is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..paths import CACHE_ENV, cache_root  # noqa: F401 - CACHE_ENV: where callers met it first

if TYPE_CHECKING:
    from .base import Architecture

@functools.cache
def _code_digest() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted([*here.glob("*.py"), here.parent / "layout.py", here.parent / "symmetry.py"]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    for dist in ("weightzoo", "torch", "torchvision"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def remember(arch: Architecture, what: str, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON value for (``arch``, ``what``), from the cache when present."""
    key = hashlib.sha256(json.dumps([_code_digest(), what, arch.to_dict()], sort_keys=True).encode()).hexdigest()
    path = cache_root() / "architectures" / f"{arch.name}-{what}-{key[:24]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return value
