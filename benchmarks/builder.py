"""Vectorized population training against one-model-at-a-time training, eager and compiled, in one run.

cnn-s with the Model Zoos recipe (batch size 10, Adam), MNIST-sized inputs (1x28x28; the pixel values do not
change the speed, so random tensors stand in for MNIST, which cannot be downloaded everywhere). Trains K=64
models as one population and the same 64 models one after another with the reference loop (nn.Module +
torch.optim), the same number of steps each, and prints model-steps/s for both and the ratio. The same with the
compiled step (``torch.compile(fullgraph=True)``; on CUDA captured as a CUDA graph): K=64 compiled against 64
compiled single-model populations one after another. Host time per step at K=1, batch 1 (where dispatch is
everything), eager and compiled. Then a K sweep of the population alone, and on a GPU a ResNet-18 (CIFAR stem)
epoch throughput in images/s.

    python benchmarks/builder.py [--steps 100] [--device auto] [--sweep 64,256,1024] [--no-compile] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from builders.data import Split
from builders.devices import device_name, resolve_device
from builders.population import Population
from builders.reference import train_single
from zoo.manifest import Manifest


def manifest(k: int, arch: str = "cnn-s", dataset: str = "mnist", **training) -> Manifest:
    recipe = {"optimizer": "adam", "lr": 3e-4, "batch_size": 10, "epochs": 1, "init": "uniform", **training}
    return Manifest.from_dict({
        "zoo": {"name": "bench"}, "dataset": {"name": dataset}, "architecture": {"name": arch},
        "training": recipe, "population": {"seeds": {"start": 1, "stop": k + 1}}, "checkpoints": {"epochs": "all"},
    }, source="bench")


def synthetic(n: int, shape: tuple[int, ...], device: torch.device, classes: int = 10) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return Split(x.to(device), torch.randint(0, classes, (n,), generator=g).to(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def population_rate(k: int, steps: int, device: torch.device, arch: str = "cnn-s", shape=(1, 28, 28),
                    compile: str = "off", specs=None, **kw) -> float:
    """Model-steps per second of one population epoch of ``steps`` steps (after a warm-up epoch on the same
    data: it compiles and captures the step where ``compile`` is on)."""
    m = manifest(k, arch, **kw)
    b = m.training["batch_size"]
    data = synthetic(steps * b, shape, device)
    pop = Population(specs or list(m.models), m.models[0].architecture.layout, device=device, compile=compile)
    pop.train_epoch(data)
    sync(device)
    start = time.perf_counter()
    pop.train_epoch(data)
    sync(device)
    return len(pop.specs) * steps / (time.perf_counter() - start)


def step_ms(steps: int, device: torch.device, compile: str) -> float:
    """Host time per step of one cnn-s at batch 1: the dispatch cost of the step itself."""
    return 1000.0 / population_rate(1, steps, device, compile=compile, batch_size=1)


def sequential_compiled_rate(k: int, steps: int, device: torch.device) -> float:
    """``k`` compiled single-model populations one after another (the compiled step is built once)."""
    m = manifest(k)
    data = synthetic(steps * m.training["batch_size"], (1, 28, 28), device)
    population_rate(1, steps, device, compile="on")  # compile outside the timing (the same step shape)
    sync(device)
    start = time.perf_counter()
    for spec in m.models:
        pop = Population([spec], spec.architecture.layout, device=device, compile="on")
        pop.train_epoch(data)
    sync(device)
    return k * steps / (time.perf_counter() - start)


def sequential_rate(k: int, steps: int, device: torch.device) -> float:
    m = manifest(k)
    data = synthetic(steps * m.training["batch_size"], (1, 28, 28), device)
    train_single(m.models[0], synthetic(10, (1, 28, 28), device), 1, device=device)  # warm-up
    sync(device)
    start = time.perf_counter()
    for spec in m.models:
        train_single(spec, data, 1, device=device)
    sync(device)
    return k * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sweep", default="64,256,1024", help="population sizes for the sweep")
    parser.add_argument("--resnet", action="store_true", help="ResNet-18 throughput on the CPU too (slow)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step (compiling takes minutes "
                                                                  "on a small CPU)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush denormal floats to zero (on CPU they can slow both loops ~20x)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    # The Model Zoos recipe (uniform init in [0, 1], tanh) saturates units, and the tiny gradients that follow
    # become denormal floats, which x86 CPUs process ~100x slower. Flushing them is the same setting for both
    # loops, so the ratio compares the computations, not the denormal penalty.
    torch.set_flush_denormal(not args.keep_denormals)

    k = 64
    vec = population_rate(k, args.steps, device)
    seq = sequential_rate(k, args.steps, device)
    sweep = {int(s): population_rate(int(s), args.steps, device) for s in args.sweep.split(",") if s}
    figures = {
        "device": device_name(device), "threads": torch.get_num_threads(), "steps_per_model": args.steps,
        "flush_denormal": not args.keep_denormals,
        "k": k, "vectorized_model_steps_per_s": vec, "sequential_model_steps_per_s": seq,
        "vectorized_over_sequential_ratio": vec / seq,
        "sweep_model_steps_per_s": sweep,
        "step_ms_eager": step_ms(args.steps, device, "off"),
    }
    if not args.no_compile:
        cvec = population_rate(k, args.steps, device, compile="on")
        cseq = sequential_compiled_rate(k, args.steps, device)
        figures.update(step_ms_compiled=step_ms(args.steps, device, "on"),
                       compiled_vectorized_model_steps_per_s=cvec, compiled_sequential_model_steps_per_s=cseq,
                       compiled_vectorized_over_sequential_ratio=cvec / cseq)
        figures["compiled_over_eager_step_ratio"] = figures["step_ms_eager"] / figures["step_ms_compiled"]
    if device.type == "cuda" or args.resnet:
        for kr in (1, 8):
            rate = population_rate(kr, 20, device, "resnet18", (3, 32, 32), dataset="cifar10", optimizer="sgd",
                                   lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=256, schedule="onecycle",
                                   augmentation="crop_flip")
            figures[f"resnet18_k{kr}_images_per_s"] = rate * 256
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"cnn-s, batch 10, Adam, {args.steps} steps per model on {figures['device']} ({figures['threads']} threads)")
    print(f"{'':<34}{'model-steps/s':>16}")
    print(f"{'vectorized population, K=64':<34}{vec:>16,.0f}")
    print(f"{'one model at a time, 64 models':<34}{seq:>16,.0f}")
    print(f"{'ratio vectorized / sequential':<34}{vec / seq:>16.1f}x")
    if "step_ms_compiled" in figures:
        print(f"{'compiled population, K=64':<34}{figures['compiled_vectorized_model_steps_per_s']:>16,.0f}")
        print(f"{'compiled, one model at a time':<34}{figures['compiled_sequential_model_steps_per_s']:>16,.0f}")
        print(f"{'ratio compiled vectorized / seq.':<34}{figures['compiled_vectorized_over_sequential_ratio']:>16.1f}x")
    print(f"{'host ms per step, K=1 batch 1':<34}{'eager':>8}{figures['step_ms_eager']:>8.2f}")
    if "step_ms_compiled" in figures:
        print(f"{'':<34}{'compiled':>8}{figures['step_ms_compiled']:>8.2f}"
              f"  ({figures['compiled_over_eager_step_ratio']:.1f}x lower)")
    for size, rate in sweep.items():
        print(f"{f'vectorized population, K={size}':<34}{rate:>16,.0f}")
    for key in (k for k in figures if k.startswith("resnet18")):
        print(f"{key.replace('_', ' '):<34}{figures[key]:>16,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
