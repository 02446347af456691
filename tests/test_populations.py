"""Populations belong to the device, groups to the store: any population size builds the same zoo, resumes the
same zoo, and stores of the previous format keep their plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_same_zoo

import zoo
from builders import build
from builders.orchestration import STATE_DIR
from zoo.cli import main
from zoo.errors import StoreError, ZooError
from zoo.manifest import load_manifest
from zoo.plan import Plan

ROOT = Path(__file__).resolve().parents[1]

DROPOUT = """
[zoo]
name = "dropout"
[dataset]
name = "digits"
val_size = 200
[architecture]
name = "mlp"
hidden = [16]
[training]
optimizer = "adam"
lr = 0.01
batch_size = 64
epochs = {epochs}
augmentation = "{augmentation}"
[population]
seeds = [1, 2, 3]
[population.grid]
"architecture.activation" = ["relu", "tanh"]
"architecture.dropout" = {dropout}
[checkpoints]
epochs = "all"
"""


def manifest(tmp_path: Path, epochs: int = 3, dropout: str = "[0.0, 0.2, 0.5]", augmentation: str = "none") -> Path:
    path = tmp_path / "dropout.toml"
    path.write_text(DROPOUT.format(epochs=epochs, dropout=dropout, augmentation=augmentation))
    return path


class Stop(Exception):
    pass


def stop_after(n: int):
    seen = []

    def after_unit(unit):
        seen.append(unit)
        if len(seen) == n:
            raise Stop

    return after_unit


def test_dropout_rates_share_groups_and_any_population_size_builds_the_same_zoo(tmp_path):
    path = manifest(tmp_path)
    plan = Plan(load_manifest(path), group_size=3)
    # per activation 9 models (3 rates x 3 seeds): 3 full groups each, not 6 groups split by rate
    assert [len(g.model_ids) for g in plan.groups] == [3] * 6
    assert len(Plan(load_manifest(path), group_size=3, version=1).groups) == 6  # format 1: one rate per group
    reports = {}
    for k in (3, 6, None):
        reports[k] = build(path, tmp_path / f"k{k}.zoo", device="cpu", group_size=3, population=k, quiet=True)
    assert reports[3].populations == [3] * 6
    assert reports[6].populations == [6, 3, 6, 3]
    assert reports[None].populations == [9, 9]  # the CPU default holds a structure's 9 models
    assert_same_zoo(tmp_path / "k3.zoo", tmp_path / "k6.zoo")
    assert_same_zoo(tmp_path / "k3.zoo", tmp_path / "kNone.zoo")
    meta = zoo.open(tmp_path / "kNone.zoo").metadata
    assert set(meta.column("precision").to_pylist()) == {"fp32"}
    assert set(meta.column("step_mode").to_pylist()) == {"eager"}
    assert zoo.verify(tmp_path / "kNone.zoo").ok


def test_interrupted_build_resumes_with_another_population_size(tmp_path):
    """Interrupted with populations of one group, resumed with one population of everything: the zoo of an
    uninterrupted build. A unit lost between its state and its commit is committed from the state."""
    path = manifest(tmp_path, epochs=4, augmentation="crop_flip")
    out = tmp_path / "resumed.zoo"
    with pytest.raises(Stop):
        build(path, out, device="cpu", group_size=3, population=3, quiet=True, after_unit=stop_after(14))
    partial = zoo.open(out)
    done = partial.done_units()
    assert len(done) == 14
    states = sorted((out / STATE_DIR).glob("group-*.pt"))
    assert states, "interrupted groups keep their training state"
    # lose the commit of one saved epoch: as if the build died between saving the state and committing
    import torch

    state = torch.load(states[0], weights_only=True)
    group = int(states[0].stem.split("-")[1])
    unit = next(u for u in partial.plan.units if u.group == group and u.epoch == state["epoch"])
    assert unit.unit_id in done and state["epoch"] > 0
    (out / "metadata" / f"unit-{unit.unit_id:08d}.parquet").unlink()
    resumed = build(path, out, device="cpu", quiet=True)
    assert resumed.units_written == len(partial.plan.units) - 13
    from_scratch = sum(len(g.model_ids) * 4 for g in partial.plan.groups
                       if any(u.group == g.group and u.unit_id not in done for u in partial.plan.units))
    assert resumed.model_epochs < from_scratch, "groups resumed from their states, not from scratch"
    build(path, tmp_path / "clean.zoo", device="cpu", group_size=3, quiet=True)
    assert_same_zoo(out, tmp_path / "clean.zoo")
    assert not (out / STATE_DIR).exists()


def _as_format_1(path: Path) -> None:
    """Rewrite a store's attributes as the previous version wrote them (no plan version, format 1)."""
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["weightzoo"])
    attrs["format_version"] = 1
    attrs.pop("plan_version")
    group.attrs["weightzoo"] = attrs


def test_format_1_stores_open_verify_load_and_are_never_finished_with_other_draws(tmp_path):
    path = manifest(tmp_path, dropout="[0.0]")
    done = tmp_path / "old.zoo"
    build(path, done, device="cpu", group_size=3, quiet=True)
    _as_format_1(done)
    old = zoo.open(done)
    assert old.plan.version == 1 and zoo.verify(done).ok
    assert old.metadata.num_rows == old.plan.checkpoints
    rows = old.metadata.column("row").to_pylist()
    assert np.isfinite(old.read_rows(old.arch_ids[0], rows)).all()

    # unfinished, without randomness: it resumes with its recorded plan and completes the same zoo
    plain = tmp_path / "plain.zoo"
    with pytest.raises(Stop):
        build(path, plain, device="cpu", group_size=3, quiet=True, after_unit=stop_after(5))
    _as_format_1(plain)
    build(path, plain, device="cpu", quiet=True)
    assert_same_zoo(plain, done)

    # unfinished, with dropout: refused, and nothing is written
    random = manifest(tmp_path, dropout="[0.3]")
    partial = tmp_path / "random.zoo"
    with pytest.raises(Stop):
        build(random, partial, device="cpu", group_size=3, quiet=True, after_unit=stop_after(5))
    _as_format_1(partial)
    with pytest.raises(StoreError, match=r"format 1 store .* 1 unfinished group\(s\) that use dropout or "
                                         r"augmentation \(first: group 1\).*build the zoo into a new store"):
        build(random, partial, device="cpu", quiet=True)
    assert len(zoo.open(partial).done_units()) == 5


def test_smallcnnzoo_plans_full_groups():
    m = load_manifest(ROOT / "manifests" / "smallcnnzoo" / "cifar10.toml")
    plan = Plan(m)
    structures = {json.dumps([m.models[g.model_ids[0]].hparams[k] for k in ("activation", "optimizer",
                                                                            "train_fraction")])
                  for g in plan.groups}
    assert len(structures) == 24  # 2 activations x 3 optimizers x 4 train fractions
    assert len(plan.groups) == sum(-(-sum(1 for mm in m.models if json.dumps(
        [mm.hparams[k] for k in ("activation", "optimizer", "train_fraction")]) == s) // 64) for s in structures)
    assert sum(len(g.model_ids) < 64 for g in plan.groups) <= 24  # one partial group per structure at most
    assert len(plan.units) < 5_000  # was 270,000 (a group per model)


def test_population_and_compile_options_on_the_command_line(tmp_path, capsys):
    path = manifest(tmp_path, dropout="[0.0, 0.3]")
    assert main(["plan", str(path), "--group-size", "3", "--json", "--device", "cpu"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["groups"] == 4 and plan["plan_version"] == 2
    assert plan["populations"]["count"] == 2 and plan["populations"]["step_mode"] == "eager"
    assert [s["models"] for s in plan["populations"]["structures"]] == [64, 64]
    assert main(["plan", str(path), "--group-size", "3", "--population", "3", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "4 population(s) on cpu, step eager" in text and "3 models per population" in text
    assert main(["plan", str(path), "--population", "0"]) == 2
    assert "population 0: expected a positive number of models" in capsys.readouterr().err
    out = tmp_path / "cli.zoo"
    assert main(["build", str(path), "-o", str(out), "--group-size", "3", "--population", "3", "--no-compile",
                 "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["populations"] == [3, 3, 3, 3] and summary["step_modes"] == ["eager"]
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(path), "-o", str(out), "--compile", "--no-compile"])
    assert exit_.value.code == 2
    assert "argument --no-compile: not allowed with argument --compile" in capsys.readouterr().err
    with pytest.raises(ZooError, match="compile 'maybe'; allowed: on, off"):
        build(path, tmp_path / "x.zoo", compile="maybe")
