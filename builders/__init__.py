"""Everything that produces checkpoints: the vectorized population trainer and build orchestration."""

from .build import BuildReport, build, build_groups
from .population import Population

__all__ = ["BuildReport", "Population", "build", "build_groups"]
