"""Checkpoints of a zoo as batches in a learner's format: a map-style and a streaming dataset.

Both share one pipeline per batch (``_Zoo.batch``): one planned read of the
batch's rows (coalesced per shard by the store's row reader), vectorized
symmetry augmentation, per-layer normalization, noise and erasing, and one view
encoding. Nothing is done per item.

* ``ZooDataset`` (map-style): ``DataLoader`` hands ``__getitems__`` the whole
  list of a batch's indices; pass ``collate_fn=dataset.collate``. Sample order
  and DDP sharding are the sampler's business (``DistributedSampler``).
* ``ZooStream`` (iterable): yields whole batches (``DataLoader(stream,
  batch_size=None)``). Shuffling is chunk-aware: shards (one unit of work each)
  are shuffled, the shard-ordered rows are cut into disjoint contiguous parts per
  DDP rank and DataLoader worker, and each part is read one buffer of rows at a
  time and shuffled inside the buffer, so random order costs no random I/O and
  memory stays at one buffer whatever the zoo's size.

Both are stateless apart from lazily opened files, so they pickle to workers
under fork and spawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from zoo.errors import ZooError, allowed_text
from zoo.hf import open_source
from zoo.store import Zoo
from zoo.symmetry import SYMMETRIES

from . import order as ordering
from .normalize import Normalizer, statistics_key
from .selection import Selection, choose_arch, select
from .symmetry import BatchSymmetry, Draws
from .views import check_view, make_view
from .views.tokenizer import PER_SAMPLE_MIN_VALUES, Tokenizer
from .weight_augment import check_erase, erase, noise

#: What ``augment=`` may name: augmentations of the *weights* (the symmetries, noise, erasing, windows, two views),
#: apart from ``zoo.recipes.AUGMENTATIONS``, the image augmentations a build trains with.
WEIGHT_AUGMENTATIONS = (*SYMMETRIES, "noise", "erase", "window", "two_view")
STATS_DIR = ".stats"
#: Rows of at least this many values are tokenized straight from the store's memory maps (``Tokenizer.encode_views``).
VIEWS_MIN_VALUES = PER_SAMPLE_MIN_VALUES


class RawBatch(NamedTuple):
    """Rows read by a DataLoader worker for a batch that is transformed on the device (``_Zoo.finish``)."""

    idx: np.ndarray
    rows: torch.Tensor


class DeviceLoader:
    """Iterates a DataLoader and completes each batch on the dataset's device (``ZooDataset.loader``)."""

    def __init__(self, dataset: _Zoo, loader: DataLoader) -> None:
        self.dataset, self.dataloader = dataset, loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.dataloader:
            yield self.dataset.finish(item)

    def __len__(self) -> int:
        return len(self.dataloader)


class _Zoo:
    """Selection (architecture, split, epochs, filter), targets and the per-batch pipeline."""

    def __init__(self, store: str | Path | Zoo, *, view: str = "flat", split: str = "all",
                 split_fractions: Mapping[str, float] | None = None, split_file: str | Path | None = None,
                 seed: int = 0, arch: str | None = None, epochs: Sequence[int] | None = None,
                 where: Mapping[str, Any] | None = None, targets: Sequence[str] = ("test_acc",),
                 augment: Sequence[str] = (), normalize: bool | str | Path | Normalizer | None = None,
                 noise_std: float = 1e-3, windowsize: int = 64, erase_p: float = 0.5,
                 erase_scale: tuple[float, float] = (0.02, 0.33), rescale_range: float = 1.0,
                 view_options: Mapping[str, Any] | None = None,
                 storage_options: Mapping[str, Any] | None = None, verify: bool = False,
                 hub: bool = False, revision: str | None = None, device: str | torch.device | None = None,
                 threads: int = 1) -> None:
        self.zoo = open_source(store, hub=hub, revision=revision, storage_options=dict(storage_options or {}))
        check_view(view)
        bad = [a for a in augment if a not in WEIGHT_AUGMENTATIONS]
        if bad:
            raise ZooError(f"augment: {allowed_text(bad[0], WEIGHT_AUGMENTATIONS)}")
        self.arch = arch = choose_arch(arch, self.zoo.arch_ids, self.zoo.url)
        self.layout = self.zoo.layout(arch)
        self.symmetry = BatchSymmetry(self.layout, self.zoo.symmetry(arch))
        self.view_name, self.view_options = view, dict(view_options or {})
        self.view = make_view(view, self.layout, spec=self.symmetry.spec, **self.view_options)
        self.tokenizer: Tokenizer | None = self.view.owner if isinstance(self.view.owner, Tokenizer) else None
        self.device = torch.device(device) if device is not None else None
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ZooError(f"threads: expected an integer >= 1, got {threads!r}")
        self.threads = threads
        self.augment = tuple(augment)
        self.noise_std, self.windowsize, self.rescale_range = noise_std, windowsize, rescale_range
        self.erase_p, self.erase_scale = erase_p, tuple(erase_scale)
        _check_augment_options(self.augment, view, self.erase_p, self.erase_scale, windowsize)
        self.seed = seed
        self.epoch = 0
        # check each row read against its recorded crc32 (also when the store was opened with verify=True)
        self.verify = bool(verify) or self.zoo.verify

        selection = select(self.zoo.metadata, arch, activation=self.zoo.architecture(arch).activation,
                           epochs=epochs, where=where, split=split, split_fractions=split_fractions,
                           split_file=split_file, published=self.zoo.attrs.get("split"), seed=seed, targets=targets)
        self.indices, self.rows, self.model_ids = selection.indices, selection.rows, selection.model_ids
        self.activation_names, self.activation_codes = selection.activation_names, selection.activation_codes
        self.split_key = selection.split_key
        self.targets: dict[str, torch.Tensor] = {k: torch.from_numpy(v) for k, v in selection.targets.items()}
        self.classes: dict[str, list[str]] = selection.classes
        self.normalizer = self._normalizer(normalize, selection, where, epochs)

    def _normalizer(self, normalize: bool | str | Path | Normalizer | None, selection: Selection,
                    where: Mapping[str, Any] | None, epochs: Sequence[int] | None) -> Normalizer | None:
        """The normalization asked for: given, loaded, or fitted on the selection's train part (and cached in
        the store, keyed by everything that chose those rows)."""
        if normalize is None or normalize is False:
            return None
        if isinstance(normalize, Normalizer):
            return normalize
        if normalize is not True and normalize != "layer":
            return Normalizer.load(normalize, self.layout)
        if selection.train_rows is None:
            raise ZooError(f"normalize: statistics come from the train split; the split has "
                           f"{sorted(selection.parts)}")
        key = statistics_key(arch=self.arch, split=self.split_key, where=where, epochs=epochs,
                             units=len(self.zoo.done_units()))
        cached = self.zoo.local / STATS_DIR / f"normalization-{key}.json" if self.zoo.local is not None else None
        if cached is not None and cached.exists():
            return Normalizer.load(cached, self.layout)
        fitted = Normalizer.fit(lambda r: self._verified(r, self.zoo.read_rows(self.arch, r)), selection.train_rows,
                                self.layout)
        if cached is not None:
            try:
                fitted.save(cached)
            except OSError:
                pass  # a read-only store: the statistics stay in memory
        return fitted

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["view"], state["tokenizer"]  # closures: rebuilt from (name, options) in the worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.view = make_view(self.view_name, self.layout, spec=self.symmetry.spec, **self.view_options)
        self.tokenizer = self.view.owner if isinstance(self.view.owner, Tokenizer) else None

    # --- the per-batch pipeline -------------------------------------------------------------
    def batch(self, idx: np.ndarray, rows: torch.Tensor | None = None) -> dict[str, Any]:
        """The batch for positions ``idx`` of this selection (``rows``: their weights, if already read).

        Windows of tokens read only their own values; whole-row tokens of large models are built straight from
        the store's memory maps; everything else reads the rows first. With ``device`` the rows (or windows)
        are moved there and transformed there."""
        if rows is None and (self.verify or not (self._windowed or self._from_views)):
            rows = torch.from_numpy(self.zoo.read_rows(self.arch, self.rows[idx]))
        if rows is not None and self.verify:
            self.zoo.check_rows(self.arch, self.rows[idx], rows.numpy())
        if rows is not None and self.device is not None and rows.device != self.device:
            rows = rows.to(self.device, non_blocking=True)
        codes = self.activation_codes[idx]
        generator = self.generator(idx) if self.augment else None
        views = [self._sample(idx, rows, codes, generator) for _ in range(2 if "two_view" in self.augment else 1)]
        out: dict[str, Any] = {"view1": views[0], "view2": views[1]} if len(views) == 2 else views[0]
        tidx = torch.from_numpy(idx)
        for name, values in self.targets.items():
            out[name] = values[tidx]
        out["model_id"] = torch.from_numpy(self.model_ids[idx])
        if self.device is not None:
            out = {k: _to(v, self.device) for k, v in out.items()}
        return out

    def deliver(self, idx: np.ndarray, rows: torch.Tensor | None = None) -> dict[str, Any] | RawBatch:
        """``batch``, except in a DataLoader worker of a dataset whose ``device`` is not the CPU: a worker cannot
        use the device, so it hands the main process the read rows (``RawBatch``), or a window batch built on
        the CPU (64 KB a sample); ``finish`` (``loader`` calls it) completes either on the device."""
        if self._worker_transforms or get_worker_info() is None:
            return self.batch(idx, rows)
        if self._windowed:
            device, self.device = self.device, None
            try:
                return self.batch(idx, rows)
            finally:
                self.device = device
        if rows is None:
            rows = torch.from_numpy(self.zoo.read_rows(self.arch, self.rows[idx]))
        return RawBatch(idx, rows)

    @property
    def _worker_transforms(self) -> bool:
        """Whether a DataLoader worker can transform batches itself (its device is the CPU)."""
        return self.device is None or self.device.type == "cpu"

    def finish(self, item: dict[str, Any] | RawBatch) -> dict[str, Any]:
        """A worker's output completed on ``device``: rows transformed there, or a built batch moved there."""
        if isinstance(item, RawBatch):
            return self.batch(np.asarray(item.idx), item.rows)
        return {k: _to(v, self.device) for k, v in item.items()} if self.device is not None else item

    def loader(self, **kwargs: Any) -> DeviceLoader:
        """A ``DataLoader`` over this dataset (``collate_fn``, and ``batch_size=None`` for a stream, set for you;
        ``kwargs`` as for ``DataLoader``) whose batches arrive finished on ``device``: workers read rows into
        pinned memory, and augmentation, normalization and encoding run on the device in this process."""
        if self.device is not None and self.device.type == "cuda":
            kwargs.setdefault("pin_memory", True)
        return DeviceLoader(self, self._dataloader(**kwargs))

    def _dataloader(self, **kwargs: Any) -> DataLoader:
        raise NotImplementedError

    @property
    def _windowed(self) -> bool:
        return "window" in self.augment

    @property
    def _from_views(self) -> bool:
        """Whole-row tokens straight from the memory maps: worth it for rows of a megabyte and more (for small
        rows one batched gather over the read rows costs less than a loop over samples)."""
        return (self.tokenizer is not None and self._worker_transforms and self.layout.size >= VIEWS_MIN_VALUES
                and self.zoo.reader(self.arch).direct)

    def _sample(self, idx: np.ndarray, rows: torch.Tensor | None, codes: np.ndarray,
                generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        if self._windowed:
            return self._window(idx, rows, codes, generator)
        if rows is None:
            assert self.tokenizer is not None
            views = self.zoo.reader(self.arch).views(self.rows[idx])
            assert views is not None
            batch = self.tokenizer.encode_views(views, self._draws(codes, generator), self.normalizer, self.threads)
            return self._token_noise(batch, generator)
        return self.transform(rows, codes, generator)

    def _draws(self, codes: np.ndarray, generator: torch.Generator | None,
               needed: Mapping[str, np.ndarray] | None = None) -> Draws | None:
        """The batch's symmetry draws, on the CPU (from ``generator``): the same whichever device applies them."""
        symmetries = [a for a in self.augment if a in SYMMETRIES]
        if not symmetries:
            return None
        return self.symmetry.draw_batch(codes, self.activation_names, generator, symmetries, self.rescale_range,
                                        needed)

    def _window(self, idx: np.ndarray, rows: torch.Tensor | None, codes: np.ndarray,
                generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The window starts (uniform, as ``random_window`` draws them), the draws of just the groups each window
        touches, then only the window's values."""
        tok = self.tokenizer
        assert tok is not None
        size, total = min(self.windowsize, tok.num_tokens), tok.num_tokens
        if self.windowsize < total:
            starts = torch.randint(0, total - size + 1, (len(idx), 1), generator=generator).view(-1)
        else:
            starts = torch.zeros(len(idx), dtype=torch.int64)
        draws = self._draws(codes, generator, tok.window_groups(starts, size))
        if rows is not None:
            held = rows.cpu().numpy()
            batch = tok.window(lambda at: np.take_along_axis(held, at, axis=1), starts, size, draws,
                               self.normalizer)
        else:
            reader, stored = self.zoo.reader(self.arch), self.rows[idx]
            batch = tok.window(lambda at: reader.read_elements(stored, at), starts, size, draws, self.normalizer)
        return self._token_noise(batch, generator)

    def _token_noise(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None
                     ) -> dict[str, torch.Tensor]:
        """Noise and erasing of a token batch; padding stays zero."""
        tokens, mask = batch["tokens"], batch["mask"]
        device_generator = _generator_on(generator, tokens.device)
        if "noise" in self.augment:
            tokens = torch.where(mask, noise(tokens, self.noise_std, device_generator), tokens)
        if "erase" in self.augment:
            tokens = erase(tokens, self.erase_p, self.erase_scale, generator=device_generator, mask=mask)
        return {**batch, "tokens": tokens}

    def _verified(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` of store rows ``rows``, checked against their recorded checksums when ``verify`` is on."""
        if self.verify:
            self.zoo.check_rows(self.arch, rows, values)
        return values

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: a new stream order, and new augmentation draws (as ``DistributedSampler``)."""
        self.epoch = epoch

    def generator(self, idx: np.ndarray) -> torch.Generator:
        """The random stream that augments the batch at positions ``idx``: a pure function of (seed, epoch,
        ``idx``), so an augmented epoch is reproduced exactly, whatever the process or worker that computes a
        batch, and a different seed or epoch draws anew. (The positions a worker reads are themselves fixed by
        the sampler, or by (seed, epoch, rank, worker, batch) in a stream.)"""
        key = hashlib.blake2b(f"{self.seed}/{self.epoch}/".encode(), digest_size=8)
        key.update(np.ascontiguousarray(idx, dtype="<i8").tobytes())
        return torch.Generator().manual_seed(int.from_bytes(key.digest(), "little"))

    def transform(self, rows: torch.Tensor, codes: np.ndarray | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Augment (each symmetry only where the sample's activation allows it), normalize, encode, on ``rows``'
        device. Symmetry draws come from ``generator`` (a CPU one; default: torch's global one); noise and
        erasing draw on ``rows``' device from a generator seeded by it."""
        codes = np.zeros(len(rows), dtype=np.int64) if codes is None else codes
        draws = self._draws(codes, generator)
        draws = draws.to(rows.device) if draws else None
        if self.tokenizer is not None:
            return self._token_noise(self.tokenizer.encode(rows, draws, self.normalizer), generator)
        if draws:
            rows = self.symmetry.apply(rows, draws)
        if self.normalizer is not None:
            rows = self.normalizer.apply(rows)
        device_generator = _generator_on(generator, rows.device)
        if "noise" in self.augment:
            rows = noise(rows, self.noise_std, device_generator)
        if "erase" in self.augment:
            rows = erase(rows, self.erase_p, self.erase_scale, generator=device_generator)
        return self.view.encode(rows)

    def decode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The view's inverse, then the normalization's: back to flat rows of raw weights
        (``layout.unflatten`` then gives state dicts, ``layout.load_into`` modules)."""
        if self.view.decode is None:
            raise ZooError(f"view {self.view_name!r} has no inverse")
        rows = self.view.decode(dict(batch))
        return self.normalizer.invert(rows) if self.normalizer is not None else rows

    @staticmethod
    def collate(batch):
        """The batch as the dataset built it (or stacked samples, for item-wise fetching)."""
        if isinstance(batch, (dict, RawBatch)):
            return batch
        return _stack(batch)


def _check_augment_options(augment: Sequence[str], view: str, erase_p: float, erase_scale: tuple[float, ...],
                           windowsize: int) -> None:
    """The options of the chosen augmentations; an option of one not chosen is never checked (nor used)."""
    if "window" in augment and view != "tokens":
        raise ZooError(f"augment: 'window' cuts windows of tokens; it needs view='tokens', not {view!r}")
    if "erase" in augment:
        check_erase(erase_p, erase_scale)
    if "window" in augment and (isinstance(windowsize, bool) or not isinstance(windowsize, int) or windowsize < 1):
        raise ZooError(f"windowsize: expected an integer >= 1 (tokens per window), got {windowsize!r}")


def _generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` itself on the CPU; elsewhere a generator on ``device`` seeded from it (CPU and CUDA
    streams differ, so noise differs between devices; the symmetry draws, made on the CPU, do not)."""
    if generator is None or device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def _stack(items: list) -> Any:
    first = items[0]
    if isinstance(first, dict):
        return {k: _stack([it[k] for it in items]) for k in first}
    return torch.stack(items)


def _index(batch: Any, i: int) -> Any:
    return {k: _index(v, i) for k, v in batch.items()} if isinstance(batch, dict) else batch[i]


class ZooDataset(_Zoo, Dataset):
    """Checkpoints of one architecture of a zoo, map-style, fetched and transformed a batch at a time.

    Args:
        store: a path, URL or open ``Zoo``; or a Hugging Face export (a folder, ``hf://user/name[@revision]``,
            or ``user/name`` with ``hub=True`` and an optional ``revision``), imported once into
            ``~/.cache/weightzoo`` (``$WEIGHTZOO_CACHE``). A store URL (``s3://``, ``gs://``,
            ``hf://datasets/user/repo/path.zoo``, ``https://``) is read in place; ``storage_options`` go to
            fsspec (credentials, endpoint). A local path that does not exist is an error, never a download.
        view: ``flat``, ``state_dict``, ``tokens``, ``nfn``, ``dws``, ``graph`` (``view_options`` such as
            ``tokensize``).
        split: ``train``, ``val``, ``test`` or ``all``; models (with all their checkpoints) are split by
            ``split_fractions`` and ``seed``, or as listed in ``split_file`` (``loaders.save_split``); a zoo
            imported from a Hugging Face export uses the export's split unless either is given.
        epochs: checkpoint epochs to include (default all).
        where: metadata filter, column -> allowed value or list of values (e.g. ``{"status": "ok"}``).
        targets: metadata columns returned beside the weights (string columns as class ids; the class
            names are in ``dataset.classes``).
        augment: any of ``permute``, ``rescale`` (factors in exp(+-``rescale_range``)), ``signflip`` (each
            only where the model's activation allows it), ``noise`` (Gaussian, std ``noise_std``, after
            normalization), ``erase`` (probability ``erase_p``, area fraction ``erase_scale``), ``window``
            (tokens; ``windowsize``), ``two_view`` (two independent augmentations per sample, as
            ``batch["view1"]`` and ``batch["view2"]``, for contrastive learning). Draws are a pure function of
            (``seed``, epoch, the batch's positions): the same epoch is augmented identically whatever the
            worker count; call ``set_epoch(e)`` each epoch for new draws where the order does not change.
        normalize: ``"layer"`` (per-tensor mean/std from the train split, cached in the store under
            ``.stats/``), a saved statistics file, or a ``Normalizer``; ``decode`` inverts it.
        verify: check every row read against its recorded crc32; a damaged one raises a ``StoreError`` naming
            the model and epoch (default: as the store was opened, ``zoo.open(path, verify=...)``).
        device: where augmentation, normalization and encoding run; rows travel there as raw float32. With
            DataLoader workers and a GPU, iterate ``loader(...)`` (workers read, this process transforms).
        threads: samples encoded at once for whole-row tokens of large rows (default 1: DataLoader workers
            are the better use of more cores; on a 2-core machine a second thread did not help).
    """

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return _index(self.__getitems__([i]), 0)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any] | RawBatch:
        return self.deliver(np.asarray(indices, dtype=np.int64))

    def _dataloader(self, **kwargs: Any) -> DataLoader:
        return DataLoader(self, collate_fn=self.collate, **kwargs)


class ZooStream(_Zoo, IterableDataset):
    """The same checkpoints as a stream of whole batches with chunk-aware shuffling and bounded memory.

    Use ``DataLoader(stream, batch_size=None, num_workers=N)``; call ``set_epoch(e)`` before each epoch for a
    new order (as with ``DistributedSampler``). DDP ranks (``rank``/``world_size``, default: from
    ``torch.distributed`` when initialized) and DataLoader workers each take a disjoint contiguous part of the
    epoch's shard-ordered rows: every sample exactly once per epoch across all of them; parts differ by at
    most one sample. Each part is shuffled within windows of ``buffer_size`` rows. A local store is read batch
    by batch from its memory maps; a remote one a window at a time (coalesced requests), holding at most two
    windows per worker.

    Other arguments as for ``ZooDataset``.
    """

    def __init__(self, store: str | Path | Zoo, *, batch_size: int = 256, shuffle: bool = True,
                 buffer_size: int = 16_384, drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        if batch_size < 1 or buffer_size < 1:
            raise ZooError(f"batch_size and buffer_size must be >= 1; got {batch_size}, {buffer_size}")
        if (rank is None) != (world_size is None):
            raise ZooError("give both rank and world_size, or neither")
        if rank is None and dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        self.rank, self.world_size = rank or 0, world_size or 1
        if not 0 <= self.rank < self.world_size:
            raise ZooError(f"rank {self.rank} must lie in [0, world_size={self.world_size})")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.buffer_size = max(buffer_size, batch_size)
        shard_rows = self.zoo.reader(self.arch).shard_rows
        self._shards = self.rows // shard_rows

    def epoch_order(self) -> np.ndarray:
        """All positions of this selection in this epoch's order: shards shuffled, rows within a shard kept
        together (the same in every process: a pure function of seed and epoch; ``loaders.order.epoch_order``)."""
        return ordering.epoch_order(self._shards, self.rows, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def part(self, worker: int = 0, workers: int = 1) -> np.ndarray:
        """The positions this rank's ``worker`` streams this epoch."""
        return ordering.part(self.epoch_order(), self.rank, self.world_size, worker, workers)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (over all its workers)."""
        return ordering.part_size(len(self.indices), self.rank, self.world_size)

    def __iter__(self) -> Iterator[dict[str, Any] | RawBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        positions = self.part(worker, workers)
        size = self.buffer_size
        windows = ordering.buffer_windows(positions, size, seed=self.seed, epoch=self.epoch, rank=self.rank,
                                          worker=worker, shuffle=self.shuffle)
        order = np.concatenate(windows) if windows else positions
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        # Local stores are memory-mapped: a batch reads its rows straight from the shard maps (no buffer copy).
        # Remote stores read one window of rows at a time in row order (coalesced range requests), and batches
        # gather from at most two windows in memory.
        direct = self.zoo.reader(self.arch).direct
        cache: dict[int, np.ndarray] = {}  # window -> its rows, in the window's (shuffled) order
        for b in range(0, stop, self.batch_size):
            idx = order[b:b + self.batch_size]
            if direct or self._windowed:  # memory maps, or windows that read only their own values
                yield self.deliver(idx)
                continue
            else:
                first, last = b // size, (b + len(idx) - 1) // size
                for w in [w for w in cache if w < first]:
                    del cache[w]
                for w in range(first, last + 1):
                    if w not in cache:  # the reader coalesces the window's rows per shard itself
                        cache[w] = self.zoo.read_rows(self.arch, self.rows[windows[w]])
                # a batch is a contiguous slice of the concatenated windows
                parts = [cache[w][max(b, w * size) - w * size:min(b + len(idx), (w + 1) * size) - w * size]
                         for w in range(first, last + 1)]
                rows = parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
            yield self.deliver(idx, torch.from_numpy(rows))

    def _dataloader(self, **kwargs: Any) -> DataLoader:
        return DataLoader(self, batch_size=None, **kwargs)

    def num_batches(self, workers: int = 1) -> int:
        """Batches this rank yields per epoch with ``workers`` DataLoader workers (each may end on a partial
        batch unless ``drop_last``). Not ``__len__``: an iterable's length would depend on the worker count."""
        return ordering.batch_count(self.num_samples, self.batch_size, workers, self.drop_last)
