"""Shuffled epoch reads through the loaders against the alternatives, in one run.

One store of CNN-s checkpoints (default 50,000 rows). Samples/s of one shuffled epoch for:
(a) a numpy memmap random-row read of the same bytes (the limit), (b) naive row-at-a-time zarr reads (a subset,
extrapolated), (c) one ``torch.load`` per sample file (how SANE's preprocessed datasets are stored; a subset),
(d) ``ZooDataset`` through a DataLoader with ``flat``, ``tokens``, and ``tokens`` + permutation augmentation, and
``ZooStream`` (chunk-aware shuffle buffer) with ``flat`` and ``tokens`` + permutation; then a small ResNet-18 store
(11M parameters per row): a memmap copy of whole rows, ``tokens`` and ``tokens`` + permutation of whole rows, and
windows of 256 tokens + permutation. ``--json`` prints one JSON object with ``flat_over_memmap_ratio``,
``flat_over_naive_zarr_ratio``, ``resnet18_tokens_over_memmap``, ``resnet18_tokens_permute_over_memmap`` and
``resnet18_window_permute_samples_per_s``.

    python benchmarks/loader.py [--rows 50000] [--batch 256] [--resnet-rows 24] [--json]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from loaders import ZooDataset, ZooStream
from zoo.manifest import Manifest

sys.path.insert(0, str(Path(__file__).parent))
from store import manifest_for, random_zoo  # noqa: E402


def rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def resnet18_store(tmp: Path, rows: int, raw: Path | None = None) -> Path:
    """A store of ``rows`` ResNet-18 (CIFAR stem) checkpoints of random weights; ``raw``: the same rows as one
    .npy file too."""
    manifest = Manifest.from_dict({
        "zoo": {"name": "bench-resnet18"}, "dataset": {"name": "cifar10"},
        "architecture": {"name": "resnet18"}, "training": {"epochs": 1},
        "population": {"seeds": {"start": 0, "stop": rows}}, "checkpoints": {"epochs": [1]}}, source="bench")
    width = manifest.architectures["resnet18"].layout.size
    copy = None if raw is None else np.lib.format.open_memmap(raw, mode="w+", dtype=np.float32, shape=(rows, width))
    written = [0]

    def to_raw(block: np.ndarray) -> None:
        if copy is not None:
            take = min(len(block), rows - written[0])
            copy[written[0]:written[0] + take] = block[:take]
            written[0] += take

    random_zoo(tmp / "resnet18.zoo", manifest, group_size=4, scale=0.05, on_rows=to_raw)
    if copy is not None:
        copy.flush()
    return tmp / "resnet18.zoo"


def resnet18(tmp: Path, rows: int, window_samples: int = 4096) -> dict[str, float]:
    """ResNet-18 (CIFAR stem) checkpoints of random weights: a plain memmap copy of whole rows (the same bytes in
    one raw file) against tokens and tokens + permutation of whole rows (batches of 4), and windows of 256
    tokens + permutation (batches of 64, sampled with replacement)."""
    resnet18_store(tmp, rows, tmp / "resnet18.npy")
    mm = np.load(tmp / "resnet18.npy", mmap_mode="r")
    out: dict[str, float] = {"resnet18_rows": rows, "resnet18_parameters": mm.shape[1]}
    order = np.random.default_rng(0).permutation(rows)
    [np.array(mm[np.sort(order[i:i + 4])]) for i in range(0, rows, 4)]  # warm the page cache
    out["resnet18_memmap_samples_per_s"] = rate(rows, lambda: [np.array(mm[np.sort(order[i:i + 4])])
                                                               for i in range(0, rows, 4)])
    for key, augment, threads in (("resnet18_tokens_samples_per_s", (), 1),
                                  ("resnet18_tokens_permute_samples_per_s", ("permute",), 1),
                                  ("resnet18_tokens_permute_2_threads_samples_per_s", ("permute",), 2)):
        d = ZooDataset(tmp / "resnet18.zoo", view="tokens", augment=augment, threads=threads)
        loader = DataLoader(d, batch_size=4, shuffle=True, collate_fn=d.collate)
        next(iter(loader))  # warm the page cache and the tokenizer
        out[key] = rate(len(d), lambda loader=loader: [None for _ in loader])
    d = ZooDataset(tmp / "resnet18.zoo", view="tokens", augment=("permute", "window"), windowsize=256)
    sampler = RandomSampler(d, replacement=True, num_samples=window_samples, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(d, batch_size=64, sampler=sampler, collate_fn=d.collate)
    next(iter(loader))
    out["resnet18_window_permute_samples_per_s"] = rate(window_samples, lambda: [None for _ in loader])
    memmap = out["resnet18_memmap_samples_per_s"]
    out["resnet18_tokens_over_memmap"] = out["resnet18_tokens_samples_per_s"] / memmap
    out["resnet18_tokens_permute_over_memmap"] = out["resnet18_tokens_permute_samples_per_s"] / memmap
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--subset", type=int, default=2_000, help="samples timed for the slow baselines")
    parser.add_argument("--resnet-rows", type=int, default=24, help="ResNet-18 checkpoints (45 MB each); 0 skips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the targets are per CPU core

    tmp = Path(tempfile.mkdtemp(prefix="zoo-loader-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # GBs of rows: gone after the run
    manifest = manifest_for(args.rows)
    width = manifest.architectures["cnn-s"].layout.size
    raw = np.lib.format.open_memmap(tmp / "raw.npy", mode="w+", dtype=np.float32, shape=(args.rows, width))
    written = [0]

    def to_raw(block: np.ndarray) -> None:  # the same bytes, as one raw file
        n = written[0]
        take = min(len(block), args.rows - n)
        raw[n:n + take] = block[:take]
        written[0] = n + take

    random_zoo(tmp / "bench.zoo", manifest, group_size=64, on_rows=to_raw)
    raw.flush()
    rng = np.random.default_rng(0)
    ds = ZooDataset(tmp / "bench.zoo")
    total = len(ds)
    order = rng.permutation(total)

    mm = np.load(tmp / "raw.npy", mmap_mode="r")
    memmap = rate(total, lambda: [np.array(mm[np.sort(order[i:i + args.batch] % len(mm))])
                                  for i in range(0, total, args.batch)])
    array = ds.zoo.weights("cnn-s")
    sub = ds.rows[order[:args.subset]]
    naive = rate(len(sub), lambda: [np.asarray(array[int(r)]) for r in sub])
    files = tmp / "samples"
    files.mkdir()
    for i, r in enumerate(sub):
        torch.save({"weights": torch.from_numpy(ds.zoo.read_rows("cnn-s", [r])[0])}, files / f"{i}.pt")
    per_file = rate(len(sub), lambda: [torch.load(files / f"{i}.pt") for i in range(len(sub))])

    def loader_rate(**kw) -> float:
        d = ZooDataset(tmp / "bench.zoo", **kw)
        loader = DataLoader(d, batch_size=args.batch, shuffle=True, num_workers=0, collate_fn=d.collate)
        return rate(total, lambda: [None for _ in loader])

    def stream_rate(**kw) -> float:
        loader = DataLoader(ZooStream(tmp / "bench.zoo", batch_size=args.batch, buffer_size=16_384, **kw),
                            batch_size=None, num_workers=0)
        return rate(total, lambda: [None for _ in loader])

    figures = {"rows": total, "batch": args.batch, "threads": 1,
               "memmap_samples_per_s": memmap, "naive_zarr_samples_per_s": naive,
               "torch_load_per_file_samples_per_s": per_file,
               "loader_flat_samples_per_s": loader_rate(view="flat"),
               "loader_tokens_samples_per_s": loader_rate(view="tokens"),
               "loader_tokens_permute_samples_per_s": loader_rate(view="tokens", augment=("permute",)),
               "stream_flat_samples_per_s": stream_rate(view="flat"),
               "stream_tokens_permute_samples_per_s": stream_rate(view="tokens", augment=("permute",))}
    if args.resnet_rows:
        figures.update(resnet18(tmp, args.resnet_rows))
    figures["flat_over_memmap_ratio"] = figures["loader_flat_samples_per_s"] / memmap
    figures["flat_over_naive_zarr_ratio"] = figures["loader_flat_samples_per_s"] / naive
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{total:,} CNN-s checkpoints, shuffled epoch, batches of {args.batch}, 1 thread")
    for key, label in (("memmap_samples_per_s", "(a) numpy memmap random rows"),
                       ("naive_zarr_samples_per_s", "(b) zarr row at a time"),
                       ("torch_load_per_file_samples_per_s", "(c) torch.load per sample file"),
                       ("loader_flat_samples_per_s", "(d) ZooDataset flat"),
                       ("loader_tokens_samples_per_s", "(d) ZooDataset tokens"),
                       ("loader_tokens_permute_samples_per_s", "(d) ZooDataset tokens + permute"),
                       ("stream_flat_samples_per_s", "(d) ZooStream flat"),
                       ("stream_tokens_permute_samples_per_s", "(d) ZooStream tokens + permute"),
                       ("resnet18_memmap_samples_per_s", "ResNet-18 memmap whole rows"),
                       ("resnet18_tokens_samples_per_s", "ResNet-18 ZooDataset tokens"),
                       ("resnet18_tokens_permute_samples_per_s", "ResNet-18 tokens + permute"),
                       ("resnet18_tokens_permute_2_threads_samples_per_s", "ResNet-18 tokens + permute, 2 threads"),
                       ("resnet18_window_permute_samples_per_s", "ResNet-18 window 256 + permute")):
        if key in figures:
            print(f"{label:<36}{figures[key]:>14,.1f} samples/s")
    print(f"{'flat / memmap':<36}{figures['flat_over_memmap_ratio']:>14.2f}")
    print(f"{'flat / naive zarr':<36}{figures['flat_over_naive_zarr_ratio']:>14.1f}x")
    for key, label in (("resnet18_tokens_over_memmap", "ResNet-18 tokens / memmap"),
                       ("resnet18_tokens_permute_over_memmap", "ResNet-18 tokens + permute / memmap")):
        if key in figures:
            print(f"{label:<36}{figures[key]:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
