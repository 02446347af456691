"""zoo build: complete, reproducible, resumable after SIGKILL, shardable across processes; the quickstart learns."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_same_zoo

import zoo
from builders import build
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
[zoo]
name = "small"
[dataset]
name = "digits"
val_size = 200
[architecture]
name = "mlp"
hidden = [24]
[training]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = 64
epochs = {epochs}
[population]
seeds = [1, 2, 3]
[population.grid]
"architecture.activation" = ["relu", "tanh"]
"training.lr" = [0.05, 1e30]
[checkpoints]
epochs = {checkpoints}
"""


def small_manifest(tmp_path: Path, epochs: int = 4, checkpoints: str = "[0, 1, 2, 4]") -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL.format(epochs=epochs, checkpoints=checkpoints))
    return path


def zoo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", *args]


def test_build_records_every_checkpoint_with_metrics(tmp_path):
    report = build(small_manifest(tmp_path), tmp_path / "a.zoo", device="cpu", group_size=2, quiet=True)
    z = zoo.open(tmp_path / "a.zoo")
    meta = z.metadata.to_pylist()
    assert len(meta) == 12 * 4 and report.units_written == len(z.plan.units)
    assert zoo.verify(tmp_path / "a.zoo").ok
    ok = [r for r in meta if r["lr"] == 0.05]
    bad = [r for r in meta if r["lr"] == 1e30]
    # epoch 0 is the initialization: near chance; trained sensible models learn
    assert all(r["status"] == "ok" for r in ok)
    final = [r["test_acc"] for r in ok if r["epoch"] == 4]
    assert min(final) > 0.8 > max(r["test_acc"] for r in ok if r["epoch"] == 0)
    for r in ok:
        assert r["gen_gap"] == pytest.approx(r["train_acc"] - r["test_acc"])
        assert r["val_acc"] is not None and r["device"] == "cpu" and r["torch_version"]
    # a diverged model (non-finite loss or weights) is recorded and flagged, never dropped; with tanh the
    # same learning rate leaves huge but finite weights, which are not "diverged" by that definition
    exploded = [r for r in bad if r["activation"] == "relu"]
    assert {r["status"] for r in exploded if r["epoch"] >= 1} == {"diverged"}
    assert {r["status"] for r in exploded if r["epoch"] == 0} == {"ok"}
    assert report.diverged == {r["model_id"] for r in exploded}
    assert len(bad) == 6 * 4
    # the stored module reproduces the recorded accuracy
    from builders.data import load_image_data
    data = load_image_data(z.manifest.dataset)
    r = next(r for r in ok if r["epoch"] == 4)
    pred = z.module(r["model_id"], 4)(data.test.x).argmax(1)
    assert float((pred == data.test.y).float().mean()) == pytest.approx(r["test_acc"], abs=1e-6)


def test_same_manifest_gives_bit_identical_store(tmp_path):
    manifest = small_manifest(tmp_path)
    build(manifest, tmp_path / "a.zoo", device="cpu", group_size=2, quiet=True)
    build(manifest, tmp_path / "b.zoo", device="cpu", group_size=2, quiet=True)
    assert_same_zoo(tmp_path / "a.zoo", tmp_path / "b.zoo")
    again = build(manifest, tmp_path / "a.zoo", device="cpu", group_size=2, quiet=True)
    assert again.units_written == 0 and again.units_skipped == len(zoo.open(tmp_path / "a.zoo").plan.units)


def test_sigkill_mid_build_then_rerun_equals_uninterrupted(tmp_path):
    manifest = small_manifest(tmp_path, epochs=12, checkpoints='"all"')
    killed = tmp_path / "killed.zoo"
    proc = subprocess.Popen(zoo_cmd("build", str(manifest), "-o", str(killed), "--device", "cpu", "--group-size", "2",
                                    "--quiet"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once a few units are committed
        fragments = list((killed / "metadata").glob("unit-*.parquet")) if (killed / "metadata").exists() else []
        if len(fragments) >= 8 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    partial = zoo.open(killed)
    assert 8 <= len(partial.done_units()) < len(partial.plan.units)
    assert zoo.verify(killed).ok
    assert list((killed / ".build").glob("group-*.pt")), "the killed group left its training state"
    done = partial.done_units()
    pending = {u.group for u in partial.plan.units if u.unit_id not in done}
    from_scratch = sum(len(g.model_ids) * 12 for g in partial.plan.groups if g.group in pending)
    rerun = build(manifest, killed, device="cpu", quiet=True)
    assert rerun.model_epochs < from_scratch, "the rerun retrained the killed group from scratch instead of resuming it"
    build(manifest, tmp_path / "clean.zoo", device="cpu", group_size=2, quiet=True)
    assert_same_zoo(killed, tmp_path / "clean.zoo")
    assert not (killed / ".build").exists(), "a finished build leaves no resume state or temporary files"


def test_two_shards_in_parallel_complete_the_zoo(tmp_path):
    manifest = small_manifest(tmp_path)
    store = tmp_path / "sharded.zoo"
    zoo.create(store, zoo.load_manifest(manifest), group_size=2)
    procs = [subprocess.Popen(zoo_cmd("build", str(manifest), "-o", str(store), "--shard", f"{i}/2", "--quiet"),
                              cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    z = zoo.open(store)
    keys = list(zip(z.metadata.column("model_id").to_pylist(), z.metadata.column("epoch").to_pylist()))
    assert len(keys) == len(set(keys)) == z.plan.checkpoints
    build(manifest, tmp_path / "single.zoo", device="cpu", group_size=2, quiet=True)
    assert_same_zoo(store, tmp_path / "single.zoo")


def test_build_cli_errors(tmp_path, capsys):
    manifest = small_manifest(tmp_path)
    assert main(["build", str(manifest), "-o", str(tmp_path / "x.zoo"), "--shard", "2/2"]) == 2
    assert "shard '2/2': expected I/N with 0 <= I < N" in capsys.readouterr().err
    assert main(["build", str(manifest), "-o", str(tmp_path / "x.zoo"), "--device", "tpu"]) == 2
    assert "device 'tpu'; allowed: auto, cpu, cuda, cuda:N" in capsys.readouterr().err
    assert not (tmp_path / "x.zoo").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(manifest.read_text().replace('name = "mlp"', 'name = "mlpp"'))
    assert main(["build", str(bad), "-o", str(tmp_path / "y.zoo")]) == 2
    assert "field 'architecture.name': got 'mlpp'" in capsys.readouterr().err
    assert not (tmp_path / "y.zoo").exists()


def test_quickstart_main_job(tmp_path, capsys):
    """The README's main job: the quickstart zoo builds and its models learn, spread across hyperparameters."""
    out = tmp_path / "quickstart.zoo"
    assert main(["build", str(ROOT / "manifests" / "quickstart.toml"), "-o", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units_written"] == len(zoo.open(out).plan.units)
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoints"] == info["checkpoints_planned"] == 72 * 6
    final = info["final_test_acc"]
    assert final["median"] > 0.8 and final["max"] > 0.95  # chance is 0.1
    meta = zoo.open(out).metadata.to_pylist()
    by_lr = {}
    for r in meta:
        if r["epoch"] == 15:
            by_lr.setdefault(r["lr"], []).append(r["test_acc"])
    means = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
    assert max(means.values()) - min(means.values()) > 0.05, means
