"""Reading a zoo: attributes, metadata, batched rows, state dicts and modules."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ..architectures import Architecture
from ..errors import StoreError, StoreNotFoundError, ZooError
from ..layout import Layout
from ..manifest import Manifest
from ..paths import is_url, local_path
from ..plan import Plan
from ..symmetry import SymmetrySpec
from . import format as fmt
from .attributes import architecture_attrs, check_attributes, check_plan, stored_manifest
from .rows import RowReader, check_rows

if TYPE_CHECKING:  # state dicts and modules import torch when asked for; reading metadata needs none
    import torch
    from torch import nn
    from zarr.abc.store import Store


class Zoo:
    """A read-only view of a store (local path or fsspec URL).

    ``metadata`` holds one row per committed checkpoint; rows without
    metadata (an unfinished unit) are invisible by construction.
    ``storage_options`` go to fsspec (credentials, ``endpoint_url``, ...).
    ``verify``: check every row read (``read_rows``, ``state_dict``, ``module``) against the ``crc32``
    recorded in its metadata and raise a ``StoreError`` naming the model and epoch of a damaged one; off by
    default, since it costs one checksum per row (``zoo verify`` checks a whole store).
    """

    read_only = True

    def __init__(self, path: str | Path, *, storage_options: dict | None = None, verify: bool = False) -> None:
        self.url = str(path)
        self.verify = bool(verify)
        self.local = None if is_url(path) else local_path(path)
        self.storage_options = dict(storage_options or {})
        self._pid = os.getpid()
        self._fs: tuple[fsspec.AbstractFileSystem, str] | None = None
        try:
            self.group = self._open_group(mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as e:
            hint = ("; check the URL, and the credentials and endpoint (storage_options, or environment variables "
                    "such as AWS_ENDPOINT_URL)" if self.local is None else "")
            raise StoreNotFoundError(f"{self.url}: no weightzoo store here ({type(e).__name__}){hint}") from None
        except (ValueError, TypeError, RecursionError, MemoryError) as e:  # a zarr.json that is no metadata
            raise StoreError(f"{self.url}: zarr.json is not valid group metadata ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None
        attrs = self.group.attrs.asdict().get(fmt.ATTRS_KEY)
        if not attrs or not isinstance(attrs, dict) or attrs.get("format") != fmt.FORMAT_NAME:
            raise StoreNotFoundError(f"{self.url}: a zarr group, but not a weightzoo store (no '{fmt.ATTRS_KEY}' "
                                     "attribute)")
        if attrs.get("format_version") not in fmt.READABLE_VERSIONS:
            raise StoreError(f"{self.url}: format version {attrs.get('format_version')!r}; this library reads "
                             f"{', '.join(map(str, fmt.READABLE_VERSIONS))}")
        check_attributes(attrs, self.url)
        self.attrs: dict[str, Any] = attrs
        self._described: dict[str, tuple[Layout, SymmetrySpec]] = {}
        self._readers: dict[str, RowReader] = {}
        self._arrays: dict[str, zarr.Array] = {}
        self._metadata: pa.Table | None = None
        self._checksums: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # --- plumbing ------------------------------------------------------------------
    def _open_group(self, mode: Literal["r", "r+"]) -> zarr.Group:
        store: Store
        if self.local is not None:
            store = zarr.storage.LocalStore(self.local, read_only=mode == "r")
        else:
            store = zarr.storage.FsspecStore.from_url(self.url, read_only=mode == "r",
                                                      storage_options=self.storage_options)
        return zarr.open_group(store, mode=mode, zarr_format=3)  # no probing for v2 files: requests on a URL

    def _check_process(self) -> None:
        """Reopen a remote store in a forked process (a DataLoader worker): async filesystems such as s3fs
        and zarr's store hold clients bound to an event loop thread of the parent, which the child lacks."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        if self.local is None:
            self._fs = None
            self._arrays.clear()
            self._readers.clear()
            self.group = self._open_group(mode="r" if self.read_only else "r+")

    @property
    def fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """(filesystem, root path) for the files beside the zarr hierarchy (metadata)."""
        self._check_process()
        if self._fs is None:
            if self.local is not None:
                self._fs = fsspec.filesystem("file"), str(self.local)
            else:
                fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
                self._fs = fs, root.rstrip("/")
        return self._fs

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fs"] = None
        # derived views (metadata table, expanded manifest and plan, row index) are rebuilt lazily where used:
        # DataLoader workers read rows and need none of them
        state["_metadata"] = None
        state["_checksums"] = {}
        for name in ("manifest", "plan", "schema", "_row_index"):
            state.pop(name, None)
        return state

    # --- description -----------------------------------------------------------------
    @cached_property
    def manifest(self) -> Manifest:
        """The manifest the store was created from, read from its attributes (the file need not exist). It is data:
        its architectures carry the stored layouts and specs, and a factory it names is never called."""
        return stored_manifest(self.attrs, self.url)

    @cached_property
    def plan(self) -> Plan:
        """The plan under the store's recorded group size and plan version: rows are found where they were written."""
        plan = Plan(self.manifest, self.attrs["group_size"], self.attrs.get("plan_version", 1))
        check_plan(plan, self.attrs, self.url)
        return plan

    @property
    def arch_ids(self) -> list[str]:
        """The store's architecture ids, in the order of its attributes."""
        return list(self.attrs["architectures"])

    def _arch_attrs(self, arch_id: str) -> dict[str, Any]:
        try:
            return self.attrs["architectures"][arch_id]
        except KeyError:
            raise ZooError(f"{self.url}: no architecture {arch_id!r}; the store has {', '.join(self.arch_ids)}"
                           ) from None

    def architecture(self, arch_id: str) -> Architecture:
        """The resolved architecture stored for ``arch_id`` (untrusted: a factory it names is never called); an
        unknown id raises ``ZooError`` listing the store's."""
        d = self._arch_attrs(arch_id).get("architecture")
        if not (isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("options"), dict)
                and isinstance(d.get("in_shape"), list) and len(d["in_shape"]) == 3
                and all(isinstance(s, int) and s > 0 for s in d["in_shape"] + [d.get("num_classes")])):
            raise StoreError(f"{self.url}: architectures[{arch_id!r}]: 'architecture' must be an object with a name, "
                             "in_shape (3 positive integers), num_classes (a positive integer) and options (an "
                             "object)")
        return Architecture.from_dict(d)

    def _description(self, arch_id: str) -> tuple[Layout, SymmetrySpec]:
        if arch_id not in self._described:
            self._described[arch_id] = architecture_attrs(self._arch_attrs(arch_id),
                                                          f"{self.url}: architectures[{arch_id!r}]")
        return self._described[arch_id]

    def layout(self, arch_id: str) -> Layout:
        """Where each tensor sits in a row of ``arch_id``'s weights, as stored (no torch needed), checked."""
        return self._description(arch_id)[0]

    def symmetry(self, arch_id: str) -> SymmetrySpec:
        """The symmetry table stored for ``arch_id``, checked against its layout."""
        return self._description(arch_id)[1]

    def weights(self, arch_id: str) -> zarr.Array:
        """The raw zarr array of ``arch_id``'s rows; only rows named by ``metadata`` hold a committed checkpoint."""
        self._check_process()
        if arch_id not in self._arrays:
            self._arch_attrs(arch_id)
            name = f"{fmt.WEIGHTS_GROUP}/{arch_id}"
            try:
                array = self.group[name]
            except KeyError:
                raise StoreError(f"{self.url}: {name} is missing; the store is incomplete") from None
            except (ValueError, TypeError, RecursionError, MemoryError) as e:
                raise StoreError(f"{self.url}: {name}/zarr.json is not valid array metadata ({type(e).__name__}: "
                                 f"{str(e)[:200]})") from None
            if not isinstance(array, zarr.Array):
                raise StoreError(f"{self.url}: {name} is a group, not an array")
            self._check_array(name, array, arch_id)
            self._arrays[arch_id] = array
        return self._arrays[arch_id]

    def _check_array(self, name: str, array: zarr.Array, arch_id: str) -> None:
        """The array is what the attributes describe: float32, (rows, row length), one unit per shard."""
        expected = (self._arch_attrs(arch_id)["rows"], self.layout(arch_id).size)
        if tuple(array.shape) != expected or array.dtype != np.float32:
            raise StoreError(f"{self.url}: {name} is a {array.dtype} array of shape {tuple(array.shape)}; the "
                             f"attributes describe float32 {expected} (rows, row length)")
        shard_rows = array.shards[0] if array.shards else array.chunks[0]
        if shard_rows != self.attrs["group_size"]:
            raise StoreError(f"{self.url}: {name} has shards of {shard_rows} rows; the group size is "
                             f"{self.attrs['group_size']}")

    # --- metadata --------------------------------------------------------------------
    def metadata_files(self) -> list[str]:
        """Committed metadata files: compacted parts, then fragments not covered by a part."""
        return self._committed()[0]

    def _committed(self) -> tuple[list[str], set[int]]:
        """(metadata files, committed unit ids) from one listing: a fragment's name is its unit (it exists only
        once committed) and a compacted part's ``unit`` column lists its units, so no fragment is read."""
        fs, root = self.fs
        directory = f"{root}/{fmt.METADATA_DIR}"
        fs.invalidate_cache(directory)  # listings are cached per filesystem (s3fs): fragments come and go
        try:
            names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False))
        except FileNotFoundError:
            return [], set()
        parts = [n for n in names if n.startswith(fmt.PART_PREFIX) and n.endswith(".parquet")]
        covered: set[int] = set()
        for name in parts:
            covered.update(_read_parquet(fs, f"{directory}/{name}", columns=["unit"], max_rows=self._max_rows
                                         ).column("unit").to_pylist())
        fragment_units = {n: u for n in names if (u := fmt.unit_of_fragment(n)) is not None and u not in covered}
        fragments = list(fragment_units)
        units = covered | set(fragment_units.values())
        return [f"{directory}/{n}" for n in parts + fragments], units

    @cached_property
    def schema(self) -> pa.Schema:
        """The Arrow schema every metadata file of this zoo has (fixed columns, then its hyperparameter columns)."""
        return fmt.metadata_schema(self.manifest.hparam_columns(), self.manifest.kind)

    def refresh(self) -> None:
        """Forget cached metadata and shard indexes (the store changed)."""
        self._metadata = None
        for reader in self._readers.values():
            reader.close()
        self.__dict__.pop("_row_index", None)
        self._checksums.clear()

    @property
    def metadata(self) -> pa.Table:
        """One row per committed checkpoint, sorted by (model_id, epoch)."""
        if self._metadata is None:
            fs, _ = self.fs
            schema = self.schema
            tables = [_conform(_read_parquet(fs, f, max_rows=self._max_rows), schema) for f in self.metadata_files()]
            if sum(t.num_rows for t in tables) > self.plan.checkpoints:
                raise StoreError(f"{self.url}: the metadata holds {sum(t.num_rows for t in tables)} rows; the plan "
                                 f"has {self.plan.checkpoints} checkpoints")
            table = pa.concat_tables(tables) if tables else schema.empty_table()
            self._metadata = table.sort_by([("model_id", "ascending"), ("epoch", "ascending")])
        return self._metadata

    @property
    def _max_rows(self) -> int:
        """Rows one metadata file may declare: no more than the plan's checkpoints (checked before it is read)."""
        return self.plan.checkpoints

    def done_units(self) -> set[int]:
        """Committed units: from the loaded metadata if any (one consistent view), else from a listing."""
        if self._metadata is not None:
            return set(self._metadata.column("unit").to_pylist())
        return self._committed()[1]

    @cached_property
    def _row_index(self) -> dict[tuple[int, int], tuple[str, int]]:
        m = self.metadata
        return {(mid, ep): (arch, row) for mid, ep, arch, row in zip(
            m.column("model_id").to_pylist(), m.column("epoch").to_pylist(), m.column("arch").to_pylist(),
            m.column("row").to_pylist())}

    def locate(self, model_id: int, epoch: int) -> tuple[str, int]:
        """(arch_id, row) of a committed checkpoint."""
        try:
            return self._row_index[(int(model_id), int(epoch))]
        except (KeyError, TypeError, ValueError):  # no such checkpoint, or not integers
            raise ZooError(f"{self.url}: no committed checkpoint for model {model_id} at epoch {epoch}") from None

    # --- weights ---------------------------------------------------------------------
    def reader(self, arch_id: str) -> RowReader:
        """The cached shard reader of ``arch_id``; reopened in a forked worker for a remote store."""
        self._check_process()
        if arch_id not in self._readers:
            self._readers[arch_id] = RowReader(self.weights(arch_id), self.local,
                                               remote=self.fs if self.local is None else None, store=self.url)
        return self._readers[arch_id]

    def read_rows(self, arch_id: str, rows: Sequence[int] | np.ndarray, *, verify: bool | None = None
                  ) -> np.ndarray:
        """Rows of ``weights/<arch_id>`` in the order given, as one (n, row_length) float32 array.
        ``verify`` (default: the zoo's) checks each committed row against its recorded checksum."""
        values = self.reader(arch_id).read(rows)
        if self.verify if verify is None else verify:
            self.check_rows(arch_id, rows, values)
        return values

    def check_rows(self, arch_id: str, rows: Sequence[int] | np.ndarray, values: np.ndarray) -> None:
        """Raise a ``StoreError`` naming the model and epoch of the first of ``rows`` whose ``values`` differ
        from its recorded checksum (rows of no committed checkpoint have none and pass; a row outside the array
        is a ``StoreError`` too)."""
        rows = self.reader(arch_id).checked_rows(rows)
        if arch_id not in self._checksums:
            # sized by the metadata, never by the rows the array declares: its rows sorted, then searched
            m = self.metadata
            mine = np.asarray([a == arch_id for a in m.column("arch").to_pylist()], dtype=bool)

            def column(name: str) -> np.ndarray:
                return np.asarray(m.column(name).fill_null(-1).to_numpy(), dtype=np.int64)[mine]

            at = column("row")
            order = np.argsort(at, kind="stable")
            ids = np.stack([column("model_id")[order], column("epoch")[order]], axis=1)
            self._checksums[arch_id] = at[order], column("crc32")[order], ids
        at, crc, ids = self._checksums[arch_id]
        if not at.size:
            return
        pos = np.minimum(np.searchsorted(at, rows), at.size - 1)
        expected = np.where(at[pos] == rows, crc[pos], -1)
        check_rows(values, expected, lambda i: f"model {ids[pos[i], 0]} epoch {ids[pos[i], 1]} ({arch_id} row "
                                               f"{rows[i]})", self.url)

    def state_dict(self, model_id: int, epoch: int) -> dict[str, torch.Tensor]:
        """The checkpoint as PyTorch's ``state_dict`` (fresh tensors; BatchNorm's counter is not stored)."""
        import torch

        arch_id, row = self.locate(model_id, epoch)
        flat = torch.from_numpy(self.read_rows(arch_id, [row])[0])
        return {k: v.clone() for k, v in self.layout(arch_id).unflatten(flat).items()}

    def module(self, model_id: int, epoch: int, *, trust_code: bool = False,
               factory: Callable[..., nn.Module] | None = None) -> nn.Module:
        """The model's ``nn.Module`` with the checkpoint's weights, in eval mode.

        The module is built from the registered architectures or torchvision's own models. A zoo of a user's
        factory (``package.module:function``) names code, and a store is data: that factory is imported and called
        only with ``trust_code=True``, or pass the function itself as ``factory`` (it is called with the stored
        keyword arguments, and ``in_shape``/``num_classes`` where it takes them). Either way the module is first
        built on torch's meta device and must have the stored layout exactly, so nothing is allocated for a
        module the store's rows do not describe."""
        import torch

        arch_id, row = self.locate(model_id, epoch)
        architecture = self.manifest.models[int(model_id)].architecture
        layout = self.layout(arch_id)

        def build() -> nn.Module:
            if factory is not None:
                from ..architectures.external import call_factory

                return call_factory(factory, architecture.name, architecture.in_shape, architecture.num_classes,
                                    architecture.options.get("kwargs", "{}"))
            return (architecture.trusting() if trust_code else architecture).module()

        with torch.device("meta"):
            planned = Layout.from_module(build())
        if planned != layout:
            raise StoreError(f"{self.url}: the module built for architecture {architecture.name!r} has "
                             f"{planned.size:,} values in {len(planned.tensors)} tensors; the store's layout of "
                             f"{arch_id!r} has {layout.size:,} in {len(layout.tensors)}: refusing to load it")
        module = build()
        flat = torch.from_numpy(self.read_rows(arch_id, [row])[0])
        return layout.load_into(module, flat).eval()

    def render(self, model_id: int, epoch: int, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """The image a neural field of an inr zoo represents: (C, H, W) pixel values in [0, 1] (clamped) on a grid
        of ``size`` (an int for a square, (height, width); default: the fitted image's size), evaluated with
        the checkpoint's conventions (coordinate order, output offset, pixel range)."""
        import torch

        from ..architectures.modules import to_unit

        if self.manifest.kind != "inr":
            raise ZooError(f"{self.url}: render draws the images of an inr zoo; this zoo's kind is "
                                  f"{self.manifest.kind!r}")
        _, height, width = self.manifest.input_shape
        if size is not None:
            height, width = (size, size) if isinstance(size, int) else size
        if not (isinstance(height, int) and isinstance(width, int) and 1 <= height <= 4096 and 1 <= width <= 4096):
            raise ZooError(f"render: size {size!r}; expected sides in [1, 4096]")
        module: Any = self.module(model_id, epoch)  # a modules.Siren
        with torch.no_grad():
            return to_unit(module.image(height, width), module.pixels).clamp(0, 1)

    # --- summaries --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Build progress (``zoo status``): units and checkpoints done against planned, overall and per
        architecture; ``complete`` once every unit is committed."""
        plan = self.plan
        total = plan.unit_count
        done = {u for u in self.done_units() if isinstance(u, int) and 0 <= u < total}  # counted, not listed
        per_arch = {a: [0, n] for a, n in plan.units_per_arch().items()}
        epochs = len(plan.epochs)
        for u in done:
            per_arch[plan.groups[u // epochs].arch_id][0] += 1
        return {"store": self.url, "zoo": self.manifest.name, "units_done": len(done),
                "units_total": total, "checkpoints_done": self.metadata.num_rows,
                "checkpoints_total": plan.checkpoints,
                "architectures": {a: {"units_done": d, "units_total": t} for a, (d, t) in per_arch.items()},
                "complete": len(done) >= total}

    def nbytes(self) -> int:
        """Bytes the whole store occupies; it lists every file, so it is slow on a large remote store."""
        fs, root = self.fs
        return int(fs.du(root, total=True))

    def info(self) -> dict[str, Any]:
        """The summary ``zoo info`` prints: counts, architectures, checkpoint statuses, bytes and accuracy ranges
        (NaN accuracies left out; ``None`` where no checkpoint has one)."""
        m = self.metadata
        statuses = m.column("status").to_pylist()
        info = {
            "store": self.url,
            "zoo": self.manifest.name,
            "description": self.manifest.zoo["description"],
            "format_version": self.attrs["format_version"],
            "models": len(self.manifest.models),
            "models_with_checkpoints": len(set(m.column("model_id").to_pylist())),
            "checkpoints": m.num_rows,
            "checkpoints_planned": self.plan.checkpoints,
            "checkpoint_epochs": list(self.plan.epochs),
            "architectures": {a: {"name": self.architecture(a).name, "params": self.layout(a).num_params,
                                  "row_length": self.layout(a).size, "rows": v["rows"]}
                              for a, v in self.attrs["architectures"].items()},
            "status": {s: statuses.count(s) for s in sorted(set(statuses))},
            "bytes": self.nbytes(),
        }
        acc = [a for a in m.column("test_acc").to_pylist() if a is not None and a == a]
        last = max(self.plan.epochs)
        final = [a for a, e in zip(m.column("test_acc").to_pylist(), m.column("epoch").to_pylist())
                 if e == last and a is not None and a == a]
        info["test_acc"] = {"min": min(acc), "max": max(acc)} if acc else None
        info["final_test_acc"] = ({"epoch": last, "min": min(final), "max": max(final),
                                   "median": float(np.median(final))} if final else None)
        return info


def open_zoo(path: str | Path, *, storage_options: dict | None = None, verify: bool = False) -> Zoo:
    """Open a store read-only, from a local path or an fsspec URL (``s3://``, ``hf://``, ...); ``verify=True``
    checks every row read against its recorded checksum (a ``StoreError`` naming the model and epoch)."""
    return Zoo(path, storage_options=storage_options, verify=verify)


def _read_parquet(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None,
                  max_rows: int | None = None) -> pa.Table:
    """One Parquet file through its ``ParquetFile``: unlike ``pq.read_table`` it needs no ``pyarrow.dataset``,
    whose import (pandas with it) would double the start-up of ``zoo info``. ``max_rows``: the most rows the file
    may declare in its footer, checked before any column is read (a few hundred bytes of a stranger's file can
    declare millions of rows)."""
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if max_rows is not None and pf.metadata.num_rows > max_rows:
                raise StoreError(f"{path}: declares {pf.metadata.num_rows} rows; the store's plan allows at most "
                                 f"{max_rows}")
            return pf.read(columns=columns)
    except (OSError, pa.ArrowException) as e:
        raise StoreError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s column order and types; a column an older format lacks comes as nulls."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
