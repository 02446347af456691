"""Neural fields fitted as one population against one at a time, in one run.

The digits inr manifest (``manifests/inr/digits.toml``: one SIREN per 8x8 digit of the train split): every field
fitted as one population, against ``--sequential`` fields fitted one after another by the same code (a population
of one; the same steps, extrapolated to all), and by a plain ``torch.optim.Adam`` loop over an ``nn.Module`` (how
the published sets were fitted), in INRs fitted per second; plus the population's mean PSNR at the last step.
``--json`` prints one JSON object with ``population_inrs_per_s``, ``sequential_inrs_per_s``,
``torch_loop_inrs_per_s``, ``population_over_sequential_ratio`` and ``population_over_torch_loop_ratio``.

    python benchmarks/inr.py [--manifest manifests/inr/digits.toml] [--sequential 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from builders.data import load_images
from builders.inr_population import InrPopulation
from zoo.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def fit(manifest, specs, steps: int, device: str) -> tuple[float, list[dict]]:
    """Seconds to fit ``specs`` as one population for ``steps`` steps, and the records at the end."""
    x, y = load_images(manifest.dataset, manifest.images["split"], [s.hparams["image_index"] for s in specs],
                       device=device)
    start = time.perf_counter()
    pop = InrPopulation(specs, manifest.architectures[specs[0].arch_id].layout, x, y, device=device)
    for _ in range(steps):
        pop.train_epoch()
    records = pop.checkpoint_records()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, records


def torch_loop(manifest, specs, steps: int, device: str) -> float:
    """Seconds to fit ``specs`` the way the published INR sets were made: one ``nn.Module`` after another, with
    ``torch.optim.Adam`` over the whole image each step."""
    from builders.population import init_model
    from zoo.architectures.modules import coordinate_grid, from_unit

    options = specs[0].architecture.options
    x, _ = load_images(manifest.dataset, manifest.images["split"], [s.hparams["image_index"] for s in specs],
                       device=device)
    grid = coordinate_grid(x.shape[2], x.shape[3], options["coords"]).to(device)
    start = time.perf_counter()
    for spec, image in zip(specs, x):
        net = init_model(spec).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=spec.training["lr"])
        target = from_unit(image.permute(1, 2, 0).reshape(-1, image.shape[0]), options["pixels"])
        for _ in range(steps):
            loss = (net(grid) - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests/inr/digits.toml"))
    parser.add_argument("--sequential", type=int, default=16, help="fields fitted one at a time (extrapolated)")
    parser.add_argument("--models", type=int, default=None, help="fit only the first N fields of the manifest")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)  # as a CPU build does: fitted fields leave denormal gradients
    manifest = load_manifest(args.manifest)
    specs = list(manifest.models)[:args.models]
    steps = manifest.training["epochs"]
    seconds, records = fit(manifest, specs, steps, args.device)
    alone = sum(fit(manifest, [s], steps, args.device)[0] for s in specs[:args.sequential])
    loop = torch_loop(manifest, specs[:args.sequential], steps, args.device)
    figures = {"manifest": args.manifest, "device": args.device, "fields": len(specs), "steps": steps,
               "population_seconds": seconds, "population_inrs_per_s": len(specs) / seconds,
               "sequential_inrs_per_s": min(args.sequential, len(specs)) / alone,
               "torch_loop_inrs_per_s": min(args.sequential, len(specs)) / loop,
               "mean_psnr": statistics.mean(r["psnr"] for r in records),
               "min_psnr": min(r["psnr"] for r in records)}
    figures["population_over_sequential_ratio"] = figures["population_inrs_per_s"] / figures["sequential_inrs_per_s"]
    figures["population_over_torch_loop_ratio"] = figures["population_inrs_per_s"] / figures["torch_loop_inrs_per_s"]
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{len(specs):,} fields x {steps} steps on {args.device}")
    print(f"{'population':<28}{figures['population_inrs_per_s']:>12,.1f} INRs/s  ({seconds:.1f} s)")
    print(f"{'one at a time':<28}{figures['sequential_inrs_per_s']:>12,.2f} INRs/s  ({args.sequential} fitted)")
    print(f"{'torch.optim loop, one by one':<28}{figures['torch_loop_inrs_per_s']:>12,.2f} INRs/s")
    print(f"{'population / one at a time':<28}{figures['population_over_sequential_ratio']:>12,.1f}x")
    print(f"{'population / torch.optim loop':<28}{figures['population_over_torch_loop_ratio']:>12,.1f}x")
    print(f"{'PSNR at the last step':<28}{figures['mean_psnr']:>12.1f} dB mean, {figures['min_psnr']:.1f} dB min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
