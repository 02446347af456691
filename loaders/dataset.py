"""``ZooDataset``: a map-style PyTorch dataset of checkpoints that works in batches.

``torch.utils.data.DataLoader`` hands ``__getitems__`` the whole list of a
batch's indices, so a batch is one planned read (rows coalesced per shard by
the store's row reader), one vectorized augmentation and one view encoding,
never per-item work. Pass ``collate_fn=dataset.collate``: the batch arrives
already assembled.

Sample order, worker sharding and DDP sharding are the sampler's business
(``DistributedSampler`` gives each rank a disjoint part); the dataset is
stateless apart from lazily opened files, so it pickles to workers under both
fork and spawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import ZooError, allowed_text
from zoo.store import Zoo, open_zoo

from .splits import split_models
from .symmetry import SYMMETRIES, BatchSymmetry
from .views import check_view, make_view, random_window

AUGMENTATIONS = (*SYMMETRIES, "noise", "window")


class ZooDataset(Dataset):
    """Checkpoints of one architecture of a zoo, as batches in a learner's format.

    Args:
        store: a path, URL or open ``Zoo``.
        view: ``flat``, ``state_dict`` or ``tokens`` (``view_options`` such as ``tokensize``).
        split: ``train``, ``val``, ``test`` or ``all``; models are split by ``split_fractions`` and ``seed``.
        where: metadata filter, column -> allowed value or list of values (e.g. ``{"status": "ok"}``).
        targets: metadata columns returned beside the weights (string columns as class ids).
        augment: any of ``permute``, ``rescale``, ``signflip`` (each only where the model's activation
            allows it), ``noise`` (Gaussian, std ``noise_std``), ``window`` (tokens; ``windowsize``).
    """

    def __init__(self, store: str | Path | Zoo, *, view: str = "flat", split: str = "all",
                 split_fractions: Mapping[str, float] | None = None, seed: int = 0, arch: str | None = None,
                 where: Mapping[str, Any] | None = None, targets: Sequence[str] = ("test_acc",),
                 augment: Sequence[str] = (), noise_std: float = 1e-3, windowsize: int = 64,
                 view_options: Mapping[str, Any] | None = None) -> None:
        self.zoo = store if isinstance(store, Zoo) else open_zoo(store)
        check_view(view)
        bad = [a for a in augment if a not in AUGMENTATIONS]
        if bad:
            raise ZooError(f"augment: {allowed_text(bad[0], AUGMENTATIONS)}")
        arch_ids = self.zoo.arch_ids
        if arch is None:
            if len(arch_ids) > 1:
                raise ZooError(f"{self.zoo.url} holds several architectures; choose one with arch= "
                               f"({', '.join(arch_ids)})")
            arch = arch_ids[0]
        self.arch = arch
        self.layout = self.zoo.layout(arch)
        self.view_name, self.view_options = view, dict(view_options or {})
        self.view = make_view(view, self.layout, **self.view_options)
        self.augment = tuple(augment)
        self.noise_std, self.windowsize = noise_std, windowsize
        self.symmetry = BatchSymmetry(self.layout, self.zoo.symmetry(arch))

        meta = self.zoo.metadata
        columns = {c: meta.column(c).to_pylist() for c in ("model_id", "arch", "row")}
        keep = np.array([a == arch for a in columns["arch"]])
        for column, allowed in (where or {}).items():
            if column not in meta.column_names:
                raise ZooError(f"where: unknown metadata column {allowed_text(column, meta.column_names)}")
            values = allowed if isinstance(allowed, (list, tuple, set)) else [allowed]
            keep &= np.isin(np.array(meta.column(column).to_pylist(), dtype=object), list(values))
        if split != "all":
            parts = split_models(columns["model_id"], split_fractions, seed)
            if split not in parts:
                raise ZooError(f"split: {allowed_text(split, [*parts, 'all'])}")
            keep &= np.isin(np.array(columns["model_id"]), list(parts[split]))
        self.indices = np.flatnonzero(keep)
        self.rows = np.asarray(columns["row"], dtype=np.int64)[self.indices]
        self.model_ids = np.asarray(columns["model_id"], dtype=np.int64)[self.indices]
        activation = meta.column("activation").to_pylist() if "activation" in meta.column_names else None
        self.activations = ([activation[i] for i in self.indices] if activation is not None
                            else ["relu"] * len(self.indices))  # the only activation without the option
        self.targets = {}
        for column in targets:
            if column not in meta.column_names:
                raise ZooError(f"targets: unknown metadata column {allowed_text(column, meta.column_names)}")
            column_values = meta.column(column).to_pylist()
            values = [column_values[i] for i in self.indices]
            if values and isinstance(values[0], str):
                classes = sorted(set(values))
                self.targets[column] = torch.tensor([classes.index(v) for v in values])
            else:
                self.targets[column] = torch.tensor([float("nan") if v is None else v for v in values],
                                                    dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["view"]  # closures: rebuilt from (name, options) in the worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.view = make_view(self.view_name, self.layout, **self.view_options)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        rows = torch.from_numpy(self.zoo.read_rows(self.arch, self.rows[idx]))
        rows = self.augment_rows(rows, [self.activations[i] for i in idx.tolist()])
        out = self.view.encode(rows)
        if "window" in self.augment and "tokens" in out:
            out = random_window(out, self.windowsize)
        for name, values in self.targets.items():
            out[name] = values[idx]
        out["model_id"] = torch.from_numpy(self.model_ids[idx])
        return out

    def augment_rows(self, rows: torch.Tensor, activations: Sequence[str]) -> torch.Tensor:
        """Vectorized symmetry augmentation; samples are grouped by activation (it decides what is allowed)."""
        symmetries = [a for a in self.augment if a in SYMMETRIES]
        if symmetries:
            out = rows.clone()
            for act in set(activations):
                sel = torch.tensor([a == act for a in activations])
                out[sel] = self.symmetry.random(rows[sel], act, symmetries=symmetries)
            rows = out
        if "noise" in self.augment:
            rows = rows + torch.randn_like(rows) * self.noise_std
        return rows

    @staticmethod
    def collate(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it (or stacked samples, for item-wise fetching)."""
        if isinstance(batch, dict):
            return batch
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    def decode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The view's inverse: back to flat rows (then ``layout.unflatten`` gives a state dict)."""
        if self.view.decode is None:
            raise ZooError(f"view {self.view_name!r} has no inverse")
        return self.view.decode(dict(batch))
