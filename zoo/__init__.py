"""weightzoo's domain and format: manifests, architectures, the store.

``zoo.open(path_or_url)`` returns a read-only zoo with ``.metadata`` (a
``pyarrow.Table``), ``.state_dict(model_id, epoch)`` and ``.module(model_id, epoch)``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .architectures import get_architecture, list_architectures  # noqa: E402
from .errors import ManifestError, StoreError, StoreNotFoundError, ZooError  # noqa: E402
from .manifest import Manifest, load_manifest  # noqa: E402
from .plan import Plan  # noqa: E402
from .store import Zoo, create, open_zoo, verify  # noqa: E402

open = open_zoo  # noqa: A001 - ``zoo.open(path)`` is the public entry point

__all__ = ["Manifest", "ManifestError", "Plan", "StoreError", "StoreNotFoundError", "Zoo", "ZooError", "create",
           "get_architecture", "list_architectures", "load_manifest", "open", "open_zoo", "verify"]
