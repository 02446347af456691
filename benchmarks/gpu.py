"""The builder on one GPU, with synthetic data (the device machine has no internet), in one run.

Prints a table and writes the same figures as JSON (``--json-out``):

1. cnn-s model-steps/s (Model Zoos recipe: batch 10, Adam) for population sizes 64 ... 4,096, eager and captured
   (compiled step replayed as a CUDA graph), against one model at a time (the reference loop);
2. the MNIST Seed zoo (``manifests/modelzoo/mnist-seed.toml``: 1,000 cnn-s x 50 epochs, 5,000 steps per epoch)
   extrapolated from a measured slice: all 1,000 models as one population for ``--seed-steps`` steps, plus one
   checkpoint evaluation (train 50,000 / val 10,000 / test 10,000 images) and the unit writes;
3. ResNet-18 (CIFAR stem) images/s at K=1 and the best K, in fp32 and bf16-mixed;
4. the loader on ResNet-18 checkpoints: tokens + permutation + rescaling + normalization of whole rows with
   ``device=`` (workers read raw rows into pinned memory; the transform runs on the GPU) against the same on the
   CPU workers, and windows of 256 tokens, samples/s;
5. neural fields: 10,000 MNIST-sized SIRENs (synthetic 28x28 images) fitted as one population with the DWSNets
   recipe (Adam, lr 5e-4, whole images), a measured slice of steps extrapolated to its 1,000 steps.

``--smoke`` runs every part at toy sizes on whatever device is there (the CPU here), so the script is tested
before a device is lent.

    python benchmarks/gpu.py [--json-out FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from builder import population_rate, sequential_rate, sync, synthetic  # noqa: E402
from loader import resnet18_store  # noqa: E402

from builders.data import ImageData  # noqa: E402
from builders.devices import device_name, resolve_device  # noqa: E402
from builders.population import Population  # noqa: E402
from zoo.manifest import load_manifest  # noqa: E402
from zoo.store import create  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cnn_s_sweep(sizes: list[int], steps: int, device: torch.device, captured: bool) -> dict:
    out: dict = {"steps": steps, "sizes": {}}
    seq = sequential_rate(8, steps, device)
    out["sequential_model_steps_per_s"] = seq
    for k in sizes:
        row = {"eager": population_rate(k, steps, device, compile="off")}
        if captured:
            row["captured"] = population_rate(k, steps, device, compile="on")
        row["best_over_sequential"] = max(row.values()) / seq
        out["sizes"][k] = row
        print(f"  cnn-s K={k:>5}: eager {row['eager']:>12,.0f}"
              + (f"  captured {row['captured']:>12,.0f}" if captured else "")
              + f" model-steps/s  ({row['best_over_sequential']:.1f}x one at a time)", flush=True)
    out["vectorized_over_sequential_ratio"] = max(r["best_over_sequential"] for r in out["sizes"].values())
    return out


def mnist_seed(device: torch.device, steps: int, models: int | None, eval_images: tuple[int, int, int],
               compile: str) -> dict:
    """Wall time of the MNIST Seed zoo, extrapolated: per-step time x 250,000 steps + 51 checkpoints."""
    m = load_manifest(ROOT / "manifests" / "modelzoo" / "mnist-seed.toml")
    specs = list(m.models)[:models] if models else list(m.models)
    b = m.training["batch_size"]
    n_train, n_val, n_test = eval_images
    shape = (1, 28, 28)
    pop = Population(specs, specs[0].architecture.layout, device=device, compile=compile)
    pop.plan_steps(50_000)  # the zoo's own step count decides the mode, as in a build
    slice_ = synthetic(steps * b, shape, device)
    pop.train_epoch(slice_)  # warm-up: compile and capture
    sync(device)
    start = time.perf_counter()
    pop.train_epoch(slice_)
    sync(device)
    per_step = (time.perf_counter() - start) / steps
    data = ImageData(synthetic(n_train, shape, device), synthetic(n_val, shape, device),
                     synthetic(n_test, shape, device), 10, (0.0,), (1.0,))
    sync(device)
    start = time.perf_counter()
    records = pop.checkpoint_records(data, device_name(device))
    rows = pop.rows()
    eval_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # the unit writes of one checkpoint epoch
        writer = create(Path(tmp) / "seed.zoo", m)
        units = [u for u in writer.plan.units if u.epoch == 1]
        start = time.perf_counter()
        done = 0
        for u in units:
            ids = [i for i in u.model_ids if i < len(specs)]
            if ids:
                writer.write_unit(u, torch.zeros(len(u.model_ids), rows.shape[1]), [records[0]] * len(u.model_ids))
                done += 1
        write_s = (time.perf_counter() - start)
    scale = len(m.models) / len(specs)  # a slice of the models: scale to the zoo (GPU time grows at most linearly)
    steps_total = -(-50_000 // b) * m.training["epochs"]
    checkpoints = len(m.checkpoint_epochs)
    total = scale * (steps_total * per_step + checkpoints * eval_s) + checkpoints * write_s
    out = {"models_measured": len(specs), "step_mode": pop.step_mode, "ms_per_step": per_step * 1000,
           "checkpoint_eval_s": eval_s, "checkpoint_write_s": write_s, "steps": steps_total,
           "checkpoints": checkpoints, "extrapolated_minutes": total / 60}
    print(f"  MNIST Seed zoo: {per_step * 1000:.3f} ms/step ({pop.step_mode}, {len(specs)} models), "
          f"checkpoint {eval_s:.2f} s eval + {write_s:.2f} s write -> {total / 60:.1f} min", flush=True)
    return out


def resnet18(device: torch.device, sizes: list[int], steps: int, batch: int) -> dict:
    out: dict = {}
    for precision in ("fp32", "bf16-mixed"):
        rates = {}
        for k in sizes:
            try:
                rates[k] = batch * population_rate(
                    k, steps, device, "resnet18", (3, 32, 32), compile="off", dataset="cifar10", optimizer="sgd",
                    lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=batch, schedule="onecycle",
                    augmentation="crop_flip", precision=precision)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            print(f"  ResNet-18 {precision:<10} K={k:>3}: {rates[k]:>10,.0f} images/s", flush=True)
        best = max(rates, key=rates.get)
        out[precision] = {"k1_images_per_s": rates[sizes[0]], "best_k": best, "best_images_per_s": rates[best],
                          "by_k": rates}
    return out


def loader(device: torch.device, rows: int, batch: int, workers: int, epochs: int) -> dict:
    """ResNet-18 checkpoints through ``ZooDataset`` on ``device`` and on the CPU workers, samples/s."""
    from loaders import ZooDataset

    tmp = Path(tempfile.mkdtemp(prefix="zoo-gpu-loader-"))
    store = resnet18_store(tmp, rows)
    options = {"view": "tokens", "augment": ("permute", "rescale"), "normalize": True}
    out: dict = {"rows": rows, "batch": batch, "workers": workers}
    for key, ds in (("resnet18_tokens_permute_rescale_device_samples_per_s", ZooDataset(store, device=device,
                                                                                          **options)),
                    ("resnet18_tokens_permute_rescale_cpu_workers_samples_per_s", ZooDataset(store, **options))):
        batches = ds.loader(batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
        next(iter(batches))  # warm: workers started, statistics fitted, page cache filled
        start = time.perf_counter()
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            for _ in batches:
                pass
        sync(device)
        out[key] = epochs * len(ds) / (time.perf_counter() - start)
        print(f"  ResNet-18 loader {key.split('_samples')[0][9:]:<40}{out[key]:>10,.1f} samples/s", flush=True)
    window = ZooDataset(store, device=device, windowsize=256, **{**options, "augment": ("permute", "window")})
    batches = window.loader(batch_size=256, num_workers=workers, sampler=torch.utils.data.RandomSampler(
        window, replacement=True, num_samples=256 * 20))
    start = time.perf_counter()
    seen = sum(len(b["tokens"]) for b in batches)
    sync(device)
    out["resnet18_window_permute_device_samples_per_s"] = seen / (time.perf_counter() - start)
    print(f"  ResNet-18 loader window 256 + permute on the device     "
          f"{out['resnet18_window_permute_device_samples_per_s']:>10,.1f} samples/s", flush=True)
    return out


def inr(device: torch.device, models: int, steps: int, recipe_steps: int = 1000) -> dict:
    """``models`` SIRENs on synthetic 28x28 images fitted as one population for ``steps`` steps (after one warm-up
    step), extrapolated to ``recipe_steps``."""
    from builders.inr_population import InrPopulation
    from zoo.manifest import Manifest

    manifest = Manifest.from_dict({
        "zoo": {"name": "gpu-inr", "kind": "inr"}, "dataset": {"name": "mnist"},
        "images": {"split": "train", "count": min(models, 60000)},
        "architecture": {"name": "siren", "offset": 0.5, "init_scheme": "dwsnets", "coords": "xy"},
        "training": {"lr": 5e-4, "epochs": recipe_steps, "batch_size": 784}, "population": {"seeds": [0]},
        "checkpoints": {"epochs": [0, recipe_steps]}}, source="gpu-inr")
    specs = list(manifest.models)
    g = torch.Generator().manual_seed(0)
    # smooth synthetic digits: low-resolution noise upsampled (no dataset files on the device machine)
    images = torch.nn.functional.interpolate(torch.rand(len(specs), 1, 7, 7, generator=g), size=(28, 28),
                                             mode="bilinear", align_corners=False).to(device)
    pop = InrPopulation(specs, manifest.architectures["siren"].layout, images, torch.zeros(len(specs)), device=device)
    pop.train_epoch()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        pop.train_epoch()
    sync(device)
    per_step = (time.perf_counter() - start) / steps
    records = pop.checkpoint_records()
    out = {"models": len(specs), "steps_measured": steps, "ms_per_step": per_step * 1000,
           "recipe_steps": recipe_steps, "recipe_minutes": per_step * recipe_steps / 60,
           "inrs_per_s": len(specs) / (per_step * recipe_steps),
           "mean_psnr_after_measured_steps": sum(r["psnr"] or 0 for r in records) / len(records)}
    print(f"  INR: {len(specs):,} SIRENs, {per_step * 1000:.2f} ms/step -> {recipe_steps} steps in "
          f"{out['recipe_minutes']:.2f} min ({out['inrs_per_s']:,.0f} INRs/s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--seed-steps", type=int, default=300, help="steps of the measured MNIST Seed slice")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on any device (tests the script)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: sweep, seed, resnet, loader, inr")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    captured = device.type == "cuda"
    figures: dict = {"device": device_name(device), "torch": torch.__version__, "smoke": args.smoke}
    print(f"builder on {figures['device']} (torch {torch.__version__}){' [smoke]' if args.smoke else ''}")
    t0 = time.perf_counter()
    if "sweep" not in skip:
        sizes, steps = ([2, 4], 4) if args.smoke else ([64, 256, 1024, 4096], 200)
        figures["cnn_s"] = cnn_s_sweep(sizes, steps, device, captured)
    if "seed" not in skip:
        figures["mnist_seed"] = (mnist_seed(device, 3, 4, (40, 20, 20), "off") if args.smoke else
                                 mnist_seed(device, args.seed_steps, None, (50_000, 10_000, 10_000), "auto"))
    if "resnet" not in skip:
        figures["resnet18"] = (resnet18(device, [1, 2], 2, 8) if args.smoke else
                               resnet18(device, [1, 2, 4, 8, 16], 20, 256))
    if "loader" not in skip:
        figures["loader"] = (loader(device, 4, 2, 0, 1) if args.smoke else loader(device, 64, 8, 8, 2))
    if "inr" not in skip:
        figures["inr"] = inr(device, 16, 3, 10) if args.smoke else inr(device, 10_000, 100)
    figures["seconds"] = time.perf_counter() - t0
    print(json.dumps(figures, indent=2, default=str))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
