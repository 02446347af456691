"""Hugging Face datasets: export a store as a Hub dataset repository, import one back, publish with the Hub.

An export is a second format of the store, so it lives in ``zoo`` beside the first; ``loaders`` (which open an
export or a Hub id as a dataset) and the CLI import it downward. Importing this package costs pyarrow, never
``huggingface_hub``, which only what talks to the Hub imports (it is the ``hf`` extra).
"""

from __future__ import annotations

from .cache import cache_dir, open_source
from .export import DESCRIPTOR, ROW_GROUP_BYTES, SHARD_BYTES, WEIGHTS_COLUMN, dataset_card, export_hf
from .importing import import_hf
from .publish import check_hub_access, push
from .sources import HUB_SCHEME, HubRef, data_files, hub_ref, read_descriptor, resolve_source

__all__ = ["DESCRIPTOR", "HUB_SCHEME", "ROW_GROUP_BYTES", "SHARD_BYTES", "WEIGHTS_COLUMN", "HubRef", "cache_dir",
           "check_hub_access", "data_files", "dataset_card", "export_hf", "hub_ref", "import_hf", "open_source",
           "push", "read_descriptor", "resolve_source"]
