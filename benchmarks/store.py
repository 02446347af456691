"""Store throughput against raw numpy files, in one run.

Writes a store of CNN-s rows (2,464 float32 = 9.6 KB each; default 40,000 rows) and the same bytes
as one raw file, then reads both back: sequential batches, and batches of random rows. Prints rows/s
for each and the ratio store/raw (targets: reads >= 0.5, sequential write >= 0.3). Also times zarr-python's
own row-at-a-time reads of the same store for reference. ``--json`` prints one JSON object.

Writes are timed three ways, each against the raw file written with the same durability:
``sequential write`` is the store as it commits by default (each unit's shard, then its metadata, made
durable with ``fsync`` before the next unit) against a raw file synced once at the end (the figure of
issue #13); ``... fsync per unit`` compares the same store with a raw file synced after each unit's rows
(the same guarantee); ``... no fsync`` compares a store opened with ``durable=False`` with a raw file
never synced.

    python benchmarks/store.py [--rows 40000] [--batch 256] [--json]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import zoo
from zoo.manifest import Manifest


def manifest_for(rows: int, epochs_per_model: int = 50) -> Manifest:
    models = -(-rows // epochs_per_model)
    return Manifest.from_dict({
        "zoo": {"name": "bench"},
        "dataset": {"name": "mnist"},
        "architecture": {"name": "cnn-s"},
        "training": {"epochs": epochs_per_model - 1},
        "population": {"seeds": {"start": 0, "stop": models}},
        "checkpoints": {"epochs": "all"},
    }, source="bench")


def random_zoo(path: Path, manifest: Manifest, group_size: int, scale: float = 0.1, seed: int = 0,
               on_rows=None) -> zoo.ZooWriter:
    """A store of random weights (no training) with placeholder metrics; ``on_rows(block)`` sees each unit's rows
    in commit order (to write the same bytes elsewhere)."""
    writer = zoo.create(path, manifest, group_size=group_size)
    rng = np.random.default_rng(seed)
    for u in writer.plan.units:
        width = writer.layout(u.arch_id).size
        block = rng.standard_normal((len(u.model_ids), width), dtype=np.float32) * scale
        writer.write_unit(u, block, [{"test_acc": 0.5}] * len(u.model_ids))
        if on_rows is not None:
            on_rows(block)
    return writer


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq-batch", type=int, default=4096)
    parser.add_argument("--naive-rows", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # GBs of rows: gone after the run
    manifest = manifest_for(args.rows)
    writer = zoo.create(tmp / "bench.zoo", manifest, group_size=64)
    units = writer.plan.units
    width = writer.layout("cnn-s").size
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((len(u.model_ids), width)).astype(np.float32) for u in units]
    n_rows = sum(len(b) for b in blocks)
    records = [[{"test_acc": 0.5}] * len(u.model_ids) for u in units]

    # --- sequential write -------------------------------------------------------------------
    # pyarrow imports pandas on its first array conversion (about 0.4 s, once per process): not write throughput
    pa.array([0.5])

    def write_store(w: zoo.ZooWriter):
        for u, b, r in zip(units, blocks, records):
            w.write_unit(u, b, r)

    raw_path = tmp / "raw.f32"

    def write_raw(path: Path, sync: str) -> None:
        """``sync``: "end" (one fsync after the last row), "unit" (after each unit's rows) or "none"."""
        with open(path, "wb") as f:
            for b in blocks:
                f.write(b.tobytes())
                if sync == "unit":
                    f.flush()
                    os.fsync(f.fileno())
            if sync == "end":
                f.flush()
                os.fsync(f.fileno())

    t_write_store = timed(lambda: write_store(writer))
    t_write_raw = timed(lambda: write_raw(raw_path, "end"))
    t_write_raw_unit = timed(lambda: write_raw(tmp / "raw-unit.f32", "unit"))
    (tmp / "raw-unit.f32").unlink()
    # without fsync the bytes stay dirty in the page cache: each copy is removed once timed, before its
    # write-back could slow the next measurement
    t_write_raw_nosync = timed(lambda: write_raw(tmp / "raw-nosync.f32", "none"))
    (tmp / "raw-nosync.f32").unlink()
    nosync = zoo.create(tmp / "nosync.zoo", manifest, group_size=64, durable=False)
    t_write_store_nosync = timed(lambda: write_store(nosync))
    shutil.rmtree(tmp / "nosync.zoo")

    z = zoo.open(tmp / "bench.zoo")
    _ = z.metadata  # loaded before anything is timed
    raw = np.memmap(raw_path, dtype=np.float32, mode="r").reshape(n_rows, width)
    # raw file row i holds the i-th checkpoint in write order; its store row is order[i]
    order = np.concatenate([[u.row_start + i for i in range(len(u.model_ids))] for u in units])

    # --- sequential read ---------------------------------------------------------------------
    def seq_store():
        for lo in range(0, n_rows, args.seq_batch):
            z.read_rows("cnn-s", order[lo:lo + args.seq_batch])

    def seq_raw():
        for lo in range(0, n_rows, args.seq_batch):
            np.array(raw[lo:lo + args.seq_batch])

    seq_store()  # warm the page cache for both
    seq_raw()
    t_seq_store, t_seq_raw = timed(seq_store), timed(seq_raw)

    # --- batched random read -----------------------------------------------------------------
    n_batches = max(1, n_rows // args.batch)
    picks = [rng.integers(0, n_rows, size=args.batch) for _ in range(n_batches)]

    def rand_store():
        for p in picks:
            z.read_rows("cnn-s", order[p])

    def rand_raw():
        for p in picks:
            raw[p]

    t_rand_store, t_rand_raw = timed(rand_store), timed(rand_raw)

    # correctness of what was timed
    check = picks[0]
    assert np.array_equal(z.read_rows("cnn-s", order[check]), raw[check])

    # --- zarr-python row at a time (reference) -----------------------------------------------
    array = z.weights("cnn-s")
    naive = order[rng.integers(0, n_rows, size=args.naive_rows)]
    t_naive = timed(lambda: [np.asarray(array[int(r)]) for r in naive])

    mb = n_rows * width * 4 / 2**20
    figures = {
        "rows": n_rows, "row_bytes": width * 4, "batch": args.batch,
        "seq_write_rows_per_s": {"store": n_rows / t_write_store, "raw": n_rows / t_write_raw,
                                 "ratio": t_write_raw / t_write_store},
        "seq_write_fsync_per_unit_rows_per_s": {"store": n_rows / t_write_store, "raw": n_rows / t_write_raw_unit,
                                                "ratio": t_write_raw_unit / t_write_store},
        "seq_write_no_fsync_rows_per_s": {"store": n_rows / t_write_store_nosync, "raw": n_rows / t_write_raw_nosync,
                                          "ratio": t_write_raw_nosync / t_write_store_nosync},
        "seq_read_rows_per_s": {"store": n_rows / t_seq_store, "raw": n_rows / t_seq_raw,
                                "ratio": t_seq_raw / t_seq_store},
        "random_read_rows_per_s": {"store": n_batches * args.batch / t_rand_store,
                                   "raw": n_batches * args.batch / t_rand_raw, "ratio": t_rand_raw / t_rand_store},
        "zarr_row_at_a_time_rows_per_s": args.naive_rows / t_naive,
        "store_mb": mb,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{n_rows:,} rows of {width * 4:,} bytes ({mb:.0f} MB); random batches of {args.batch}")
        print(f"{'':<26}{'store rows/s':>14}{'raw rows/s':>14}{'store/raw':>11}")
        for label, key in (("sequential write", "seq_write_rows_per_s"),
                           ("  ... fsync per unit", "seq_write_fsync_per_unit_rows_per_s"),
                           ("  ... no fsync", "seq_write_no_fsync_rows_per_s"),
                           ("sequential read", "seq_read_rows_per_s"),
                           ("batched random read", "random_read_rows_per_s")):
            f = figures[key]
            print(f"{label:<26}{f['store']:>14,.0f}{f['raw']:>14,.0f}{f['ratio']:>11.2f}")
        print(f"{'zarr row-at-a-time read':<26}{figures['zarr_row_at_a_time_rows_per_s']:>14,.0f}")
        print("(write: the store also writes Parquet metadata; by default it fsyncs each unit's shard, fragment and "
              "directory;\n raw fsyncs once at the end, after each unit, or never; 'no fsync' is the store with "
              "durable=False)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
