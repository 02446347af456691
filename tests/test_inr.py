"""Neural-field (inr) zoos: manifests, populations fitted as one computation, records, render, resume, loaders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_same_zoo

import zoo
from builders import build
from builders.data import load_images
from builders.inr_population import InrPopulation
from loaders import ZooDataset
from zoo.errors import ManifestError
from zoo.manifest import Manifest


def inr_dict(**sections) -> dict:
    data = {"zoo": {"name": "inr-tiny", "kind": "inr"}, "dataset": {"name": "digits"},
            "images": {"split": "test", "start": 3, "count": 4}, "architecture": {"name": "siren", "hidden": [16, 16]},
            "training": {"lr": 1e-3, "epochs": 30, "batch_size": 64}, "population": {"seeds": [0, 1]},
            "checkpoints": {"epochs": [0, 15, 30]}}
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    return data


def test_an_inr_manifest_gives_a_network_per_image_and_seed():
    m = Manifest.from_dict(inr_dict(), source="inr.toml")
    assert m.kind == "inr" and m.image_indices == (3, 4, 5, 6)
    assert [(s.hparams["image_index"], s.seed) for s in m.models] == [(i, s) for i in range(3, 7) for s in (0, 1)]
    assert {s.hparams["image_split"] for s in m.models} == {"test"}
    assert m.hparam_columns()["image_index"] is int and m.hparam_columns()["init_scheme"] is str
    everything = Manifest.from_dict(inr_dict(images={"start": 0, "count": "all"}), source="inr.toml")
    assert len(everything.image_indices) == 359  # the digits' test split


@pytest.mark.parametrize("change,message", [
    ({"images": {"count": 400}}, "field 'images.count': got 400; from image 3 the test split of 'digits' has 356"),
    ({"images": {"start": 359}}, "field 'images.start': got 359; the test split of 'digits' has 359 images"),
    ({"images": {"count": "most"}}, "field 'images.count': got 'most'; allowed: a number of images or 'all'"),
    ({"images": {"split": "val"}}, "field 'images.split'"),
    ({"architecture": {"name": "mlp"}}, "field 'architecture.name': an inr zoo fits a neural field"),
])
def test_inr_manifest_errors(change, message):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Manifest.from_dict(inr_dict(**change), source="inr.toml")


def test_fields_and_images_stay_in_their_kind():
    data = inr_dict()
    data["zoo"]["kind"] = "classifier"
    with pytest.raises(ManifestError, match="field 'images': only an inr zoo"):
        Manifest.from_dict(data, source="c.toml")
    del data["images"]
    with pytest.raises(ManifestError, match="'siren' is a neural field: it belongs in an inr zoo"):
        Manifest.from_dict(data, source="c.toml")


def _population(m: Manifest, specs) -> InrPopulation:
    x, y = load_images(m.dataset, m.images["split"], [s.hparams["image_index"] for s in specs])
    return InrPopulation(specs, m.architectures["siren"].layout, x, y)


@pytest.mark.parametrize("batch", [64, 24])  # the whole 8x8 image, and pixel batches drawn per model
def test_a_field_fitted_in_a_population_follows_its_own_trajectory(batch):
    m = Manifest.from_dict(inr_dict(training={"batch_size": batch}), source="inr.toml")
    specs = list(m.models)
    together = _population(m, specs)
    for _ in range(12):
        together.train_epoch()
    for k in (0, 5):
        alone = _population(m, specs[k:k + 1])
        for _ in range(12):
            alone.train_epoch()
        torch.testing.assert_close(alone.rows()[0], together.rows()[k], rtol=1e-4, atol=1e-5)


def test_build_records_render_and_resume(tmp_path):
    m = Manifest.from_dict(inr_dict(), source="inr.toml")
    built = build(m, tmp_path / "a.zoo", device="cpu", quiet=True)
    assert built.units_written == 3
    z = zoo.open(tmp_path / "a.zoo")
    meta = z.metadata.to_pydict()
    _, labels = load_images(m.dataset, "test", range(3, 7))
    for i, model in enumerate(meta["model_id"]):
        spec = m.models[model]
        assert meta["label"][i] == int(labels[spec.hparams["image_index"] - 3])
        assert meta["step"][i] == meta["epoch"][i]
        assert meta["image_index"][i] == spec.hparams["image_index"] and meta["image_split"][i] == "test"
        assert math.isclose(meta["psnr"][i], -10 * math.log10(meta["mse"][i]), rel_tol=1e-6)  # in float32
        assert meta["test_acc"][i] is None and meta["init_scheme"][i] == "sitzmann"
    psnr = {(mid, e): p for mid, e, p in zip(meta["model_id"], meta["epoch"], meta["psnr"])}
    assert all(psnr[(mid, 30)] > psnr[(mid, 15)] > psnr[(mid, 0)] for mid in range(len(m.models)))  # it fits
    # render: the checkpoint's field on its grid, as the fit measured it
    image = z.render(2, 30)
    x, _ = load_images(m.dataset, "test", [4])
    mse = float((image - x[0]).square().mean())
    recorded = meta["mse"][[(a, b) for a, b in zip(meta["model_id"], meta["epoch"])].index((2, 30))]
    assert math.isclose(mse, recorded, rel_tol=1e-3) or mse < recorded  # clamping to [0, 1] only helps
    assert z.render(2, 30, size=(12, 16)).shape == (1, 12, 16)
    with pytest.raises(zoo.ZooError, match=r"render: size 0; expected sides in \[1, 4096\]"):
        z.render(2, 30, size=0)
    # an interrupted build resumes to the same store
    def stop(unit):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(m, tmp_path / "b.zoo", device="cpu", quiet=True, after_unit=stop)
    build(m, tmp_path / "b.zoo", device="cpu", quiet=True)
    assert_same_zoo(tmp_path / "a.zoo", tmp_path / "b.zoo")


def test_loaders_read_inr_zoos_and_symmetries_keep_the_image(tmp_path):
    m = Manifest.from_dict(inr_dict(), source="inr.toml")
    build(m, tmp_path / "a.zoo", device="cpu", quiet=True)
    z = zoo.open(tmp_path / "a.zoo")
    for view in ("flat", "tokens", "nfn", "dws", "graph"):
        ds = ZooDataset(tmp_path / "a.zoo", view=view, targets=("psnr", "label"), epochs=[30])
        batch = ds.collate(ds.__getitems__(list(range(len(ds)))))
        assert batch["label"].dtype == torch.float32 and len(batch["model_id"]) == 8
    ds = ZooDataset(tmp_path / "a.zoo", augment=("permute", "signflip", "rescale"), epochs=[30], seed=2)
    assert ds.activation_names == ["sin"]
    batch = ds.__getitems__([0, 1])
    for row, model in zip(batch["weights"], batch["model_id"].tolist()):
        module = z.layout("siren").load_into(z.manifest.models[model].architecture.module(), row).eval()
        original = z.module(model, 30)
        assert not torch.equal(z.layout("siren").flatten(module.state_dict()),
                               z.layout("siren").flatten(original.state_dict()))
        with torch.no_grad():
            torch.testing.assert_close(module.image(8, 8), original.image(8, 8), rtol=1e-4, atol=1e-4)


def test_the_digits_manifest_is_valid():
    from zoo.manifest import load_manifest

    m = load_manifest("manifests/inr/digits.toml")
    assert m.kind == "inr" and len(m.models) == 1438 and np.all(np.diff(m.image_indices) == 1)
