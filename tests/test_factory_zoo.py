"""A zoo of a user's own module (architecture.factory): it builds, and it loads where the factory is not importable."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import zoo
from builders import build
from loaders import ZooDataset
from zoo.manifest import Manifest

FACTORY = """
from torch import nn


def make_net(in_shape, num_classes, width=32):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.Tanh(), nn.Linear(width, num_classes))
"""


def test_factory_zoo_loads_without_its_factory(tmp_path, monkeypatch):
    package = tmp_path / "src" / "wz_user_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    manifest = Manifest.from_dict({
        "zoo": {"name": "own"}, "dataset": {"name": "digits", "val_size": 200},
        "architecture": {"factory": "wz_user_pkg.nets:make_net", "kwargs": {"width": 12}},
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 1},
        "population": {"seeds": [1, 2]}, "checkpoints": {"epochs": [0, 1]}})
    build(manifest, tmp_path / "own.zoo", device="cpu", quiet=True)

    # elsewhere: the factory's package is gone (monkeypatch restores sys.path afterwards)
    sys.path.remove(str(tmp_path / "src"))
    for name in [m for m in sys.modules if m.startswith("wz_user_pkg")]:
        monkeypatch.delitem(sys.modules, name)

    z = zoo.open(tmp_path / "own.zoo")
    assert z.arch_ids == ["wz_user_pkg.nets-make_net"]
    meta = z.metadata.to_pylist()
    assert len(meta) == 4 and {r["status"] for r in meta} == {"ok"}
    assert {r["architecture"] for r in meta} == {"wz_user_pkg.nets:make_net"}
    assert {json.loads(r["kwargs"])["width"] for r in meta} == {12}
    assert [g.size for g in z.symmetry("wz_user_pkg.nets-make_net").groups.values()] == [12]
    ds = ZooDataset(z, view="flat", augment=("permute", "signflip"), targets=("test_acc",))
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["weights"].shape == (4, 64 * 12 + 12 + 12 * 10 + 10)
    stored = torch.from_numpy(z.read_rows(ds.arch, ds.rows.tolist()))
    assert not torch.equal(batch["weights"], stored), "the augmentation ran"
    assert torch.equal(batch["weights"].abs().sort(dim=1).values, stored.abs().sort(dim=1).values)
    # a store is data: the factory it names is never imported unless the caller opts in
    with pytest.raises(zoo.ZooError, match=r"architecture factory 'wz_user_pkg.nets:make_net': refused to import "
                                           r"and call it.*trust_code=True.*factory=fn"):
        z.module(model_id=0, epoch=1)
    with pytest.raises(zoo.ZooError, match=r"architecture factory 'wz_user_pkg.nets:make_net': cannot import"):
        z.module(model_id=0, epoch=1, trust_code=True)  # rebuilding the nn.Module is what needs the factory
    namespace: dict = {}
    exec(FACTORY, namespace)  # the user's own function, passed in
    module = z.module(model_id=0, epoch=1, factory=namespace["make_net"])
    assert torch.equal(torch.nn.utils.parameters_to_vector(module.parameters()),
                       torch.from_numpy(z.read_rows(ds.arch, [z.locate(0, 1)[1]])[0]))


def test_a_distributed_task_builds_a_factory_zoo_from_the_manifest_it_is_given(tmp_path, monkeypatch):
    """A Ray task gets the driver's manifest as a dict and reopens the store: it builds modules from that manifest
    (the user's), never from the store's copy, which is data and may not run the factory."""
    from builders import build_groups

    (tmp_path / "wz_task_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"zoo": {"name": "own"}, "dataset": {"name": "digits", "val_size": 200},
            "architecture": {"factory": "wz_task_nets:make_net", "kwargs": {"width": 6}},
            "training": {"optimizer": "sgd", "lr": 0.05, "batch_size": 64, "epochs": 1},
            "population": {"seeds": [1, 2]}, "checkpoints": {"epochs": [0, 1]}}
    zoo.create(tmp_path / "own.zoo", Manifest.from_dict(data, source="own.toml", trust_code=True), group_size=2)
    report = build_groups(data, tmp_path / "own.zoo", [0], device="cpu")
    assert report.units_written == 2 and zoo.open(tmp_path / "own.zoo").metadata.num_rows == 4
