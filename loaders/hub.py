"""Compatibility: the Hugging Face export, import and Hub sources moved to ``zoo.hf`` (a second store format,
which belongs to ``zoo``); this module re-exports their public names so ``from loaders.hub import ...`` keeps
working. Patch a name where it is used (``zoo.hf.export.open_zoo``, ``zoo.hf.push``), not here."""

from __future__ import annotations

from zoo.hf import (
    DESCRIPTOR,
    HUB_SCHEME,
    ROW_GROUP_BYTES,
    SHARD_BYTES,
    WEIGHTS_COLUMN,
    HubRef,
    cache_dir,
    check_hub_access,
    data_files,
    dataset_card,
    export_hf,
    hub_ref,
    import_hf,
    open_source,
    push,
    read_descriptor,
    resolve_source,
)

__all__ = ["DESCRIPTOR", "HUB_SCHEME", "ROW_GROUP_BYTES", "SHARD_BYTES", "WEIGHTS_COLUMN", "HubRef", "cache_dir",
           "check_hub_access", "data_files", "dataset_card", "export_hf", "hub_ref", "import_hf", "open_source",
           "push", "read_descriptor", "resolve_source"]
