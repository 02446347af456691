"""zoo build --backend ray on a local Ray instance: same bytes as a local build, survives a killed worker and an
interrupted driver, and a many-unit build ends with one metadata row per (model, checkpoint epoch)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import assert_same_zoo

import zoo
from builders import build
from zoo.cli import main

ray = pytest.importorskip("ray")
from builders.ray_backend import default_gpus_per_group, ray_build  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]

# 12 models in groups of 2 (6 groups, 18 units); lr 1e30 with relu diverges, so NaN metrics are compared too
TINY = """
[zoo]
name = "raytiny"
[dataset]
name = "digits"
resize = 4
val_size = 100
[architecture]
name = "mlp"
hidden = [8]
[training]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = 64
train_fraction = 0.3
epochs = 3
[population]
seeds = [1, 2, 3]
[population.grid]
"architecture.activation" = ["relu", "tanh"]
"training.lr" = [0.05, 1e30]
[checkpoints]
epochs = [0, 1, 3]
"""

# 300 models in groups of 4: 76 groups, 228 units
LOAD = """
[zoo]
name = "rayload"
[dataset]
name = "digits"
resize = 4
[architecture]
name = "mlp"
hidden = [4]
[training]
optimizer = "sgd"
lr = 0.1
batch_size = 128
train_fraction = 0.1
epochs = 2
[population]
seeds = { start = 0, stop = 75 }
[population.grid]
"architecture.activation" = ["relu", "tanh"]
"training.lr" = [0.1, 0.05]
[checkpoints]
epochs = [0, 1, 2]
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny manifest and its local (reference) build."""
    root = tmp_path_factory.mktemp("ray")
    manifest = root / "tiny.toml"
    manifest.write_text(TINY)
    build(manifest, root / "local.zoo", device="cpu", group_size=2, quiet=True)
    return manifest, root / "local.zoo"


def one_row_per_checkpoint(path) -> None:
    z = zoo.open(path)
    keys = Counter(zip(z.metadata.column("model_id").to_pylist(), z.metadata.column("epoch").to_pylist()))
    assert set(keys.values()) == {1} and len(keys) == z.plan.checkpoints


def test_ray_build_equals_local_build_bit_for_bit(cluster, tiny, tmp_path):
    manifest, local = tiny
    report = ray_build(manifest, tmp_path / "ray.zoo", group_size=2, quiet=True)
    units = len(zoo.open(local).plan.units)
    # one task per population: the 6 groups of 2 are 2 structures (activations), each one population
    assert (report.units_written, report.units_skipped, report.tasks, report.retries) == (units, 0, 2, 0)
    assert report.model_epochs == 12 * 3 and report.gpus_per_group == 0.0
    meta = zoo.open(local).metadata
    diverged = {m for m, s in zip(meta.column("model_id").to_pylist(), meta.column("status").to_pylist())
                if s == "diverged"}
    assert report.diverged == diverged and len(diverged) == 3  # lr 1e30 with relu
    assert_same_zoo(tmp_path / "ray.zoo", local)
    assert zoo.verify(tmp_path / "ray.zoo").ok
    again = ray_build(manifest, tmp_path / "ray.zoo", group_size=2, quiet=True)
    assert (again.units_written, again.units_skipped, again.tasks) == (0, units, 0)


def test_killed_worker_is_retried_and_the_store_completes(cluster, tiny, tmp_path):
    manifest, local = tiny
    marker = tmp_path / "killed-once"

    def kill_own_worker_once(unit):
        """After group 1 commits epoch 1 (and before it saves its training state): SIGKILL this Ray worker."""
        if unit.group == 1 and unit.epoch == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "ray.zoo"
    report = ray_build(manifest, out, group_size=2, quiet=True, max_retries=2, after_unit=kill_own_worker_once)
    assert marker.exists() and report.retries == 1 and not report.failed
    assert report.units_written == len(zoo.open(out).plan.units)
    assert zoo.verify(out).ok
    one_row_per_checkpoint(out)
    assert_same_zoo(out, local)
    assert not (out / ".build").exists()


def test_task_failing_past_its_retries_is_reported_and_a_rerun_completes(cluster, tiny, tmp_path):
    manifest, local = tiny

    def kill_group_0(unit):
        if unit.group == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "ray.zoo"
    with pytest.raises(zoo.ZooError, match=r"^1 task\(s\) failed \(a task whose worker dies is retried up to 0 "
                                           r"times\): groups 0: .*rerun the same command to continue$"):
        # populations of one group: the task of group 0 fails alone
        ray_build(manifest, out, group_size=2, population=2, quiet=True, max_retries=0, after_unit=kill_group_0)
    z = zoo.open(out)
    assert z.status()["units_done"] == len(z.plan.units) - 2  # group 0 committed its epoch-0 unit, then died
    assert zoo.verify(out).ok
    rerun = ray_build(manifest, out, group_size=2, quiet=True)
    assert (rerun.tasks, rerun.units_written, rerun.units_skipped) == (1, 2, len(z.plan.units) - 2)
    assert_same_zoo(out, local)


def test_bad_input_in_a_task_stops_the_build_with_its_message(cluster, tiny, tmp_path):
    manifest, _ = tiny

    def refuse(unit):
        raise zoo.ZooError(f"unit {unit.unit_id}: refused by the test")

    with pytest.raises(zoo.ZooError, match=r"^group \d+: unit \d+: refused by the test$"):
        ray_build(manifest, tmp_path / "ray.zoo", group_size=2, quiet=True, after_unit=refuse)


def test_interrupted_driver_rerun_continues(cluster, tiny, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the driver mid-build (zoo build exits 130, its tasks are cancelled); the same command again
    finishes the zoo, bit-identical to the local build."""
    manifest, local = tiny
    out = tmp_path / "ray.zoo"
    import builders.ray_backend as backend

    gate = tmp_path / "gate"
    gate.touch()

    def slow(unit):
        # once 4 units are committed, tasks wait at the gate until the test opens it: the interrupt always
        # comes before the build could finish, however loaded the machine
        time.sleep(0.3)
        give_up = time.monotonic() + 60  # a driver that ignored Ctrl-C fails the test instead of hanging it
        while gate.exists() and len(list(out.glob("metadata/unit-*.parquet"))) >= 4 and time.monotonic() < give_up:
            time.sleep(0.05)

    real = backend.ray_build
    monkeypatch.setattr(backend, "ray_build", lambda *a, **kw: real(*a, **kw, after_unit=slow))

    class CtrlC(backend.tqdm):
        """The driver's progress bar: refreshed once per poll of the driver loop, it raises KeyboardInterrupt
        there (as Ctrl-C would) once 4 units are committed; deterministic, unlike a signal from a thread."""

        def refresh(self, *args, **kwargs):
            if len(list(out.glob("metadata/unit-*.parquet"))) >= 4:
                raise KeyboardInterrupt
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(backend, "tqdm", CtrlC)
    command = ["build", str(manifest), "-o", str(out), "--backend", "ray", "--group-size", "2", "--quiet"]
    try:
        assert main(command) == 130
    finally:
        gate.unlink()
        monkeypatch.setattr(backend, "tqdm", CtrlC.__mro__[1])
    assert "zoo build: interrupted; rerun the same command to continue" in capsys.readouterr().err
    z = zoo.open(out)
    assert 4 <= len(z.done_units()) < len(z.plan.units)
    monkeypatch.setattr(backend, "ray_build", real)
    assert main(command) == 0
    assert_same_zoo(out, local)
    assert zoo.verify(out).ok


def test_load_many_units_then_verify_and_status_agree(cluster, tmp_path, capsys):
    manifest = tmp_path / "load.toml"
    manifest.write_text(LOAD)
    out = tmp_path / "load.zoo"
    assert main(["build", str(manifest), "-o", str(out), "--backend", "ray", "--group-size", "4", "--quiet",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # 76 groups of up to 4 models in 6 populations of up to 64 (one task each)
    assert (summary["backend"], summary["tasks"], summary["units_written"], summary["retries"]) == ("ray", 6, 228, 0)
    assert summary["model_epochs"] == 300 * 2
    assert main(["verify", str(out), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert verified["ok"] and verified["checked"] == status["checkpoints_done"] == status["checkpoints_total"] == 900
    assert status["units_done"] == status["units_total"] == 228 and status["complete"]
    assert "228 of 228 units committed" in verified["notes"]
    one_row_per_checkpoint(out)


def test_ray_cli_errors(tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "tiny.toml"
    manifest.write_text(TINY)
    store = str(tmp_path / "x.zoo")
    cases = [
        (["--backend", "ray", "--gpus-per-group", "2"], "--gpus-per-group 2.0; allowed: 0 (CPU only) or a fraction"),
        (["--backend", "ray", "--device", "cuda:1"], "device 'cuda:1' with --backend ray; allowed: auto, cpu, cuda"),
        (["--backend", "ray", "--shard", "0/2"], "with --backend ray, Ray spreads the groups itself: drop --shard"),
        (["--address", "auto"], "--address is an option of --backend ray"),
    ]
    for extra, message in cases:
        assert main(["build", str(manifest), "-o", store, *extra]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["build", str(manifest), "-o", store, "--backend", "ray"]) == 2
    assert "the ray backend needs Ray, which is not installed: pip install weightzoo[ray]" in capsys.readouterr().err
    assert not Path(store).exists()


def test_no_gpu_in_the_cluster_means_cpu_tasks_and_cuda_is_an_error(cluster, tiny, tmp_path):
    manifest, _ = tiny
    with pytest.raises(zoo.ZooError, match="--device cuda: the Ray cluster has no GPU; use --device cpu or auto"):
        ray_build(manifest, tmp_path / "x.zoo", device="cuda", quiet=True)
    assert not (tmp_path / "x.zoo").exists()


def test_default_gpu_share_follows_model_size():
    assert default_gpus_per_group(zoo.load_manifest(ROOT / "manifests/modelzoo/resnet18-cifar10.toml")) == 1.0
    assert default_gpus_per_group(zoo.load_manifest(ROOT / "manifests/modelzoo/mnist-seed.toml")) == 0.25
