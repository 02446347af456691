"""weightzoo's domain and format: manifests, architectures, the store.

``zoo.open(path_or_url)`` returns a read-only zoo with ``.metadata`` (a
``pyarrow.Table``), ``.state_dict(model_id, epoch)`` and ``.module(model_id, epoch)``.

The public names are loaded on first use (PEP 562), so ``import zoo`` and ``zoo --help`` cost no zarr, pyarrow or
torch: the command line answers at once, and each command imports only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ManifestError,
    StoreError,
    StoreNotFoundError,
    UnknownNameError,
    UntrustedCodeError,
    ZooError,
)
from .lazy import lazy_names  # noqa: E402

#: Public name -> the module that defines it (``open`` is ``open_zoo``).
_LAZY = {
    "get_architecture": "architectures", "list_architectures": "architectures",
    "Manifest": "manifest", "load_manifest": "manifest", "Plan": "plan",
    "Layout": "layout", "SymmetrySpec": "symmetry",
    "Zoo": "store", "create": "store", "open_zoo": "store", "verify": "store",
}

if TYPE_CHECKING:
    from .architectures import get_architecture, list_architectures
    from .layout import Layout
    from .manifest import Manifest, load_manifest
    from .plan import Plan
    from .store import Zoo, create, open_zoo
    from .store.verify import verify
    from .symmetry import SymmetrySpec

    open = open_zoo  # noqa: A001


__getattr__ = lazy_names(__name__, _LAZY, {"open": "open_zoo"})


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["Layout", "Manifest", "ManifestError", "Plan", "StoreError", "StoreNotFoundError", "SymmetrySpec",
           "UnknownNameError", "UntrustedCodeError", "Zoo", "ZooError", "__version__", "create", "get_architecture",
           "list_architectures", "load_manifest", "open", "open_zoo", "verify"]
