"""Import throughput of the published-zoo importers, in one run.

Writes, into a temporary folder, a Model Zoos zoo of CNN-s Ray Tune trial folders (``params.json``,
``result.json``, ``checkpoint_NNNNNN/checkpoints`` holding the published ``module_list`` CNN's state dict as
``torch.save`` writes it; default 128 trials x 25 epochs = 3,200 checkpoints) and a Small CNN Zoo sample
(``weights.npy``, ``metrics.csv.gz``, ``layout.csv``; default 300 runs x 9 steps = 2,700 checkpoints). Then times
``import_modelzoo`` with the default worker processes (one per CPU) and with one (this process alone), and
``import_smallcnnzoo``, each into a new store (the fastest of ``--repeat`` runs), and prints checkpoints/s of each,
side by side; the parallel import's store is checked to equal the one-worker import's. The parallel import runs
first, while this process has no other thread, so its workers start as ``zoo import``'s do (``fork`` on Linux;
``workers.py``); its first run, which also pays the process's first-use costs (a ``zoo import`` pays them every
time, besides starting Python and importing the library), is reported too. ``--json`` prints one JSON object
(``modelzoo_checkpoints_per_s``, ``modelzoo_one_worker_checkpoints_per_s``, ``smallcnnzoo_checkpoints_per_s``).

The fixture writers here are also what ``tests/test_importers.py`` builds its fixtures with. Nothing heavy is
imported at module level: the import's worker processes start from a fork server that imports this script.

    python benchmarks/importers.py [--trials 128] [--epochs 24] [--workers N] [--runs 300] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import atexit
import csv
import gzip
import json
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

# --- Model Zoos fixtures: Ray Tune trial folders ---------------------------------------------------------------
ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu", "leakyrelu")
#: (seed, nlin, dropout, lr) of the tests' four trials.
TRIALS = [
    (11, "tanh", 0.0, 1e-3),
    (12, "tanh", 0.5, 1e-3),
    (13, "relu", 0.0, 3e-3),
    (14, "leakyrelu", 0.5, 1e-3),
]


def module_list_cnn(nlin: str, dropout: float) -> nn.Module:
    """CNN-s as the Model Zoos define it: one ``module_list`` (dropout modules, when the rate is > 0, shift the
    layer indices), so its state dict names are the published ``module_list.N.weight``."""
    from torch import nn

    act = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leakyrelu": nn.LeakyReLU}[nlin]
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(OrderedDict(module_list=nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.MaxPool2d(2, 2), act(), *drop,
        nn.Conv2d(8, 6, 5), nn.MaxPool2d(2, 2), act(), *drop,
        nn.Conv2d(6, 4, 2), act(), nn.Flatten(),
        nn.Linear(36, 20), act(), *drop,
        nn.Linear(20, 10))))


def trial_params(seed: int, nlin: str, dropout: float, lr: float, epochs: int = 2) -> dict[str, Any]:
    """A trial's ``params.json``, as the published CNN-s zoos write it."""
    return {"model::type": "CNN", "model::channels_in": 1, "model::o_dim": 10, "model::nlin": nlin,
            "model::dropout": dropout, "model::init_type": "uniform", "model::use_bias": False,
            "optim::optimizer": "adam", "optim::lr": lr, "optim::wd": 1e-3, "optim::momentum": 0.9,
            "seed": seed, "training::batchsize": 10, "training::epochs_train": epochs, "training::start_epoch": 1,
            "cuda": False, "dataset::dump": "/data/zoos/MNIST/dataset.pt"}


def many_trials(n: int) -> list[tuple[int, str, float, float]]:
    """``n`` trials varying in seed, activation, dropout and learning rate."""
    return [(seed, ACTIVATIONS[seed % 4], (0.0, 0.5)[seed // 4 % 2], (1e-3, 3e-3)[seed // 8 % 2])
            for seed in range(n)]


def write_modelzoo(root: Path, trials=TRIALS, epochs: int = 2, train: bool = True) -> dict:
    """Ray Tune trial folders in ``root``; returns {trial name: {"params", "states": {epoch: sd}, "results":
    {epoch: line}, "nlin", "dropout"}}. Each epoch's weights differ: a step of training on random data
    (``train``), or random noise added (faster, for large fixtures)."""
    import torch
    from torch import nn

    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")  # experiment-level files beside the trials are ignored
    (root / "readme.md").write_text("")
    out = {}
    for k, (seed, nlin, dropout, lr) in enumerate(trials):
        name = f"NN_tune_trainable_4f2a1_{k:05d}_{k}_seed={seed}"
        folder = root / name
        folder.mkdir()
        params = trial_params(seed, nlin, dropout, lr, epochs)
        (folder / "params.json").write_text(json.dumps(params))
        torch.manual_seed(seed)
        model = module_list_cnn(nlin, dropout)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        rng = np.random.default_rng(seed)
        states, lines = {}, []
        for epoch in range(epochs + 1):
            if epoch > 0 and train:  # a step of training on random data, so every epoch's weights differ
                x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            elif epoch > 0:
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn_like(p), alpha=0.01)
            ckpt = folder / f"checkpoint_{epoch:06d}"
            ckpt.mkdir()
            sd = {key: v.clone() for key, v in model.state_dict().items()}
            torch.save(sd, ckpt / "checkpoints")
            torch.save({}, ckpt / "optimizer")
            states[epoch] = sd
            line = {"train_loss": -999 if epoch == 0 else float(rng.uniform(0.5, 2)),
                    "train_acc": -999 if epoch == 0 else float(rng.uniform()),
                    "test_loss": float(rng.uniform(0.5, 2)), "test_acc": float(rng.uniform()),
                    "val_loss": float(rng.uniform(0.5, 2)), "val_acc": float(rng.uniform()),
                    "training_iteration": epoch, "time_total_s": 1.5 * epoch, "trial_id": "4f2a1",
                    "config": params}
            lines.append(line)
        (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        out[name] = {"params": params, "states": states, "results": {x["training_iteration"]: x for x in lines},
                     "nlin": nlin, "dropout": dropout}
    return out


# --- Small CNN Zoo fixtures: weights.npy, metrics.csv.gz, layout.csv ------------------------------------------
RUNS = [  # activation, dropout, optimizer, lr, l2reg, w_init, init_std, train_fraction
    ("relu", 0.05, "adam", 0.004, 1e-5, "he_normal", 0.05, 1.0),
    ("tanh", 0.31, "sgd", 0.02, 3e-4, "RandomNormal", 0.02, 0.5),
    ("relu", 0.0, "rmsprop", 0.001, 1e-8, "GlorotNormal", 0.1, 0.25),
    ("tanh", 0.62, "adam", 0.0007, 2e-3, "TruncatedNormal", 0.3, 0.1),
    ("relu", 0.12, "sgd", 0.03, 1e-6, "Orthogonal", 0.007, 1.0),
]
STEPS = (0, 1, 3)
#: The published zoo's checkpoint steps (epochs).
PUBLISHED_STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)
KERAS_VARS = [("conv2d", (3, 3, 1, 16)), ("conv2d_1", (3, 3, 16, 16)), ("conv2d_2", (3, 3, 16, 16)),
              ("dense", (16, 10))]


def keras_params(rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bias, kernel) of each Keras layer, kernels in Keras's order ((kh, kw, in, out), (in, out))."""
    return [(rng.normal(0, 0.1, shape[-1]).astype(np.float32), rng.normal(0, 0.3, shape).astype(np.float32))
            for _, shape in KERAS_VARS]


def keras_row(params) -> np.ndarray:
    """One row of ``weights.npy``: each layer's bias before its kernel."""
    return np.concatenate([np.concatenate([b, k.ravel()]) for b, k in params])


def many_runs(n: int) -> list[tuple]:
    """``n`` runs cycling through the tests' five recipes with other learning rates."""
    return [(*RUNS[i % len(RUNS)][:3], RUNS[i % len(RUNS)][3] * (1 + i // len(RUNS)), *RUNS[i % len(RUNS)][4:])
            for i in range(n)]


def write_smallcnnzoo(root: Path, runs=RUNS, dataset="mnist", drop=(), steps=STEPS) -> dict:
    """weights.npy, metrics.csv.gz, layout.csv; rows interleaved across runs (order must not matter); ``drop``
    holds (run index, step) pairs left out (a crashed run)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    runs_out, rows, metrics = {}, [], []
    entries = [(r, s) for s in steps for r in range(len(runs)) if (r, s) not in drop]
    for r, step in entries:
        act, dropout, opt, lr, l2, w_init, std, frac = runs[r]
        name = f"gs://bucket/smallcnnzoo/{dataset}/{1000 + r}/"
        params = keras_params(rng)
        runs_out.setdefault(name, {"index": r, "activation": act, "params": {}, "metrics": {}, "run": runs[r]})
        runs_out[name]["params"][step] = params
        m = {"test_accuracy": float(rng.uniform()), "test_loss": float(rng.uniform(0, 3)),
             "train_accuracy": float(rng.uniform()), "train_loss": float(rng.uniform(0, 3))}
        runs_out[name]["metrics"][step] = m
        rows.append(keras_row(params))
        metrics.append({"": f"{name}permanent_ckpt-{step}", **m, "config.activation": act, "config.b_init": "zeros",
                        "config.dataset": dataset, "config.dnn_architecture": "cnn", "config.dropout": dropout,
                        "config.epochs": steps[-1], "config.epochs_between_checkpoints": 20, "config.init_std": std,
                        "config.l2reg": l2, "config.learning_rate": lr, "config.num_layers": 3,
                        "config.num_units": 16, "config.optimizer": opt, "config.random_seed": 42,
                        "config.train_fraction": frac, "config.w_init": w_init, "modeldir": name, "step": step})
    np.save(root / "weights.npy", np.stack(rows))
    with gzip.open(root / "metrics.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(metrics[0]))
        writer.writeheader()
        writer.writerows(metrics)
    with open(root / "layout.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["", "varname", "start_idx", "end_idx", "size", "shape"])
        offset = 0
        for i, (layer, shape) in enumerate(KERAS_VARS):
            for var, vshape in (("bias", (shape[-1],)), ("kernel", shape)):
                size = int(np.prod(vshape))
                out.writerow([2 * i + (var == "kernel"), f"sequential/{layer}/{var}:0", offset, offset + size,
                              size, str(vshape)])
                offset += size
    return runs_out


# --- the benchmark ---------------------------------------------------------------------------------------------
def best_time(fn, repeat: int) -> tuple[Any, float, float]:
    """(last result, fastest of ``repeat`` runs of ``fn(run)``, the first run's time), each into a store of its
    own."""
    out, times = None, []
    for run in range(repeat):
        start = time.perf_counter()
        out = fn(run)
        times.append(time.perf_counter() - start)
    return out, min(times), times[0]


def same_store(a: Path, b: Path) -> bool:
    """Bit-equal weights, equal attributes (creation time aside) and equal metadata in two stores of one zoo."""
    import zoo

    za, zb = zoo.open(a), zoo.open(b)
    for arch in za.attrs["architectures"]:
        if not np.array_equal(np.asarray(za.weights(arch)[:]).view(np.uint32),
                              np.asarray(zb.weights(arch)[:]).view(np.uint32)):
            return False
    if {k: v for k, v in za.attrs.items() if k != "created"} != {k: v for k, v in zb.attrs.items() if k != "created"}:
        return False
    rows = [sorted(z.metadata.to_pylist(), key=lambda r: r["row"]) for z in (za, zb)]
    return rows[0] == rows[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=128, help="Model Zoos trial folders (models)")
    parser.add_argument("--epochs", type=int, default=24, help="epochs per trial (checkpoints 0..EPOCHS)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    parser.add_argument("--runs", type=int, default=300, help="Small CNN Zoo runs (9 checkpoints each); 0: skip")
    parser.add_argument("--repeat", type=int, default=3, help="imports of each kind; the fastest is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from builders.importers import import_modelzoo, import_smallcnnzoo
    from builders.importers.workers import start_method, worker_count

    tmp = Path(tempfile.mkdtemp(prefix="zoo-bench-import-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    src = tmp / "tune_zoo_mnist_uniform"
    start = time.perf_counter()
    write_modelzoo(src, many_trials(args.trials), epochs=args.epochs, train=False)  # files now in the page cache
    t_fixture = time.perf_counter() - start
    workers = worker_count(args.workers)
    method = start_method()  # what the parallel import starts its workers with: first, as in `zoo import`

    par, t_par, t_cold = best_time(lambda run: import_modelzoo(src, tmp / f"par{run}.zoo", dataset="mnist",
                                                               workers=workers), args.repeat)
    one, t_one, _ = best_time(lambda run: import_modelzoo(src, tmp / f"one{run}.zoo", dataset="mnist", workers=1),
                              args.repeat)
    n = par.checkpoints
    figures: dict[str, Any] = {
        "modelzoo_checkpoints": n, "modelzoo_models": par.models, "workers": par.workers,
        "start_method": method if par.workers > 1 else None,
        "modelzoo_checkpoints_per_s": n / t_par,
        "modelzoo_one_worker_checkpoints_per_s": n / t_one,
        "modelzoo_first_import_checkpoints_per_s": n / t_cold,
        "modelzoo_speedup": t_one / t_par,
        "modelzoo_same_store": same_store(tmp / "one0.zoo", tmp / "par0.zoo"),
        "modelzoo_fixture_s": t_fixture,
    }
    if args.runs:
        sc = tmp / "smallcnnzoo" / "mnist"
        write_smallcnnzoo(sc, many_runs(args.runs), steps=PUBLISHED_STEPS)
        rep, t_sc, _ = best_time(lambda run: import_smallcnnzoo(sc, tmp / f"sc{run}.zoo"), args.repeat)
        figures.update(smallcnnzoo_checkpoints=rep.checkpoints, smallcnnzoo_checkpoints_per_s=rep.checkpoints / t_sc)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"Model Zoos: {n:,} CNN-s checkpoints ({par.models} trial folders x {len(par.checkpoint_epochs)} epochs, "
          f"one torch.save file each); fastest of {args.repeat} imports each")
    print(f"{'':<40}{'checkpoints/s':>14}{'seconds':>10}")
    label = f"modelzoo, {par.workers} workers ({method})" if par.workers > 1 else "modelzoo, 1 worker"
    print(f"{label:<40}{figures['modelzoo_checkpoints_per_s']:>14,.0f}{t_par:>10.2f}")
    print(f"{'modelzoo, 1 worker (in-process)':<40}{figures['modelzoo_one_worker_checkpoints_per_s']:>14,.0f}"
          f"{t_one:>10.2f}")
    print(f"{'modelzoo, first import of the process':<40}{figures['modelzoo_first_import_checkpoints_per_s']:>14,.0f}"
          f"{t_cold:>10.2f}")
    if args.runs:
        label = f"smallcnnzoo ({figures['smallcnnzoo_checkpoints']:,} checkpoints)"
        print(f"{label:<40}{figures['smallcnnzoo_checkpoints_per_s']:>14,.0f}{t_sc:>10.2f}")
    print(f"parallel / one worker: {figures['modelzoo_speedup']:.2f}x; "
          f"the same store: {figures['modelzoo_same_store']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
