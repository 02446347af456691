"""Streaming one zoo three ways, in one run: this project's loaders from the local store, ``datasets`` with
``with_format("torch")`` over the exported Parquet, and this project's loaders from an S3 endpoint (moto's server
on 127.0.0.1; a subset of rows, as moto serves ~100 requests/s). Samples/s of one shuffled epoch of flat weights,
batches of 256, one thread.

    python benchmarks/interop.py [--rows 20000] [--json]
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import zoo
from loaders import ZooDataset, ZooStream
from zoo.hf import export_hf

sys.path.insert(0, str(Path(__file__).parent))
from store import manifest_for, random_zoo  # noqa: E402


def epoch_rate(loader, total: int) -> float:
    start = time.perf_counter()
    n = sum(len(b["model_id"] if isinstance(b, dict) and "model_id" in b else b["weights"]) for b in loader)
    assert n == total, (n, total)
    return total / (time.perf_counter() - start)


def s3_store(local: Path) -> tuple[object, str, dict]:
    """Start moto's S3 server on 127.0.0.1 and copy the store into a bucket; returns (server, url, options)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    fs.put(str(local), "bench/bench.zoo", recursive=True)
    return server, "s3://bench/bench.zoo", options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--s3-rows", type=int, default=4_000, help="rows timed from S3 (a subset: it is slow)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="zoo-interop-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # GBs of rows: gone after the run
    random_zoo(tmp / "bench.zoo", manifest_for(args.rows), group_size=64)
    export_hf(tmp / "bench.zoo", tmp / "hf", split_fractions={"train": 1.0})

    local = ZooDataset(tmp / "bench.zoo")
    total = len(local)
    figures = {"rows": total, "batch": args.batch, "threads": 1}
    figures["local_loader_samples_per_s"] = epoch_rate(
        DataLoader(local, batch_size=args.batch, shuffle=True, collate_fn=local.collate), total)

    import datasets

    # a private cache: datasets would otherwise reuse an earlier run's Arrow cache of a same-named export
    hf = datasets.load_dataset(str(tmp / "hf"), split="train", cache_dir=str(tmp / "hf-cache"))
    hf = hf.with_format("torch", columns=["weights"])
    figures["datasets_torch_samples_per_s"] = epoch_rate(
        DataLoader(hf, batch_size=args.batch, shuffle=True), total)

    server, url, options = s3_store(tmp / "bench.zoo")
    subset = {"model_id": list(range(-(-args.s3_rows // 50)))}
    try:
        remote = ZooStream(zoo.open(url, storage_options=options), where=subset, batch_size=args.batch)
        figures["s3_rows_timed"] = len(remote.indices)
        figures["s3_stream_samples_per_s"] = epoch_rate(DataLoader(remote, batch_size=None), len(remote.indices))
        remote = ZooDataset(zoo.open(url, storage_options=options), where=subset)
        figures["s3_loader_samples_per_s"] = epoch_rate(
            DataLoader(remote, batch_size=args.batch, shuffle=True, collate_fn=remote.collate), len(remote))
    finally:
        server.stop()
    stream = ZooStream(tmp / "bench.zoo", batch_size=args.batch)
    figures["local_stream_samples_per_s"] = epoch_rate(DataLoader(stream, batch_size=None), total)
    figures["datasets_over_local_ratio"] = figures["datasets_torch_samples_per_s"] / figures[
        "local_loader_samples_per_s"]
    figures["s3_over_local_ratio"] = figures["s3_loader_samples_per_s"] / figures["local_loader_samples_per_s"]
    figures["s3_stream_over_local_stream_ratio"] = (figures["s3_stream_samples_per_s"]
                                                    / figures["local_stream_samples_per_s"])
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{total:,} CNN-s checkpoints, shuffled epoch of flat weights, batches of {args.batch}, 1 thread")
    n = figures["s3_rows_timed"]
    for key, label in (("local_loader_samples_per_s", "(a) ZooDataset, local store"),
                       ("local_stream_samples_per_s", "(a) ZooStream, local store"),
                       ("datasets_torch_samples_per_s", "(b) datasets + with_format('torch')"),
                       ("s3_loader_samples_per_s", f"(c) ZooDataset, moto S3 ({n:,} rows)"),
                       ("s3_stream_samples_per_s", f"(c) ZooStream, moto S3 ({n:,} rows)")):
        print(f"{label:<44}{figures[key]:>12,.0f} samples/s")
    print(f"{'datasets / ZooDataset local':<44}{figures['datasets_over_local_ratio']:>12.3f}")
    print(f"{'ZooDataset S3 / local':<44}{figures['s3_over_local_ratio']:>12.4f}")
    print(f"{'ZooStream S3 / local':<44}{figures['s3_stream_over_local_stream_ratio']:>12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
