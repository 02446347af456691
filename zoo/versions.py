"""The software versions a store records in every metadata row (``RUN_COLUMNS``' ``torch_version``).

One function for every writer: a build (torch imported), an importer and its worker processes (torch perhaps
never imported) must spell one torch the same way, ``2.14.1+cu130`` and not ``2.14.1``, or two stores of the
same software disagree on a column that says which software wrote them.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path


def torch_version() -> str:
    """torch's ``__version__``, local tag included, without importing torch (a store written from numpy rows
    never needs it): the same text whether or not this process imported torch; "none" without torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    return _installed_torch()


@functools.cache
def _installed_torch() -> str:
    """The installed torch's ``__version__``, read from its ``version.py`` (the distribution's version lacks the
    local part, such as ``+cu130``); once per process, since finding it costs milliseconds."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found.group(1)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"
