"""Scale-out: the same manifest built locally and through Ray on this machine, and what that predicts for a
cluster.

Builds a digits MLP zoo (``--models`` models in groups of ``--group-size``, so many small units) three ways:
locally in this process with one torch thread (what one Ray worker gets), through Ray with one worker (the
same serial computation plus Ray's scheduling), and through Ray with ``--workers`` workers. Prints
model-epochs/s for each and the per-unit scheduling overhead, (Ray 1 worker - local) / units. Ray's start-up
(``ray.init`` and the workers' first imports) is measured apart, once per instance, by a one-group warm-up
build.

With ``--resnet-steps N`` it also times N training steps of one ResNet-18 population (CIFAR stem, batch 256,
the Model Zoos recipe, random tensors standing in for CIFAR-10) and estimates the wall time of the Model Zoos
ResNet-18 CIFAR-10 zoo on N GPUs from a per-GPU rate: the measured CPU rate, or ``--gpu-images-per-s``.

    python benchmarks/scaleout.py [--models 64] [--group-size 4] [--workers 2] [--resnet-steps 2]
                                  [--gpu-images-per-s R] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from builders.data import load_image_data
from builders.orchestration import build
from builders.ray_backend import ray_build
from zoo.manifest import Manifest, load_manifest
from zoo.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
RESNET_MANIFEST = ROOT / "manifests" / "modelzoo" / "resnet18-cifar10.toml"
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
#: Images of forward-only evaluation that cost as much as one image of a training step (forward + backward).
EVAL_PER_TRAIN = 3.0


def digits_manifest(models: int, epochs: int, name: str = "scaleout") -> Manifest:
    return Manifest.from_dict({
        "zoo": {"name": name}, "dataset": {"name": "digits", "val_size": 100},
        "architecture": {"name": "mlp", "hidden": [16]},
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": epochs},
        "population": {"seeds": {"start": 0, "stop": models}}, "checkpoints": {"epochs": "all"},
    }, source="scaleout")


def ray_run(manifest: Manifest, workers: int, group_size: int, root: Path) -> dict:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        # warm-up: one group per worker, so the timed build finds workers that have imported torch
        ray_build(digits_manifest(workers * group_size, 1, "warmup"), root / f"warmup-{workers}.zoo",
                  group_size=group_size, quiet=True)
        startup = time.perf_counter() - t0
        report = ray_build(manifest, root / f"ray-{workers}.zoo", group_size=group_size, quiet=True)
    finally:
        ray.shutdown()
    return {"workers": workers, "seconds": report.seconds, "units": report.units_written,
            "model_epochs_per_s": report.model_epochs_per_s, "startup_s": startup}


def resnet_rate(steps: int) -> float:
    """Images/s of one ResNet-18 training step (K=1, batch 256) on this machine's CPU."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from builder import population_rate

    from builders.devices import resolve_device
    rate = population_rate(1, steps, resolve_device("cpu"), "resnet18", (3, 32, 32), dataset="cifar10",
                           optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=256,
                           schedule="onecycle", augmentation="crop_flip")
    return rate * 256


def resnet_zoo_estimate(images_per_s: float, gpus: list[int]) -> dict:
    """Wall time of the Model Zoos ResNet-18 CIFAR-10 zoo when each GPU trains one group at ``images_per_s``.

    Per model: epochs x train images (a training step each) + (epochs + 1) checkpoints x (train + val + test)
    images evaluated forward-only (1/EVAL_PER_TRAIN of a training image each). A group of K models costs K times
    one model (a ResNet-18 at batch 256 fills a GPU; stacking models adds work, not speed), groups are whole
    tasks, so N GPUs take ceil(groups / N) group times.
    """
    m = load_manifest(RESNET_MANIFEST)
    plan = Plan(m)
    epochs, val = m.training["epochs"], m.dataset["val_size"] or 0
    train = CIFAR10_TRAIN - val
    per_model = epochs * train + (epochs + 1) * (train + val + CIFAR10_TEST) / EVAL_PER_TRAIN
    group_s = plan.group_size * per_model / images_per_s
    groups = len(plan.groups)
    return {"models": len(m.models), "epochs": epochs, "group_size": plan.group_size, "groups": groups,
            "train_image_equivalents_per_model": per_model, "images_per_s_per_gpu": images_per_s,
            "group_hours": group_s / 3600,
            "wall_hours": {n: math.ceil(groups / n) * group_s / 3600 for n in gpus}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (CPUs) for the parallel build")
    parser.add_argument("--resnet-steps", type=int, default=0, help="time this many ResNet-18 CPU steps (slow)")
    parser.add_argument("--gpu-images-per-s", type=float, default=None,
                        help="ResNet-18 training images/s of one GPU for the zoo estimate")
    parser.add_argument("--gpus", default="1,8,32,64,200", help="GPU counts for the estimate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # what one Ray worker (1 CPU) gets, so local and Ray run the same computation
    manifest = digits_manifest(args.models, args.epochs)
    plan = Plan(manifest, args.group_size)
    root = Path(tempfile.mkdtemp(prefix="scaleout-"))
    try:
        # the data is loaded before the clock starts, as the Ray workers' warm-up build loaded it before theirs
        data = load_image_data(manifest.dataset, device="cpu")
        local = build(manifest, root / "local.zoo", device="cpu", group_size=args.group_size, quiet=True, data=data)
        serial = ray_run(manifest, 1, args.group_size, root)
        parallel = ray_run(manifest, args.workers, args.group_size, root) if args.workers > 1 else serial
    finally:
        shutil.rmtree(root, ignore_errors=True)
    units = len(plan.units)
    figures = {
        "zoo": {"models": args.models, "epochs": args.epochs, "group_size": args.group_size, "groups": len(plan.groups),
                "units": units, "model_epochs": args.models * args.epochs},
        "local": {"seconds": local.seconds, "model_epochs_per_s": local.model_epochs_per_s, "threads": 1},
        "ray_1_worker": serial,
        f"ray_{args.workers}_workers": parallel,
        "per_unit_overhead_ms": 1000 * (serial["seconds"] - local.seconds) / units,
        "per_group_overhead_ms": 1000 * (serial["seconds"] - local.seconds) / len(plan.groups),
    }
    gpus = [int(n) for n in args.gpus.split(",") if n]
    if args.resnet_steps:
        figures["resnet18_cpu_images_per_s"] = resnet_rate(args.resnet_steps)
        figures["resnet18_zoo_on_this_cpu"] = resnet_zoo_estimate(figures["resnet18_cpu_images_per_s"], [1])
    if args.gpu_images_per_s:
        figures["resnet18_zoo_on_gpus"] = resnet_zoo_estimate(args.gpu_images_per_s, gpus)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0

    z = figures["zoo"]
    print(f"digits MLP zoo: {z['models']} models x {z['epochs']} epochs, groups of {z['group_size']} "
          f"({z['groups']} groups, {units} units)")
    print(f"{'':<28}{'seconds':>10}{'model-epochs/s':>16}{'start-up s':>12}")
    print(f"{'local, 1 thread':<28}{local.seconds:>10.2f}{local.model_epochs_per_s:>16.1f}{'':>12}")
    for key, r in (("ray, 1 worker", serial), (f"ray, {args.workers} workers", parallel)):
        print(f"{key:<28}{r['seconds']:>10.2f}{r['model_epochs_per_s']:>16.1f}{r['startup_s']:>12.1f}")
    print(f"scheduling overhead per unit: {figures['per_unit_overhead_ms']:.1f} ms "
          f"(per group task: {figures['per_group_overhead_ms']:.1f} ms)")
    for key, label in (("resnet18_zoo_on_this_cpu", "this CPU"), ("resnet18_zoo_on_gpus", "GPUs")):
        if key in figures:
            e = figures[key]
            print(f"\nModel Zoos ResNet-18 CIFAR-10 ({e['models']:,} models x {e['epochs']} epochs, "
                  f"{e['groups']} groups of {e['group_size']}) at {e['images_per_s_per_gpu']:,.0f} images/s per "
                  f"device ({label}): {e['group_hours']:,.1f} h per group")
            for n, hours in e["wall_hours"].items():
                print(f"  {n:>4} device(s): {hours:>10,.1f} h  ({hours / 24:,.1f} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
