"""manifests/vit-digits.toml: a ViT zoo builds, stores its attention symmetries, and loads without its architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch

import zoo
import zoo.architectures.base
import zoo.architectures.cache
from builders import build
from loaders import ZooDataset
from zoo.manifest import Manifest

MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "vit-digits.toml"


def reduced() -> Manifest:
    """The shipped manifest with 4 models (2 seeds x 2 learning rates) and one epoch on a quarter of the training
    images: the same architecture."""
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    data["population"] = {"seeds": [1, 2], "grid": {"training.lr": [1e-3, 3e-3]}}
    data["training"].update(epochs=1, train_fraction=0.25)
    data["checkpoints"] = {"epochs": [0, 1]}
    return Manifest.from_dict(data, source=str(MANIFEST))


def test_shipped_manifest_is_36_vits():
    m = zoo.load_manifest(MANIFEST)
    assert len(m.models) == 36 and list(m.architectures) == ["vit"]
    assert m.architectures["vit"].layout.num_params == 18_218


@pytest.fixture(scope="module")
def vit_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "vit.zoo"
    build(reduced(), out, device="cpu", quiet=True)
    return out


def test_reduced_vit_zoo_builds_and_stores_the_attention_groups(vit_store):
    z = zoo.open(vit_store)
    assert z.arch_ids == ["vit"]
    meta = z.metadata.to_pylist()
    assert len(meta) == 4 * 2 and sorted({r["model_id"] for r in meta}) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" for r in meta)
    groups = list(z.symmetry("vit").groups)
    for layer in range(2):
        prefix = f"encoder.layers.encoder_layer_{layer}.self_attention"
        assert {f"{prefix}.heads", f"{prefix}.qk", f"{prefix}.v"} <= set(groups)
    assert sum(g.endswith((".heads", ".qk", ".v")) for g in groups) == 6


def test_loading_builds_and_derives_nothing(vit_store, monkeypatch):
    """A loader reads the layout and symmetry spec stored with the zoo: it never constructs the module, traces it,
    or reads the architecture cache (for a torchvision or factory zoo: nothing is imported)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the loader built, traced or looked up the architecture's module")

    monkeypatch.setattr(zoo.architectures.base.Architecture, "module", refuse)
    monkeypatch.setattr(zoo.architectures.base.Architecture, "derive", refuse)
    monkeypatch.setattr(zoo.architectures.cache, "remember", refuse)
    with pytest.raises(AssertionError, match="the loader built"):  # the guard is on
        zoo.open(vit_store).architecture("vit").layout  # noqa: B018
    # the store's manifest carries the stored layout and spec: reading them builds nothing
    opened = zoo.open(vit_store)
    assert opened.manifest.models[0].architecture.layout == opened.layout("vit")
    assert opened.manifest.models[0].architecture.symmetry == opened.symmetry("vit")
    ds = ZooDataset(vit_store, view="flat", augment=("permute",), targets=("test_acc",))
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["weights"].shape == (8, 18_218) and torch.isfinite(batch["weights"]).all()
    z = zoo.open(vit_store)
    stored = torch.from_numpy(z.read_rows("vit", ds.rows.tolist()))
    assert not torch.equal(batch["weights"], stored), "the permutation ran"
    # a permutation moves values between positions, never changes them: the sorted rows agree
    assert torch.equal(batch["weights"].sort(dim=1).values, stored.sort(dim=1).values)
