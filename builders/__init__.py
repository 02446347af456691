"""Everything that produces checkpoints: the vectorized population trainer and build orchestration.

Names load on first use (PEP 562): ``zoo plan`` reaches ``builders.sizing`` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"BuildReport": "orchestration", "build": "orchestration", "build_groups": "orchestration",
         "Population": "population"}

if TYPE_CHECKING:
    from .orchestration import BuildReport, build, build_groups
    from .population import Population


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'builders' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = ["BuildReport", "Population", "build", "build_groups"]
