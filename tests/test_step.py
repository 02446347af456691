"""The training step: host-synchronization free (it compiles with fullgraph=True), compiled equals eager, and a
model's randomness is its own whatever population it trains in."""

from __future__ import annotations

import math

import pytest
import torch

from builders.data import Split
from builders.devices import choose_mode
from builders.optim import lr_factor
from builders.population import Population
from builders.reference import train_single
from builders.step import StepKey, make_step
from builders.streams import combine, model_keys, uniform
from zoo.manifest import Manifest


def _manifest(arch: dict, training: dict, seeds: list[int], grid: dict | None = None,
              dataset: str = "digits") -> Manifest:
    return Manifest.from_dict({
        "zoo": {"name": "step"}, "dataset": {"name": dataset}, "architecture": arch,
        "training": {"batch_size": 8, "epochs": 3, **training},
        "population": {"seeds": seeds, "grid": grid or {}}, "checkpoints": {"epochs": "all"},
    })


def _data(shape, n: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def _rows(specs, train: Split, epochs: int, **kw) -> tuple[torch.Tensor, Population]:
    pop = Population(specs, specs[0].architecture.layout, **kw)
    for _ in range(epochs):
        pop.train_epoch(train)
    return pop.rows(), pop


@pytest.mark.parametrize("arch,dataset,shape,grouped", [
    ({"name": "mlp", "hidden": [16]}, "digits", (1, 8, 8), False),  # vmap over functional_call
    ({"name": "cnn-s"}, "mnist", (1, 28, 28), True),  # the grouped forward (grouped.py)
])
@pytest.mark.slow
def test_compiled_step_equals_eager_and_single_model_training(arch, dataset, shape, grouped):
    """torch.compile(fullgraph=True) refuses any graph break: a .item(), a .cpu() or a Python branch on a tensor
    value in forward, backward, optimizer update or schedule would fail this test. Dropout (per-model rates,
    counter-based masks) is compiled too and draws the same numbers as eager."""
    m = _manifest(arch, {"optimizer": "adam", "schedule": "onecycle", "lr": 3e-3, "weight_decay": 1e-4},
                  [1, 2], {"architecture.dropout": [0.0, 0.3]}, dataset=dataset)
    assert (Population(list(m.models), m.models[0].architecture.layout)._grouped is not None) == grouped
    train = _data(shape, 40)  # 5 full batches: one step shape, one compilation
    specs = list(m.models)
    eager, pop_e = _rows(specs, train, 2, compile="off")
    compiled, pop_c = _rows(specs, train, 2, compile="on")
    assert (pop_e.step_mode, pop_c.step_mode) == ("eager", "compiled")
    moved = (eager - Population(specs, specs[0].architecture.layout).rows()).abs().max()
    assert moved > 1e-2
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pop_c.optimizer.state[0]["exp_avg_sq"], pop_e.optimizer.state[0]["exp_avg_sq"],
                               rtol=1e-5, atol=1e-9)
    assert int(pop_c.optimizer.steps_t) == int(pop_e.optimizer.steps_t) == 10
    # the models without dropout are what training alone gives (the reference loop has no dropout)
    for k, spec in enumerate(specs):
        if spec.architecture.options["dropout"] == 0.0:
            alone = specs[0].architecture.layout.flatten(train_single(spec, train, 2).state_dict())
            torch.testing.assert_close(compiled[k], alone, rtol=1e-4, atol=1e-5)


def test_a_models_draws_do_not_depend_on_its_population():
    """Dropout masks and augmentation come from the model's own stream: trained in populations of 6 or of 2, bit
    for bit the same weights on a CPU (so a build's population size changes no byte of the zoo). Alone (K=1),
    vmap lowers the convolutions to ungrouped ones, which round differently: the same to float32 round-off."""
    m = _manifest({"name": "cnn-s", "dropout": 0.2}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                      "augmentation": "crop_flip", "epochs": 2},
                  [3, 4, 5], {"architecture.dropout": [0.2, 0.5]}, dataset="mnist")
    train = _data((1, 28, 28), 40)
    specs = list(m.models)
    together, _ = _rows(specs, train, 2)
    pair, _ = _rows([specs[4], specs[0]], train, 2)
    assert torch.equal(pair[0], together[4]) and torch.equal(pair[1], together[0])
    alone, _ = _rows([specs[4]], train, 2)
    assert float((alone[0] - together[4]).norm() / together[4].norm()) < 1e-6
    assert not torch.equal(together[0], together[3])  # same seed, other rate: other masks


def test_streams_are_uniform_and_independent_per_key():
    keys = model_keys([7, 7, 8], [0, 1, 2])
    assert len(set(keys.tolist())) == 3  # one seed, two ids: two streams
    u = uniform(keys, (4096,), salt=1)
    assert u.shape == (3, 4096) and u.dtype == torch.float32
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    for row in u:
        assert abs(float(row.mean()) - 0.5) < 0.02 and abs(float(row.var()) - 1 / 12) < 0.005
    assert float(torch.corrcoef(u)[0, 1].abs()) < 0.05
    assert not torch.equal(uniform(keys, (16,), salt=1), uniform(keys, (16,), salt=2))
    assert torch.equal(combine(keys, 5), combine(keys.clone(), 5))


def test_schedule_on_the_device_equals_the_python_schedule():
    total = 37
    for step in range(total):
        expected = lr_factor("onecycle", step, total)
        got = lr_factor("onecycle", torch.tensor(float(step), dtype=torch.float64), total)
        assert math.isclose(float(got), expected, rel_tol=1e-12)


def test_the_step_reads_nothing_back_to_the_host():
    """Eagerly, a host read is a call on a tensor's value: under this mode any such call raises."""
    m = _manifest({"name": "mlp", "hidden": [8], "dropout": 0.1}, {"optimizer": "sgd", "momentum": 0.9,
                                                                   "schedule": "onecycle"}, [1, 2])
    pop = Population(list(m.models), m.models[0].architecture.layout)
    train = _data((1, 8, 8), 16)
    pop.plan_steps(16)
    pop.train_epoch(train)  # builds the step
    runner = pop._runners[8]
    key = StepKey(*[getattr(runner.key, f) for f in runner.key.__dataclass_fields__])
    step = make_step(pop.template, key)
    before = pop.rows()
    pop._start.zero_()  # the batch pointer: back to the first batch

    class NoHostReads(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
                raise AssertionError(f"host read in the step: {name}")
            return func(*args, **(kwargs or {}))

    with NoHostReads():
        step(*runner.args)
    assert not torch.equal(pop.rows(), before)


def test_choose_mode():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_mode("off", cuda, 10**9) == "eager"
    assert choose_mode("auto", cuda, 1) == "cuda-graph"
    assert choose_mode("auto", cpu, 100) == "eager"
    assert choose_mode("auto", cpu, 10**6) == "compiled"
    assert choose_mode("on", cpu, 1) == "compiled"


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_bf16_mixed_trains_on_cpu(precision):
    m = _manifest({"name": "mlp", "hidden": [16]}, {"optimizer": "adam", "lr": 1e-2, "precision": precision}, [1])
    rows, pop = _rows(list(m.models), _data((1, 8, 8), 32), 2)
    assert pop.precision == precision and torch.isfinite(rows).all()
    fp32, _ = _rows(list(_manifest({"name": "mlp", "hidden": [16]}, {"optimizer": "adam", "lr": 1e-2},
                                   [1]).models), _data((1, 8, 8), 32), 2)
    assert not torch.equal(rows, fp32) and float((rows - fp32).norm() / fp32.norm()) < 0.05
