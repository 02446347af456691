"""weightzoo's domain and format: manifests, architectures, the store."""

from __future__ import annotations

__version__ = "0.1.0"
