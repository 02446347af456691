"""CUDA: captured steps, deterministic fp32 builds, populations sized from device memory (skipped without CUDA).

Run on a lent GPU by ``benchmarks/gpu_suite.sh`` (``pytest -m gpu tests/test_gpu.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_same_zoo
from test_build import small_manifest

import zoo
from builders import build
from builders.data import Split
from builders.population import Population
from builders.sizing import CPU_POPULATION_MODELS, population_size
from zoo.manifest import Manifest

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _specs(arch: dict, training: dict, seeds: list[int], dataset: str = "mnist"):
    return list(Manifest.from_dict({
        "zoo": {"name": "gpu"}, "dataset": {"name": dataset}, "architecture": arch,
        "training": {"batch_size": 10, "epochs": 2, **training}, "population": {"seeds": seeds},
        "checkpoints": {"epochs": "all"}}).models)


def test_fp32_build_on_cuda_is_bit_identical_twice(tmp_path: Path):
    manifest = small_manifest(tmp_path)
    a = build(manifest, tmp_path / "a.zoo", device="cuda", group_size=2, quiet=True)
    build(manifest, tmp_path / "b.zoo", device="cuda", group_size=2, quiet=True)
    assert a.step_modes == {"cuda-graph"}
    assert_same_zoo(tmp_path / "a.zoo", tmp_path / "b.zoo")
    meta = zoo.open(tmp_path / "a.zoo").metadata
    assert set(meta.column("step_mode").to_pylist()) == {"cuda-graph"}
    assert torch.cuda.get_device_name() in set(meta.column("device").to_pylist())


def test_captured_step_equals_eager_on_cuda():
    specs = _specs({"name": "cnn-s", "dropout": 0.1}, {"optimizer": "adam", "augmentation": "crop_flip",
                                                      "schedule": "onecycle"}, list(range(1, 9)))
    g = torch.Generator().manual_seed(0)
    train = Split(torch.randn(100, 1, 28, 28, generator=g), torch.randint(0, 10, (100,), generator=g)).to("cuda")
    rows = {}
    for mode in ("off", "on"):
        pop = Population(specs, specs[0].architecture.layout, device="cuda", compile=mode)
        pop.train_epoch(train)
        pop.train_epoch(train)
        rows[mode] = (pop.rows(), pop.step_mode)
    assert rows["on"][1] == "cuda-graph" and rows["off"][1] == "eager"
    torch.testing.assert_close(rows["on"][0], rows["off"][0], rtol=1e-4, atol=1e-5)
    cpu = Population(specs, specs[0].architecture.layout, device="cpu")
    cpu.train_epoch(train.to("cpu"))
    cpu.train_epoch(train.to("cpu"))
    torch.testing.assert_close(rows["off"][0], cpu.rows(), rtol=1e-3, atol=1e-4)  # same draws on both devices


def test_population_is_sized_from_device_memory():
    spec = _specs({"name": "cnn-s"}, {"optimizer": "adam"}, [1])[0]
    k, why = population_size(spec.architecture, dict(spec.training), torch.device("cuda"))
    assert k > CPU_POPULATION_MODELS and "GiB free" in why


@pytest.mark.parametrize("view", ["tokens", "flat", "nfn"])
def test_loader_transforms_on_the_device_equal_the_cpu(filled, view):
    from loaders import ZooDataset

    writer, _ = filled
    options = {"view": view, "augment": ("permute", "rescale", "signflip"), "normalize": True, "seed": 4}
    cpu = ZooDataset(writer.url, **options)
    gpu = ZooDataset(writer.url, device="cuda", **options)
    expected = list(torch.utils.data.DataLoader(cpu, batch_size=4, collate_fn=cpu.collate))
    got = list(gpu.loader(batch_size=4, num_workers=2))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].device.type == "cuda"
            torch.testing.assert_close(a[key].cpu(), b[key], rtol=1e-6, atol=1e-6)  # the same draws, made on the CPU


def test_inr_population_on_cuda_follows_the_cpu():
    from test_inr import inr_dict

    from builders.data import load_images
    from builders.inr_population import InrPopulation

    m = Manifest.from_dict(inr_dict(), source="inr.toml")
    specs = list(m.models)
    x, y = load_images(m.dataset, "test", [s.hparams["image_index"] for s in specs])
    pops = {dev: InrPopulation(specs, m.architectures["siren"].layout, x, y, device=dev) for dev in ("cpu", "cuda")}
    for pop in pops.values():
        for _ in range(10):
            pop.train_epoch()
    torch.testing.assert_close(pops["cuda"].rows(), pops["cpu"].rows(), rtol=1e-3, atol=1e-4)
    records = pops["cuda"].checkpoint_records()
    assert all(r["psnr"] is not None and r["step"] == 10 for r in records)
