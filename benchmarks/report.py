"""Time ``zoo report`` on a synthetic zoo (no training): by default 1,000 CNN-s models x 50 checkpoints = 50,000.

Fills a store with random rows and plausible metrics (accuracy rising with epoch, a few diverged models),
then writes the report and prints the seconds it took (target: under 60 s for 50,000 checkpoints).

    python benchmarks/report.py [--seeds 125] [--epochs 49] [--store DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.manifest import Manifest
from zoo.report import write_report


def manifest_for(seeds: int, epochs: int) -> Manifest:
    """seeds x 2 activations x 4 learning rates models, a checkpoint at every epoch."""
    return Manifest.from_dict({
        "zoo": {"name": "bench-report"},
        "dataset": {"name": "mnist"},
        "architecture": {"name": "cnn-s"},
        "training": {"epochs": epochs},
        "population": {"seeds": {"start": 0, "stop": seeds},
                       "grid": {"architecture.activation": ["relu", "tanh"], "training.lr": [1e-3, 3e-3, 1e-2, 3e-2]}},
        "checkpoints": {"epochs": "all"},
    }, source="bench")


def fill(path: Path, manifest: Manifest, seed: int = 2024) -> int:
    writer = zoo.create(path, manifest, group_size=64)
    rng = np.random.default_rng(seed)
    last = max(manifest.checkpoint_epochs)
    ceiling = {m.model_id: rng.uniform(0.6, 0.99) for m in manifest.models}
    diverged = {m.model_id for m in manifest.models if m.hparams["lr"] == 3e-2 and rng.uniform() < 0.05}
    width = writer.layout("cnn-s").size
    n = 0
    for u in writer.plan.units:
        rows = (rng.standard_normal((len(u.model_ids), width)) * (0.1 + 0.002 * u.epoch)).astype(np.float32)
        records = []
        for mid in u.model_ids:
            test = 0.1 + (ceiling[mid] - 0.1) * (1 - np.exp(-4 * u.epoch / last)) + rng.normal(0, 0.01)
            train = test + 0.02 * u.epoch / last + rng.normal(0, 0.005)
            bad = mid in diverged and u.epoch >= 2
            records.append({"test_acc": float("nan") if bad else float(test), "train_acc": float("nan") if bad
                            else float(train), "status": "diverged" if bad else "ok"})
            if bad:
                rows[len(records) - 1] = np.nan
        writer.write_unit(u, rows, records)
        n += len(u.model_ids)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=125, help="seeds per configuration (8 configurations)")
    parser.add_argument("--epochs", type=int, default=49, help="training epochs (checkpoints = epochs + 1)")
    parser.add_argument("--store", type=Path, default=None, help="reuse or create the store here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="zoo-bench-report-"))
    store = args.store or tmp / "bench.zoo"
    t0 = time.perf_counter()
    if not store.exists():
        fill(store, manifest_for(args.seeds, args.epochs))
    t_fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = write_report(store, tmp / "report")
    t_report = time.perf_counter() - t0
    figures = {"checkpoints": result["counts"]["checkpoints"], "fill_s": round(t_fill, 1),
               "report_s": round(t_report, 1), "report": result["index"], "samples": result["samples"]}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['checkpoints']:,} checkpoints: report in {t_report:.1f} s (store filled in {t_fill:.1f} s)"
              f"\n{result['index']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
