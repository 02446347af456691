"""Everything that produces checkpoints: the vectorized population trainer and build orchestration.

Names load on first use (PEP 562): ``zoo plan`` reaches ``builders.sizing`` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.lazy import lazy_names

_LAZY = {"BuildReport": "orchestration", "build": "orchestration", "build_groups": "orchestration",
         "Population": "population"}

if TYPE_CHECKING:
    from .orchestration import BuildReport, build, build_groups
    from .population import Population


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["BuildReport", "Population", "build", "build_groups"]
