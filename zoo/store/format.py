"""The on-disk format, in one place: names, paths, attribute keys, metadata schema.

A store is a Zarr v3 group::

    STORE/
      zarr.json                     group; attributes["weightzoo"] = the self-description below
      weights/<arch_id>/            one float32 array (rows, row_length) per architecture layout;
                                    shards of (group_size, row_length) = one unit of work,
                                    inner chunks of one row, no compression by default
      metadata/unit-00000042.parquet   one fragment per committed unit (written last, renamed into place)
      metadata/part-*.parquet          compacted fragments

FORMAT.md documents the same for readers without this library.
"""

from __future__ import annotations

import pyarrow as pa

from ..errors import ZooError

FORMAT_NAME = "weightzoo"
#: Version 2 adds the ``plan_version`` attribute (dropout rates no longer split groups) and the ``precision`` and
#: ``step_mode`` columns; version 1 stores are read as they are (their plan is version 1). Version 3 (this
#: library) adds zoo kinds: an inr store's metadata has the columns of ``KIND_COLUMNS["inr"]``; a classifier
#: store's metadata is version 2's. Version 4 (this library) stores derived symmetry specs: composite axis entries
#: (``"h*qk|h*qk|h*v"``), the nonlinearities "odd", "linear" and "fixed", the layout roles "norm_weight",
#: "norm_bias" and "embedding" (transformers), and architecture names ``torchvision:NAME`` and
#: ``package.module:function``; everything else is version 3's.
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
ATTRS_KEY = "weightzoo"
WEIGHTS_GROUP = "weights"
METADATA_DIR = "metadata"
FRAGMENT_PREFIX = "unit-"
PART_PREFIX = "part-"
TMP_PREFIX = ".tmp-"

STATUSES = ("ok", "diverged")

#: Identity and bookkeeping columns, filled in by the store.
ID_COLUMNS: dict[str, pa.DataType] = {
    "model_id": pa.int64(),
    "epoch": pa.int64(),
    "arch": pa.string(),  # the weights array: weights/<arch>
    "row": pa.int64(),  # row in that array
    "unit": pa.int64(),
    "group": pa.int64(),
    "status": pa.string(),
    "crc32": pa.int64(),  # zlib.crc32 of the row's little-endian float32 bytes
}
#: Metrics a builder reports for each checkpoint (null where not measured).
METRIC_COLUMNS: dict[str, pa.DataType] = {
    name: pa.float64()
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gen_gap")
}
#: Provenance a builder reports.
RUN_COLUMNS: dict[str, pa.DataType] = {
    "wall_time_s": pa.float64(),
    "device": pa.string(),
    "precision": pa.string(),  # training.precision: fp32, tf32 or bf16-mixed
    "step_mode": pa.string(),  # how the training step ran: eager, compiled or cuda-graph
    "torch_version": pa.string(),
    "weightzoo_version": pa.string(),
}
#: The fields a builder's (or importer's) per-checkpoint record may carry; the store fills in the rest.
RECORD_FIELDS = frozenset(METRIC_COLUMNS) | frozenset(RUN_COLUMNS) | {"status"}
#: Per-checkpoint columns of a zoo kind beyond the classifier's (``manifest.zoo.kind``).
KIND_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "classifier": {},
    # a neural field: its image's class, the optimizer step, the fit on the pixel grid and on the 2x grid
    "inr": {"label": pa.int64(), "step": pa.int64(), "mse": pa.float64(), "psnr": pa.float64(),
            "psnr_2x": pa.float64()},
}


def record_fields(kind: str = "classifier") -> frozenset[str]:
    """The fields a per-checkpoint record of a zoo of ``kind`` may carry."""
    return RECORD_FIELDS | frozenset(KIND_COLUMNS[kind])


_PY_TO_ARROW = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_(), list: pa.list_(pa.int64())}


def metadata_schema(hparam_columns: dict[str, type], kind: str = "classifier") -> pa.Schema:
    """The full metadata schema: ids, metrics, provenance, the kind's columns, then one typed column per
    hyperparameter."""
    fields = {**ID_COLUMNS, **METRIC_COLUMNS, **RUN_COLUMNS, **KIND_COLUMNS[kind]}
    for name, column_type in hparam_columns.items():
        if name in fields:
            raise ZooError(f"hyperparameter column {name!r} collides with a store column; the store's own columns "
                           f"are {', '.join(fields)} (rename the architecture option)")
        if column_type not in _PY_TO_ARROW:
            raise ZooError(f"hyperparameter column {name!r}: type {getattr(column_type, '__name__', column_type)!r} "
                           f"has no metadata column type; allowed: {', '.join(k.__name__ for k in _PY_TO_ARROW)}")
        fields[name] = _PY_TO_ARROW[column_type]
    return pa.schema([pa.field(k, v) for k, v in fields.items()])


def fragment_name(unit_id: int) -> str:
    """The metadata file of a committed unit (its name is its unit id: listing the directory lists the units)."""
    return f"{FRAGMENT_PREFIX}{unit_id:08d}.parquet"


def unit_of_fragment(name: str) -> int | None:
    """The unit a fragment's file name commits, or None for any other file."""
    if name.startswith(FRAGMENT_PREFIX) and name.endswith(".parquet"):
        try:
            return int(name[len(FRAGMENT_PREFIX):-len(".parquet")])
        except ValueError:
            return None
    return None
