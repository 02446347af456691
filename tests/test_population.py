"""The vectorized population is the same zoo as training each model alone, only faster."""

from __future__ import annotations

import math

import pytest
import torch

from builders.data import Split
from builders.optim import lr_factor
from builders.population import Population, data_order
from builders.reference import train_single
from zoo.manifest import Manifest


def _manifest(arch: dict, training: dict, grid: dict, seeds: list[int], dataset: str = "mnist") -> Manifest:
    return Manifest.from_dict({
        "zoo": {"name": "equivalence"},
        "dataset": {"name": dataset},
        "architecture": arch,
        "training": {"batch_size": 10, **training},
        "population": {"seeds": seeds, "grid": grid},
        "checkpoints": {"epochs": "all"},
    })


def _data(shape, n: int, classes: int = 10, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Split(x, y)


def _compare(manifest: Manifest, train: Split, epochs: int, dtype: torch.dtype = torch.float64) -> None:
    """Train vectorized and alone from the same seeds and data order and compare the weights.

    In float64 one step's gradients agree to 1e-16 (the arithmetic is the same; per-model grad under vmap sums
    in another order than one model's backward), and after hundreds of steps the rows agree norm-wise to 1e-5:
    momentum and high learning rates amplify the last bits a little. In float32 they agree to round-off
    (norm-wise, 1e-4) over tens of steps; the sums of a grouped convolution round differently, and over
    hundreds of steps on random labels such a last bit can tip a max-pool tie or an Adam step on a near-zero
    second moment, so float32 is checked on the shorter horizon."""
    specs = list(manifest.models)
    arch = specs[0].architecture
    train = Split(train.x.to(dtype), train.y)
    pop = Population(specs, arch.layout, dtype=dtype)
    for _ in range(epochs):
        pop.train_epoch(train)
    rows = pop.rows()
    for k, spec in enumerate(specs):
        alone = train_single(spec, train, epochs, dtype=dtype)
        expected = arch.layout.flatten(alone.state_dict())
        assert torch.isfinite(expected).all()
        moved = (expected - Population([spec], arch.layout).rows()[0]).abs().max()
        assert moved > 1e-3, "training must move the weights for the comparison to mean anything"
        where = f"model {spec.model_id} ({dict(spec.hparams)})"
        if dtype == torch.float64:
            assert float((rows[k] - expected).norm() / expected.norm()) < 1e-5, where
            torch.testing.assert_close(rows[k], expected, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, where=where: f"{where}: {m}")
        else:
            assert float((rows[k] - expected).norm() / expected.norm()) < 1e-4, where


@pytest.mark.parametrize("optimizer,grid", [
    ("adam", {"training.lr": [1e-3, 3e-4], "training.weight_decay": [0.0, 1e-3]}),
    ("sgd", {"training.lr": [1e-2, 3e-2], "training.momentum": [0.0, 0.9], "training.weight_decay": [0.0, 5e-4]}),
])
def test_cnn_s_population_equals_single_model_training(optimizer, grid):
    m = _manifest({"name": "cnn-s", "activation": "tanh"},
                  {"optimizer": optimizer, "epochs": 10, "init": "kaiming_uniform"}, grid, [1])
    train = _data((1, 28, 28), 200)  # 20 steps per epoch: 200 steps
    _compare(m, train, epochs=10)
    _compare(m, train, epochs=3, dtype=torch.float32)


def test_small_resnet_with_onecycle_and_batchnorm_equals_single_model_training():
    m = _manifest({"name": "resnet", "width": 8, "blocks": [1, 1, 1]},
                  {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle",
                   "epochs": 5, "batch_size": 16}, {"training.lr": [0.05, 0.1]}, [3], dataset="cifar10")
    train = _data((3, 8, 8), 160)  # 10 steps per epoch: 50 steps
    _compare(m, train, epochs=5)
    _compare(m, train, epochs=5, dtype=torch.float32)


def test_adamw_and_rmsprop_match_torch():
    for optimizer in ("adamw", "rmsprop"):
        m = _manifest({"name": "mlp", "hidden": [16], "activation": "relu"},
                      {"optimizer": optimizer, "epochs": 4, "lr": 1e-3, "weight_decay": 1e-2}, {}, [5, 6],
                      dataset="digits")
        _compare(m, _data((1, 8, 8), 120), epochs=4)


def test_vit_population_equals_single_model_training():
    """Attention under vmap (torch's batching fallback for scaled_dot_product_attention) trains each model as alone.

    SGD with momentum, not Adam: torchvision's ViT zero-initializes its head, so in the first steps the gradients of
    every earlier layer are ~0 (exactly 0 at step one, then tiny), and Adam's normalization by the square root of
    the second moment turns the last-bit differences of those tiny gradients (vmap sums in another order than one
    model's backward) into full-size steps; SGD keeps them as small as they are."""
    m = _manifest({"name": "vit", "layers": 1, "heads": 2, "width": 16, "mlp": 32, "patch": 4},
                  {"optimizer": "sgd", "momentum": 0.9, "epochs": 3},
                  {"training.lr": [1e-2, 3e-2], "training.weight_decay": [0.0, 5e-4]}, [2], dataset="digits")
    train = _data((1, 8, 8), 120)  # 12 steps per epoch: 36 steps
    _compare(m, train, epochs=3)


def test_onecycle_factor_matches_torch_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    total = 37
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total, cycle_momentum=False)
    for step in range(total):
        assert math.isclose(opt.param_groups[0]["lr"], 0.1 * lr_factor("onecycle", step, total), rel_tol=1e-9)
        opt.step()
        sched.step()


def test_population_is_bitwise_reproducible_and_batchnorm_statistics_are_per_model():
    m = _manifest({"name": "resnet", "width": 4, "blocks": [1, 1]},
                  {"optimizer": "adam", "epochs": 2, "augmentation": "crop_flip"}, {}, [1, 2, 3], dataset="cifar10")
    train = _data((3, 8, 8), 40)
    runs = []
    for _ in range(2):
        pop = Population(list(m.models), m.models[0].architecture.layout)
        pop.train_epoch(train)
        pop.train_epoch(train)
        runs.append(pop.rows())
    assert torch.equal(runs[0], runs[1])
    mean = m.models[0].architecture.layout["bn1.running_mean"]
    stats = runs[0][:, mean.offset:mean.stop]
    assert not torch.equal(stats[0], stats[1]) and stats.abs().sum() > 0


def test_dropout_masks_differ_per_model_but_reproduce():
    m = _manifest({"name": "mlp", "hidden": [32], "dropout": 0.5}, {"optimizer": "sgd", "epochs": 1, "lr": 0.1},
                  {"training.lr": [0.1, 0.1]}, [7], dataset="digits")  # twins: only dropout masks tell them apart
    train = _data((1, 8, 8), 50)
    pop = Population(list(m.models), m.models[0].architecture.layout)
    pop.train_epoch(train)
    rows = pop.rows()
    assert not torch.equal(rows[0], rows[1])
    again = Population(list(m.models), m.models[0].architecture.layout)
    again.train_epoch(train)
    assert torch.equal(again.rows(), rows)


def test_data_order_is_per_model_and_per_epoch():
    a, b, c = data_order(1, 1, 100), data_order(2, 1, 100), data_order(1, 2, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, data_order(1, 1, 100))


def test_divergence_is_flagged_not_dropped():
    m = _manifest({"name": "mlp", "hidden": [16]}, {"optimizer": "sgd", "epochs": 2}, {"training.lr": [1e-2, 1e12]},
                  [1], dataset="digits")
    train = _data((1, 8, 8), 60)
    pop = Population(list(m.models), m.models[0].architecture.layout)
    pop.train_epoch(train)
    pop.train_epoch(train)
    assert pop.diverged.tolist() == [False, True]
    assert torch.isfinite(pop.rows()[0]).all()
