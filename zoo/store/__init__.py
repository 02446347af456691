"""The store: Zarr v3 weights + Parquet metadata, with a commit protocol that loses nothing."""

from .reader import Zoo, open_zoo
from .verify import VerifyReport, verify
from .writer import ZooWriter, create

__all__ = ["Zoo", "ZooWriter", "VerifyReport", "create", "open_zoo", "verify"]
