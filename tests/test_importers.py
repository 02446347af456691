"""Importers of published zoo formats: fixture directories in each format, built from models made here.

Model Zoos fixtures are Ray Tune trial folders holding state dicts of a ``module_list`` CNN written as the
published zoos' (dropout modules shift the layer indices); Small CNN Zoo fixtures hold Keras-ordered rows
(kernels (kh, kw, in, out), each bias before its kernel) and are checked against an independent NHWC
forward pass that reads those Keras tensors directly. The fixture writers are ``benchmarks/importers.py``'s,
which times the importers on larger fixtures of the same kind.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from torch import nn

import zoo
from builders.importers import import_modelzoo, import_smallcnnzoo, statedicts, torchfile
from builders.importers import modelzoo as mz
from builders.importers.workers import Workers
from loaders import ZooDataset
from zoo.cli import IMPORTERS, main
from zoo.errors import ManifestError, ZooError
from zoo.manifest import Manifest
from zoo.plan import Plan


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("weightzoo_benchmarks_importers",
                                                  Path(__file__).parents[1] / "benchmarks" / "importers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _benchmark_module()
# the fixture writers (tests/test_readme.py takes write_smallcnnzoo from here)
TRIALS, trial_params, write_modelzoo, module_list_cnn = (fixtures.TRIALS, fixtures.trial_params,
                                                         fixtures.write_modelzoo, fixtures.module_list_cnn)
RUNS, STEPS, KERAS_VARS, keras_params, keras_row, write_smallcnnzoo = (
    fixtures.RUNS, fixtures.STEPS, fixtures.KERAS_VARS, fixtures.keras_params, fixtures.keras_row,
    fixtures.write_smallcnnzoo)


# --- Model Zoos -------------------------------------------------------------------------------------------------
def reference_module(trial: dict, epoch: int) -> nn.Module:
    model = module_list_cnn(trial["nlin"], trial["dropout"])
    model.load_state_dict(trial["states"][epoch])
    return model.eval()


@pytest.fixture(scope="module")
def mz_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelzoo") / "tune_zoo_mnist"
    return root, write_modelzoo(root)


def fresh_copy(template: tuple[Path, Any], tmp_path: Path) -> tuple[Path, Any]:
    """A fresh copy of a module-scoped source folder (tests damage it), with what was written into it."""
    root, written = template
    shutil.copytree(root, tmp_path / root.name)
    return tmp_path / root.name, written


@pytest.fixture
def mzdir(mz_template, tmp_path):
    return fresh_copy(mz_template, tmp_path)


def test_modelzoo_import_reproduces_outputs_and_metadata(mzdir, tmp_path):
    src, trials = mzdir
    store = tmp_path / "mz.zoo"
    report = import_modelzoo(src, store, dataset="mnist")
    names = sorted(trials)
    assert (report.models, report.checkpoints, report.checkpoint_epochs) == (4, 12, [0, 1, 2])
    assert report.manifest == "explicit" and report.skipped_models == [] and report.zoo == "tune_zoo_mnist"
    assert report.architectures == {"cnn-s": 2464}

    z = zoo.open(store)
    assert z.attrs["imported_from"]["models"] == names
    assert z.metadata.num_rows == 12 and zoo.verify(store).ok
    x = torch.randn(16, 1, 28, 28)
    rows = {(r["model_id"], r["epoch"]): r for r in z.metadata.to_pylist()}
    for model_id, name in enumerate(names):
        t = trials[name]
        for epoch in range(3):
            with torch.no_grad():
                expected = reference_module(t, epoch)(x)
                got = z.module(model_id, epoch)(x)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
            row, res = rows[(model_id, epoch)], t["results"][epoch]
            for key in ("test_acc", "test_loss", "val_acc", "val_loss"):
                assert row[key] == res[key]
            if epoch == 0:  # the published zoos' -999: not measured
                assert row["train_acc"] is None and row["train_loss"] is None and row["gen_gap"] is None
            else:
                assert row["train_acc"] == res["train_acc"]
                assert row["gen_gap"] == res["train_acc"] - res["test_acc"]
            assert row["wall_time_s"] == res["time_total_s"] and row["status"] == "ok"
            p = t["params"]
            assert (row["seed"], row["lr"], row["dropout"], row["weight_decay"], row["momentum"]) == (
                p["seed"], p["optim::lr"], p["model::dropout"], p["optim::wd"], p["optim::momentum"])
            assert (row["activation"], row["init"], row["optimizer"], row["batch_size"], row["epochs"]) == (
                {"leakyrelu": "leaky_relu"}.get(t["nlin"], t["nlin"]), "uniform", "adam", 10, 2)
            assert row["dataset"] == "mnist" and row["architecture"] == "cnn-s"


def test_modelzoo_views_and_augmentations_work_on_the_imported_zoo(mzdir, tmp_path):
    src, trials = mzdir
    store = tmp_path / "mz.zoo"
    import_modelzoo(src, store, dataset="mnist")
    names = sorted(trials)
    ds = ZooDataset(store, view="state_dict", augment=("permute", "signflip"), targets=("epoch",))
    batch = ds.__getitems__(list(range(len(ds))))
    x = torch.randn(8, 1, 28, 28)
    z = zoo.open(store)
    changed = 0
    for i in range(len(ds)):
        model_id, epoch = int(batch["model_id"][i]), int(batch["epoch"][i])
        module = z.manifest.models[model_id].architecture.module()
        t = trials[names[model_id]]
        module.load_state_dict({k: v[i] for k, v in batch.items() if "." in k})
        ref = reference_module(t, epoch)
        changed += not torch.equal(batch["conv1.weight"][i], ref.module_list[0].weight)
        with torch.no_grad():
            torch.testing.assert_close(module.eval()(x), ref(x), rtol=1e-4, atol=1e-5)
    assert changed >= len(ds) - 1  # the augmentation did act


def test_modelzoo_keeps_the_published_manifest_when_it_describes_the_same_models(tmp_path):
    trials = [(seed, nlin, 0.0, 1e-3) for nlin in ("relu", "tanh") for seed in (2, 1)]
    src = tmp_path / "zoo"
    written = write_modelzoo(src, trials, epochs=1)
    published = Manifest.from_dict({
        "zoo": {"name": "mini-seed", "license": "CC-BY-4.0"},
        "dataset": {"name": "mnist", "val_size": 100},
        "architecture": {"name": "cnn-s", "activation": "tanh", "dropout": 0.0},
        "training": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-3, "momentum": 0.9, "batch_size": 10,
                     "epochs": 1, "init": "uniform"},
        "population": {"seeds": [1, 2], "grid": {"architecture.activation": ["tanh", "relu"]}},
        "checkpoints": {"epochs": "all"}}, source="mini-seed.toml")
    store = tmp_path / "mz.zoo"
    report = import_modelzoo(src, store, manifest=published)
    assert report.manifest == "published" and report.zoo == "mini-seed"
    z = zoo.open(store)
    assert z.attrs["manifest"] == published.to_dict()
    x = torch.randn(4, 1, 28, 28)
    by_config = {(t["params"]["seed"], t["nlin"]): t for t in written.values()}
    for spec in published.models:  # model ids follow the published expansion, not the folder order
        t = by_config[(spec.seed, spec.hparams["activation"])]
        with torch.no_grad():
            torch.testing.assert_close(z.module(spec.model_id, 1)(x), reference_module(t, 1)(x), rtol=0, atol=1e-6)
    assert [z.attrs["imported_from"]["models"][m.model_id] for m in published.models] == [
        n for m in published.models for n, t in written.items()
        if (t["params"]["seed"], t["nlin"]) == (m.seed, m.hparams["activation"])]

    # the same published manifest with one more seed describes other models: the store lists them explicitly
    other = Manifest.from_dict({**published.to_dict(), "population": {
        "seeds": [1, 2, 3], "grid": {"architecture.activation": ["tanh", "relu"]}}}, source="mini-seed.toml")
    report = import_modelzoo(src, tmp_path / "other.zoo", manifest=other)
    assert report.manifest == "explicit" and report.models == 4
    assert zoo.open(tmp_path / "other.zoo").manifest.dataset["val_size"] == 100  # dataset section carried over


def _drop_file(src: Path, trials: dict, name: str) -> None:
    (src / sorted(trials)[1] / name).unlink()


def _bad_shape(src: Path, trials: dict) -> None:
    first = src / sorted(trials)[0] / "checkpoint_000001" / "checkpoints"
    sd = torch.load(first)
    sd["module_list.0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(sd, first)


def _bad_param(src: Path, trials: dict, key: str, value) -> None:
    file = src / sorted(trials)[2] / "params.json"
    params = json.loads(file.read_text())
    params[key] = value
    file.write_text(json.dumps(params))


def _bad_result_line(src: Path, trials: dict) -> None:
    file = src / sorted(trials)[0] / "result.json"
    lines = file.read_text().splitlines()
    lines[1] = lines[1][:20]
    file.write_text("\n".join(lines))


@pytest.mark.parametrize("damage,message", [
    (lambda s, t: _drop_file(s, t, "params.json"), r"_00001_1_seed=12/params.json: missing"),
    (lambda s, t: _drop_file(s, t, "result.json"), r"_00001_1_seed=12/result.json: missing"),
    (_bad_shape, r"_00000_0_seed=11/checkpoint_000001/checkpoints: tensor 'module_list.0.weight' has shape "
                 r"\(8, 1, 3, 3\); cnn-s on 1x28x28 inputs expects \(8, 1, 5, 5\) for 'conv1.weight'"),
    (lambda s, t: _bad_param(s, t, "model::nlin", "swish"),
     r"params.json: field 'model::nlin': got 'swish'; allowed: gelu, leakyrelu, relu, sigmoid, tanh"),
    (lambda s, t: _bad_param(s, t, "model::type", "CNN2"),
     r"params.json: field 'model::type': got 'CNN2'; allowed: CNN, CNN3, Resnet18"),
    (lambda s, t: _bad_param(s, t, "optim::lr", "fast"), r"params.json: field 'optim::lr': expected a number, "
                                                         r"got 'fast'"),
    (lambda s, t: _bad_param(s, t, "seed", None), r"params.json: field 'seed' is missing"),
    (lambda s, t: _bad_param(s, t, "model::channels_in", 3), r"field 'model::channels_in' = 3, but dataset 'mnist'"),
    (_bad_result_line, r"_00000_0_seed=11/result.json: line 2: not valid JSON"),
    (lambda s, t: (s / sorted(t)[3] / "checkpoint_000002" / "checkpoints").unlink(),
     r"checkpoint_000002/checkpoints: missing"),
    (lambda s, t: shutil.rmtree(s / sorted(t)[3] / "checkpoint_000002"),
     r"_00003_3_seed=14: no checkpoint for epoch\(s\) 2 of the zoo's 0, 1, 2 \(1 trial folder\(s\) incomplete\); "
     r"pass --skip-incomplete"),
])
def test_modelzoo_malformed_directory_errors_and_leaves_nothing(mzdir, tmp_path, damage, message):
    src, trials = mzdir
    damage(src, trials)
    store = tmp_path / "mz.zoo"
    with pytest.raises(ZooError, match=message):
        import_modelzoo(src, store, dataset="mnist")
    assert not store.exists()


def test_modelzoo_needs_a_dataset_and_skips_incomplete_trials_on_request(mzdir, tmp_path):
    src, trials = mzdir
    src = src.rename(tmp_path / "trials")  # a folder name that names no dataset, and config.json says none
    with pytest.raises(ZooError, match=r"nor the folder names record the image dataset; pass the zoo's published "
                                       r"manifest \(--manifest manifests/modelzoo/NAME.toml\) or --dataset NAME"):
        import_modelzoo(src, tmp_path / "a.zoo")
    with pytest.raises(ZooError, match=r"unknown dataset: got 'mnsit'; allowed: .*did you mean 'mnist'"):
        import_modelzoo(src, tmp_path / "a.zoo", dataset="mnsit")
    shutil.rmtree(src / sorted(trials)[3] / "checkpoint_000002")
    report = import_modelzoo(src, tmp_path / "b.zoo", dataset="mnist", skip_incomplete=True)
    assert report.models == 3 and report.skipped_models == [sorted(trials)[3]]
    assert zoo.open(tmp_path / "b.zoo").attrs["imported_from"]["skipped"] == [sorted(trials)[3]]
    assert not (tmp_path / "a.zoo").exists()


def test_a_failure_while_writing_removes_the_new_store_and_a_rerun_resumes(mzdir, tmp_path, monkeypatch):
    src, _ = mzdir
    store = tmp_path / "mz.zoo"
    calls = []
    original = mz.read_rows

    def failing(spec, files):
        calls.append(files)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(spec, files)

    monkeypatch.setattr(mz, "read_rows", failing)
    with pytest.raises(OSError, match="disk full"):
        import_modelzoo(src, store, dataset="mnist", workers=1)
    assert not store.exists() and len(calls) == 3
    monkeypatch.setattr(mz, "read_rows", original)
    first = import_modelzoo(src, store, dataset="mnist")
    again = import_modelzoo(src, store, dataset="mnist")  # everything committed: nothing to redo
    assert again.units_written == 0 and again.units_skipped == first.units_written > 0


def store_contents(path: Path, ignore: tuple[str, ...] = ()) -> tuple[dict, dict, list]:
    """Everything a store holds but its creation time (and the ``ignore`` metadata columns): weights (bit
    patterns), attributes, metadata rows."""
    z = zoo.open(path)
    weights = {arch: np.asarray(z.weights(arch)[:]).view(np.uint32) for arch in z.attrs["architectures"]}
    attrs = {k: v for k, v in z.attrs.items() if k != "created"}
    rows = [{k: v for k, v in r.items() if k not in ignore} for r in z.metadata.to_pylist()]
    return weights, attrs, sorted(rows, key=lambda r: r["row"])


def assert_same_store(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    (wa, aa, ma), (wb, ab, mb) = store_contents(a, ignore), store_contents(b, ignore)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert aa == ab and ma == mb


def test_parallel_import_writes_the_same_store_as_one_worker(mzdir, tmp_path):
    src, trials = mzdir
    one = import_modelzoo(src, tmp_path / "one.zoo", dataset="mnist", group_size=2, workers=1)
    two = import_modelzoo(src, tmp_path / "two.zoo", dataset="mnist", group_size=2, workers=2)
    assert (one.workers, two.workers, two.units_written, two.checkpoints) == (1, 2, 6, 12)
    assert_same_store(tmp_path / "one.zoo", tmp_path / "two.zoo")
    assert zoo.verify(tmp_path / "two.zoo").ok
    z = zoo.open(tmp_path / "two.zoo")
    for model_id, name in enumerate(sorted(trials)):  # each row holds its checkpoint's tensors, bit for bit
        for epoch, state in trials[name]["states"].items():
            ours = torch.cat([v.flatten() for v in z.state_dict(model_id, epoch).values()])
            assert torch.equal(ours, torch.cat([v.flatten() for v in state.values()]))


def test_an_interrupted_parallel_import_keeps_whole_units_and_resumes(mzdir, tmp_path, monkeypatch):
    src, _ = mzdir
    store = tmp_path / "mz.zoo"
    run = Workers.run

    def interrupted(self, units, job_of):  # Ctrl-C while the workers are committing
        for n, item in enumerate(run(self, units, job_of)):
            if n == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Workers, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_modelzoo(src, store, dataset="mnist", group_size=1, workers=2)
    monkeypatch.setattr(Workers, "run", run)
    z = zoo.open(store)
    committed = len(z.done_units())
    assert 3 <= committed < 12 and zoo.verify(store).ok  # whole units only: the running ones were waited for
    assert not any(p.name.startswith(".") for p in (store / "metadata").iterdir())  # no temporary fragment left
    resumed = import_modelzoo(src, store, dataset="mnist", group_size=1, workers=2)
    assert (resumed.units_skipped, resumed.units_written) == (committed, 12 - committed)
    import_modelzoo(src, tmp_path / "clean.zoo", dataset="mnist", group_size=1, workers=1)
    assert_same_store(store, tmp_path / "clean.zoo")


def test_each_checkpoint_file_is_read_once(mzdir, tmp_path, monkeypatch):
    src, trials = mzdir
    names = sorted(trials)
    (src / names[1] / "checkpoint_000001" / "checkpoints").write_bytes(b"")  # both left out, never read whole
    cut = src / names[2] / "checkpoint_000002" / "checkpoints"
    cut.write_bytes(cut.read_bytes()[:3000])
    reads: dict[Path, int] = {}
    tails: list[int] = []
    read_file, read_tail = torchfile.read_file, torchfile.read_tail

    def counted(path):
        reads[Path(path)] = reads.get(Path(path), 0) + 1
        return read_file(path)

    def tail(f, size, n):
        tails.append(n)
        return read_tail(f, size, n)

    def no_torch(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torchfile, "read_file", counted)
    monkeypatch.setattr(torchfile, "read_tail", tail)
    monkeypatch.setattr(torch, "load", no_torch)
    report = import_modelzoo(src, tmp_path / "mz.zoo", dataset="mnist", workers=1, skip_incomplete=True)
    assert report.skipped_models == names[1:3] and report.checkpoints == 6
    imported = {src / n / f"checkpoint_{e:06d}" / "checkpoints" for n in (names[0], names[3]) for e in range(3)}
    assert reads == {f: 1 for f in imported}
    assert len(tails) == 11 and max(tails) <= torchfile.TAIL_BYTES  # each zip file's end records: <= 98 bytes


def test_a_damaged_file_that_looks_whole_is_an_error_even_with_skip_incomplete(mzdir, tmp_path):
    src, trials = mzdir
    file = src / sorted(trials)[3] / "checkpoint_000002" / "checkpoints"
    data = bytearray(file.read_bytes())
    entries = torchfile._directory(bytes(data))
    local, size, _ = entries["checkpoints/data/0"]
    data[local + 200] ^= 0xFF  # a flipped bit in a weight: the zip's end records are intact
    file.write_bytes(bytes(data))
    for skip in (False, True):
        with pytest.raises(ZooError, match=rf"{sorted(trials)[3]}/checkpoint_000002/checkpoints: not a readable "
                                           r"torch.save file, truncated or damaged \(record 'checkpoints/data/0' "
                                           r"fails its CRC-32 check\)"):
            import_modelzoo(src, tmp_path / "mz.zoo", dataset="mnist", skip_incomplete=skip, workers=2)
        assert not (tmp_path / "mz.zoo").exists()


def test_legacy_torch_save_files_are_read_through_torch(mzdir, tmp_path):
    src, trials = mzdir
    names = sorted(trials)
    for name in names[:2]:
        for epoch in range(3):
            file = src / name / f"checkpoint_{epoch:06d}" / "checkpoints"
            torch.save(trials[name]["states"][epoch], file, _use_new_zipfile_serialization=False)
    legacy = src / names[1] / "checkpoint_000001" / "checkpoints"
    legacy.write_bytes(legacy.read_bytes()[:-100])  # cut short: found by the scan, which reads legacy files
    with pytest.raises(ZooError, match=rf"{names[1]}/checkpoint_000001/checkpoints: not a readable torch.save "
                                       r"file, truncated or damaged"):
        import_modelzoo(src, tmp_path / "a.zoo", dataset="mnist")
    report = import_modelzoo(src, tmp_path / "b.zoo", dataset="mnist", skip_incomplete=True, workers=1)
    assert report.skipped_models == [names[1]] and report.models == 3
    z = zoo.open(tmp_path / "b.zoo")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(z.module(0, 2)(x), reference_module(trials[names[0]], 2)(x), rtol=0, atol=1e-6)


def test_torchfile_reads_what_torch_load_reads(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {"w": torch.randn(3, 5), "t": base.t(), "view": base[1:, 2:5], "row": base[2], "double": torch.randn(4, 2,
          dtype=torch.float64), "half": torch.randn(7, dtype=torch.float16), "count": torch.tensor(5),
          "empty": torch.zeros(0, 3), "param": nn.Parameter(torch.randn(2, 2)), "flag": torch.tensor([True, False])}
    file = tmp_path / "sd.pt"
    torch.save(sd, file)
    expected = torch.load(file, weights_only=True)
    for _ in range(2):  # the second time from the cached structure of the same data.pkl
        got = torchfile.load(torchfile.read_file(file))
        assert list(got) == list(expected)
        for key, value in expected.items():
            assert got[key].dtype == value.detach().numpy().dtype and got[key].shape == tuple(value.shape)
            assert np.array_equal(got[key], value.detach().numpy()), key
    data = file.read_bytes()
    for cut in range(0, len(data), 97):  # every prefix of the archive: refused by the tail check and the reader
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        assert torchfile.tail_check(tmp_path / "cut.pt")[1] is not None
        with pytest.raises((torchfile.Unreadable, torchfile.Unsupported)):
            torchfile.load(data[:cut])
    # an archive without zip64 end records (older writers), its records unaligned: the same tensors
    with zipfile.ZipFile(file) as src, zipfile.ZipFile(tmp_path / "plain.pt", "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    assert torchfile.tail_check(tmp_path / "plain.pt")[1] is None
    got = torchfile.load((tmp_path / "plain.pt").read_bytes())
    assert all(np.array_equal(got[k], v.detach().numpy()) for k, v in expected.items())
    with zipfile.ZipFile(file) as src, zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    with pytest.raises(torchfile.Unsupported, match="compressed"):
        torchfile.load((tmp_path / "deflated.pt").read_bytes())
    # what only torch reads: bfloat16, legacy files, other objects; load_state_dict hands the same bytes to torch
    torch.save({"b": torch.randn(3, dtype=torch.bfloat16)}, tmp_path / "bf16.pt")
    torch.save({"w": sd["w"]}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("bf16.pt", "legacy.pt"):
        with pytest.raises(torchfile.Unsupported):
            torchfile.load((tmp_path / name).read_bytes())
    got = statedicts.load_state_dict(tmp_path / "bf16.pt")
    assert got["b"].dtype == np.float32
    assert np.array_equal(got["b"], torch.load(tmp_path / "bf16.pt")["b"].float().numpy())
    assert np.array_equal(statedicts.load_state_dict(tmp_path / "legacy.pt")["w"], sd["w"].numpy())
    torch.save({"w": sd["w"], "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ZooError, match=r"mixed.pt: expected a state dict \(tensor name -> tensor\)"):
        statedicts.load_state_dict(tmp_path / "mixed.pt")
    buffer = io.BytesIO()
    torch.save({"w": sd["w"]}, buffer)
    assert torchfile.tail_check.__doc__ and torchfile.load(buffer.getvalue())["w"].tolist() == sd["w"].tolist()


def test_workers_are_checked_and_reported(mzdir, tmp_path, capsys):
    src, _ = mzdir
    with pytest.raises(ZooError, match=r"workers: expected an integer >= 0 \(0 or 1: read in this process\), "
                                       r"got -1"):
        import_modelzoo(src, tmp_path / "a.zoo", dataset="mnist", workers=-1)
    assert not (tmp_path / "a.zoo").exists()
    assert main(["import", "modelzoo", str(src), str(tmp_path / "b.zoo"), "--dataset", "mnist", "--workers", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 1
    assert main(["import", "modelzoo", str(src), str(tmp_path / "c.zoo"), "--dataset", "mnist", "--workers", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 2
    assert_same_store(tmp_path / "b.zoo", tmp_path / "c.zoo")


def test_the_command_line_imports_with_forked_workers(mzdir, tmp_path):
    src, _ = mzdir  # a fresh process runs no other thread when its workers start: they fork (workers.py)
    code = ("import sys; from builders.importers import workers; from zoo.cli import main; "
            "assert workers.start_method() == 'fork' or not sys.platform.startswith('linux'); "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "import", "modelzoo", str(src), str(tmp_path / "cli.zoo"),
                           "--dataset", "mnist", "--group-size", "2", "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["workers"] == 2 and done.stderr == ""
    import_modelzoo(src, tmp_path / "here.zoo", dataset="mnist", group_size=2, workers=1)
    assert_same_store(tmp_path / "cli.zoo", tmp_path / "here.zoo")  # torch_version too: one spelling (zoo.versions)


def test_imported_and_created_stores_record_one_torch_version(mzdir, tmp_path):
    """An import in a process that never loads torch records torch's own ``__version__`` (local tag included:
    ``2.14.1+cu130``, where the package metadata says ``2.14.1``), as a store written through ``zoo.create``
    does: the column compares across imported and built zoos."""
    src, _ = mzdir
    import_modelzoo(src, tmp_path / "here.zoo", dataset="mnist")  # torch loaded; fills the spec cache the next reads
    code = ("import sys; from zoo.cli import main; status = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the import loaded torch'; sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code, "import", "modelzoo", str(src), str(tmp_path / "mz.zoo"),
                           "--dataset", "mnist", "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    writer = zoo.create(tmp_path / "made.zoo", tiny_manifest(), group_size=3)
    unit = writer.plan.units[0]
    writer.write_unit(unit, np.zeros((len(unit.model_ids), writer.layout(unit.arch_id).size), np.float32),
                      [{"status": "ok"}] * len(unit.model_ids))  # no torch_version: the store fills it in
    spelled = {name: set(zoo.open(tmp_path / name).metadata.column("torch_version").to_pylist())
               for name in ("mz.zoo", "here.zoo", "made.zoo")}
    assert spelled == dict.fromkeys(spelled, {torch.__version__})


def test_the_import_benchmark_runs(capsys):
    assert fixtures.main(["--trials", "4", "--epochs", "3", "--runs", "3", "--repeat", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["modelzoo_checkpoints"], out["smallcnnzoo_checkpoints"]) == (16, 27)
    assert out["modelzoo_same_store"] is True
    assert out["modelzoo_checkpoints_per_s"] > 0 and out["modelzoo_one_worker_checkpoints_per_s"] > 0


def test_diverged_checkpoints_are_kept_and_flagged(mzdir, tmp_path):
    src, trials = mzdir
    file = src / sorted(trials)[0] / "checkpoint_000002" / "checkpoints"
    sd = torch.load(file)
    sd["module_list.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, file)
    report = import_modelzoo(src, tmp_path / "mz.zoo", dataset="mnist")
    assert report.diverged_checkpoints == 1
    meta = zoo.open(tmp_path / "mz.zoo").metadata.to_pylist()
    assert [(r["model_id"], r["epoch"]) for r in meta if r["status"] == "diverged"] == [(0, 2)]


def test_modelzoo_resnet18_maps_by_name_with_batchnorm_statistics(tmp_path):
    from torchvision.models import resnet18

    src = tmp_path / "tune_zoo_cifar10_resnet18"
    folder = src / "NN_tune_trainable_00000"
    folder.mkdir(parents=True)
    params = {**trial_params(1, "relu", 0.0, 0.05, epochs=1), "model::type": "Resnet18", "model::channels_in": 3,
              "optim::optimizer": "sgd", "optim::scheduler": "OneCycleLR", "model::init_type": "kaiming_uniform"}
    (folder / "params.json").write_text(json.dumps(params))
    torch.manual_seed(0)
    model = resnet18(num_classes=10)  # the Model Zoos' ResNet18: torchvision's with the CIFAR stem
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    states = {}
    for epoch in (0, 1):
        with torch.no_grad():
            for name, b in model.named_buffers():
                if "running" in name:  # BatchNorm statistics as after training: they must travel too
                    b.copy_(torch.rand_like(b) + (0.5 if "var" in name else -0.5))
                elif "num_batches" in name:
                    b.fill_(epoch * 100)
        (folder / f"checkpoint_{epoch:06d}").mkdir()
        torch.save(model.state_dict(), folder / f"checkpoint_{epoch:06d}" / "checkpoints")
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    (folder / "result.json").write_text("\n".join(json.dumps({"training_iteration": e, "test_acc": 0.1 * e})
                                                  for e in (0, 1)))
    report = import_modelzoo(src, tmp_path / "r.zoo", dataset="cifar10")
    assert report.architectures == {"resnet18": 11173962}
    z = zoo.open(tmp_path / "r.zoo")
    row = z.metadata.to_pylist()[1]
    assert (row["optimizer"], row["schedule"], row["init"], row["lr"]) == ("sgd", "onecycle", "kaiming_uniform", 0.05)
    x = torch.randn(2, 3, 32, 32)
    for epoch in (0, 1):
        model.load_state_dict(states[epoch])
        with torch.no_grad():
            torch.testing.assert_close(z.module(0, epoch)(x), model.eval()(x), rtol=0, atol=1e-5)


def test_an_existing_folder_or_store_is_never_touched(mzdir, tmp_path):
    src, _ = mzdir
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ZooError, match=r"busy: exists and is not a weightzoo store"):
        import_modelzoo(src, busy, dataset="mnist")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    import_modelzoo(src, tmp_path / "a.zoo", dataset="mnist")
    with pytest.raises(ZooError, match=r"a.zoo: the store holds zoo 'tune_zoo_mnist' built from another manifest"):
        import_modelzoo(src, tmp_path / "a.zoo", dataset="fashion-mnist")
    assert zoo.verify(tmp_path / "a.zoo").ok and zoo.open(tmp_path / "a.zoo").metadata.num_rows == 12


# --- Model Zoos downloads: the wsl-modelzoo layout, its dataset spellings, failed downloads ------------------
#: index_dict.json of the fixture's CNN-s (the published zoos' layer index of their vectorized weights)
INDEX_DICT = {"layer": [0, 3, 6, 9, 11], "kernel_no": [8, 6, 4, 20, 10], "channels_in": [1, 8, 6, 36, 20],
              "kernel_size": [25, 25, 4, 1, 1], "idx_start": [0, 208, 1414, 1514, 2254]}


def nested_zoo(template: tuple[Path, Any], root: Path, rel: str, config: dict | None = None) -> Path:
    """A copy of the template zoo at ``root/rel``, as wsl-modelzoo nests its downloads
    (``core-modelzoo/<arch>_<dataset>/tune_zoo_*``); ``config`` replaces its config.json."""
    folder = root / rel
    shutil.copytree(template[0], folder)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_modelzoo_takes_a_wsl_modelzoo_download_root_holding_one_zoo(mz_template, tmp_path):
    root = tmp_path / "download"
    src = nested_zoo(mz_template, root, "core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform")
    (root / "README.md").write_text("")
    (src.parent / "index_dict.json").write_text(json.dumps(INDEX_DICT))  # checked against cnn-s: it fits
    store = tmp_path / "mz.zoo"
    report = import_modelzoo(root, store)  # no --dataset: the folder names say mnist
    assert (report.source, report.zoo, report.models, report.checkpoints) == (str(src), "tune_zoo_mnist_uniform", 4, 12)
    z = zoo.open(store)
    assert z.manifest.dataset["name"] == "mnist" and zoo.verify(store).ok
    assert "(dataset mnist from the folder name 'tune_zoo_mnist_uniform')" in z.attrs["manifest"]["zoo"]["description"]
    assert z.attrs["imported_from"]["source"] == str(src.resolve())
    trials = mz_template[1]
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(z.module(3, 2)(x), reference_module(trials[sorted(trials)[3]], 2)(x), rtol=0,
                                   atol=1e-6)
    # the same zoo named by its own folder is the same import: it resumes (here: nothing left to write)
    again = import_modelzoo(src, store)
    assert (again.units_written, again.units_skipped) == (0, report.units_written)


def test_modelzoo_refuses_a_root_holding_several_zoos_and_lists_them(mz_template, tmp_path):
    root = tmp_path / "download"
    nested_zoo(mz_template, root, "core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform")
    fmnist = nested_zoo(mz_template, root, "zoos/tune_zoo_f_mnist_uniform")  # zoos are found at any depth
    store = tmp_path / "mz.zoo"
    with pytest.raises(ZooError, match=r"download: holds 2 zoos \(tune_zoo_\* folders\), and one store holds one "
                                       r"zoo; point SRC at one of them \(e.g. .*\):\n"
                                       r"  core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform\n"
                                       r"  zoos/tune_zoo_f_mnist_uniform$"):
        import_modelzoo(root, store, dataset="mnist")
    assert not store.exists()
    assert import_modelzoo(fmnist, store).models == 4  # one of them, as the error says


@pytest.mark.parametrize("rel,config,dataset,found_in", [
    ("core-modelzoo/cnn-small_fmnist/tune_zoo_uniform", None, None, "the folder name 'cnn-small_fmnist'"),
    ("zoos/tune_zoo_f_mnist_uniform", None, None, "the folder name 'tune_zoo_f_mnist_uniform'"),
    # config.json comes first: its dataset file's folder names the dataset
    ("core-modelzoo/cnn-small_mnist/tune_zoo_uniform",
     {"model::type": "CNN", "dataset::dump": "/ds/zoos/F_MNIST/tune_zoo_f_mnist_uniform/dataset.pt"}, None,
     "config.json 'dataset::dump'"),
    ("trials", None, "fmnist", None),  # an explicit --dataset takes the zoos' spellings too
    ("core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform", None, "FMNIST", None),  # and wins over the folders
])
def test_modelzoo_dataset_spellings_of_the_published_zoos_map_to_the_registry(mz_template, tmp_path, rel, config,
                                                                              dataset, found_in):
    src = nested_zoo(mz_template, tmp_path / "download", rel, config)
    report = import_modelzoo(src, tmp_path / "mz.zoo", dataset=dataset)
    z = zoo.open(tmp_path / "mz.zoo")
    assert report.models == 4 and z.manifest.dataset["name"] == "fashion-mnist"
    assert {r["dataset"] for r in z.metadata.to_pylist()} == {"fashion-mnist"}
    description = z.attrs["manifest"]["zoo"]["description"]
    assert (found_in in description) if found_in else "(dataset " not in description


def test_modelzoo_dataset_spelling_table():
    assert {mz.dataset_name(s) for s in ("fmnist", "F_MNIST", "fashion-mnist")} == {"fashion-mnist"}
    assert (mz.dataset_name("tinyimagenet"), mz.dataset_name("STL-10"), mz.dataset_name("CIFAR10")) == (
        "tiny-imagenet", "stl10", "cifar10")
    assert mz.dataset_name("uniform") is None
    assert set(mz.DATASET_SPELLINGS.values()) <= set(zoo.datasets.DATASETS.names())
    assert [mz._dataset_in(n) for n in ("tune_zoo_cifar100_resnet18_kaiming_uniform", "tune_zoo_stl-10_large_uniform",
                                        "tune_zoo_tiny-imagenet_resnet18_kaiming_uniform", "resnet18_tinyimagenet",
                                        "cnn-small_fmnist", "F_MNIST", "tune_zoo_uniform", "zoos")] == [
        "cifar100", "stl10", "tiny-imagenet", "tiny-imagenet", "fashion-mnist", "fashion-mnist", None, None]


def test_modelzoo_index_dict_of_another_architecture_is_refused(mzdir, tmp_path):
    src, _ = mzdir
    (src / "index_dict.json").write_text(json.dumps({**INDEX_DICT, "kernel_no": [8, 16, 4, 20, 10]}))
    with pytest.raises(ZooError, match=r"index_dict.json: field 'kernel_no': layer 1 has 16; cnn-s's conv2.weight has "
                                       r"shape \(6, 8, 5, 5\): is this the index of another zoo\?"):
        import_modelzoo(src, tmp_path / "mz.zoo", dataset="mnist")
    assert not (tmp_path / "mz.zoo").exists()


def test_modelzoo_empty_and_truncated_checkpoint_files_are_refused_or_skipped(mz_template, tmp_path, capsys):
    root = tmp_path / "download"
    src = nested_zoo(mz_template, root, "core-modelzoo/cnn-small_mnist/tune_zoo_mnist_uniform")
    names = sorted(mz_template[1])
    store = tmp_path / "mz.zoo"
    cut = src / names[2] / "checkpoint_000002" / "checkpoints"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a download cut short
    with pytest.raises(ZooError, match=rf"{names[2]}/checkpoint_000002/checkpoints: not a readable torch.save file, "
                                       r"truncated or damaged \(.*\); pass --skip-incomplete to leave out the models "
                                       r"with missing, empty or truncated checkpoint files"):
        import_modelzoo(root, store)
    empty = src / names[1] / "checkpoint_000001" / "checkpoints"
    empty.write_bytes(b"")  # a download that never started
    with pytest.raises(ZooError, match=rf"{names[1]}/checkpoint_000001/checkpoints: empty \(0 bytes; an interrupted "
                                       r"download\?\); pass --skip-incomplete"):
        import_modelzoo(root, store)
    assert not store.exists()

    assert main(["import", "modelzoo", str(root), str(store), "--skip-incomplete", "--workers", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["models"], out["checkpoints"], out["skipped_models"], out["workers"]) == (2, 6, [names[1], names[2]], 2)
    reasons = out["skipped_reasons"]
    assert reasons[names[1]] == "checkpoint_000001/checkpoints: empty (0 bytes; an interrupted download?)"
    assert reasons[names[2]].startswith("checkpoint_000002/checkpoints: not a readable torch.save file, truncated")
    z = zoo.open(store)
    assert z.attrs["imported_from"]["models"] == [names[0], names[3]] and zoo.verify(store).ok
    assert z.attrs["imported_from"]["skipped_reasons"] == reasons
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(z.module(1, 2)(x), reference_module(mz_template[1][names[3]], 2)(x), rtol=0,
                                   atol=1e-6)
    # the same command again finds everything committed, and names the models it leaves out
    assert main(["import", "modelzoo", str(root), str(store), "--skip-incomplete", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 0 unit(s)" in printed and "left out 2 incomplete model(s):" in printed
    assert f"  {names[1]}: checkpoint_000001/checkpoints: empty (0 bytes; an interrupted download?)" in printed
    assert f"  {names[2]}: checkpoint_000002/checkpoints: not a readable torch.save file" in printed

    # a missing checkpoint file (the folder is there) is incomplete too
    (src / names[0] / "checkpoint_000000" / "checkpoints").unlink()
    report = import_modelzoo(src, tmp_path / "b.zoo", skip_incomplete=True)
    assert report.skipped_models == names[:3] and report.models == 1
    assert report.skipped_reasons[names[0]].startswith("checkpoint_000000/checkpoints: missing")


# --- Small CNN Zoo ----------------------------------------------------------------------------------------
def keras_forward(params, x_nhwc: np.ndarray, activation: str) -> np.ndarray:
    """The Keras network, independently: valid 3x3 stride-2 convs in NHWC, activation, global mean, dense."""
    act = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}[activation]
    h = x_nhwc.astype(np.float64)
    for b, k in params[:3]:
        n = (h.shape[1] - 3) // 2 + 1
        patches = np.stack([h[:, i:i + 2 * n - 1:2, j:j + 2 * n - 1:2, :] for i in range(3) for j in range(3)], 3)
        h = act(np.einsum("bhwkc,kco->bhwo", patches, k.reshape(9, k.shape[2], k.shape[3])) + b)
    b, k = params[3]
    return h.mean(axis=(1, 2)) @ k + b


@pytest.fixture(scope="module")
def sc_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("smallcnnzoo") / "mnist"
    return root, write_smallcnnzoo(root)


@pytest.fixture
def scdir(sc_template, tmp_path):
    return fresh_copy(sc_template, tmp_path)


def test_smallcnnzoo_import_reproduces_keras_outputs_and_metadata(scdir, tmp_path):
    src, runs = scdir
    store = tmp_path / "sc.zoo"
    report = import_smallcnnzoo(src, store)
    assert (report.models, report.checkpoints, report.checkpoint_epochs) == (5, 15, list(STEPS))
    assert report.zoo == "smallcnnzoo-mnist" and report.architectures == {"smallcnn": 4970}
    z = zoo.open(store)
    names = list(runs)  # model ids follow the first appearance in metrics.csv.gz
    assert z.attrs["imported_from"]["models"] == names and zoo.verify(store).ok
    x = torch.randn(6, 1, 28, 28)
    meta = {(r["model_id"], r["epoch"]): r for r in z.metadata.to_pylist()}
    inits = {"he_normal": "kaiming_normal", "RandomNormal": "normal", "GlorotNormal": "xavier_normal",
             "TruncatedNormal": "truncated_normal", "Orthogonal": "orthogonal"}
    for model_id, name in enumerate(names):
        run = runs[name]
        act, dropout, opt, lr, l2, w_init, std, frac = run["run"]
        for step in STEPS:
            params = run["params"][step]
            sd = z.state_dict(model_id, step)
            assert torch.equal(sd["conv2.weight"], torch.from_numpy(params[1][1].transpose(3, 2, 0, 1).copy()))
            assert torch.equal(sd["fc.weight"], torch.from_numpy(params[3][1].T.copy()))
            with torch.no_grad():
                got = z.module(model_id, step).double()(x.double()).numpy()
            np.testing.assert_allclose(got, keras_forward(params, x.permute(0, 2, 3, 1).numpy(), act), rtol=0,
                                       atol=1e-6)
            row, m = meta[(model_id, step)], run["metrics"][step]
            assert (row["test_acc"], row["test_loss"], row["train_acc"], row["train_loss"]) == (
                m["test_accuracy"], m["test_loss"], m["train_accuracy"], m["train_loss"])
            assert row["val_acc"] is None and row["gen_gap"] == m["train_accuracy"] - m["test_accuracy"]
            assert (row["activation"], row["dropout"], row["optimizer"], row["lr"], row["weight_decay"]) == (
                act, dropout, opt, lr, l2)
            assert (row["init"], row["init_std"], row["train_fraction"], row["seed"]) == (inits[w_init], std, frac, 42)
            assert (row["epochs"], row["batch_size"], row["dataset"]) == (3, 512, "mnist")
    assert z.manifest.dataset["grayscale"] and z.manifest.dataset["mean"] == [0.5]


def test_smallcnnzoo_views_and_augmentations_work_on_the_imported_zoo(scdir, tmp_path):
    src, runs = scdir
    import_smallcnnzoo(src, tmp_path / "sc.zoo")
    ds = ZooDataset(tmp_path / "sc.zoo", view="state_dict", augment=("permute", "rescale", "signflip"),
                    targets=("epoch",))
    batch = ds.__getitems__(list(range(len(ds))))
    names = list(runs)
    x = torch.randn(5, 1, 28, 28)
    z = zoo.open(tmp_path / "sc.zoo")
    for i in range(len(ds)):
        model_id, epoch = int(batch["model_id"][i]), int(batch["epoch"][i])
        module = z.manifest.models[model_id].architecture.module().double().eval()
        module.load_state_dict({k: v[i].double() for k, v in batch.items() if "." in k})
        run = runs[names[model_id]]
        with torch.no_grad():
            np.testing.assert_allclose(module(x.double()).numpy(), keras_forward(
                run["params"][epoch], x.permute(0, 2, 3, 1).numpy(), run["activation"]), rtol=1e-5, atol=1e-5)


def _rewrite_metrics(src: Path, edit) -> None:
    with gzip.open(src / "metrics.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = edit(rows)
    with gzip.open(src / "metrics.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _set(rows, i, key, value):
    rows[i][key] = value
    return rows


@pytest.mark.parametrize("damage,message", [
    (lambda s: (s / "layout.csv").unlink(), r"mnist/layout.csv: missing; a Small CNN Zoo directory holds "
                                            r"weights.npy, metrics.csv.gz, layout.csv"),
    (lambda s: np.save(s / "weights.npy", np.zeros((15, 4971), np.float32)),
     r"layout.csv: the variables cover 4970 values; weights.npy rows have 4971"),
    (lambda s: np.save(s / "weights.npy", np.zeros((14, 4970), np.float32)),
     r"weights.npy: 14 rows, but metrics.csv.gz describes 15 checkpoints"),
    (lambda s: np.save(s / "weights.npy", np.zeros(4970, np.float32)),
     r"weights.npy: array of shape \(4970,\) and dtype float32; expected a 2-D float array"),
    (lambda s: (s / "metrics.csv.gz").write_bytes(b"not gzip"), r"metrics.csv.gz: not a readable"),
    (lambda s: _rewrite_metrics(s, lambda rows: [{k: v for k, v in r.items() if k != "config.l2reg"}
                                                 for r in rows]),
     r"metrics.csv.gz: column 'config.l2reg' is missing"),
    (lambda s: _rewrite_metrics(s, lambda rows: [{**r, "config.w_init": "lecun_normal"} for r in rows]),
     r"metrics.csv.gz: row 1 \(run '.*/1000/'\): field 'config.w_init': got 'lecun_normal'; allowed: "),
    (lambda s: _rewrite_metrics(s, lambda rows: _set(rows, 7, "config.learning_rate", "0.5")),
     r"row 8: field 'config.learning_rate' = 0.5, but run '.*/1002/' has 0.001 in row 3"),
    (lambda s: _rewrite_metrics(s, lambda rows: _set(rows, 4, "test_accuracy", "high")),
     r"metrics.csv.gz: row 5: field 'test_accuracy': expected a number, got 'high'"),
    (lambda s: _rewrite_metrics(s, lambda rows: [{**r, "config.num_units": "32"} for r in rows]),
     r"field 'config.num_units' = 32; the registered smallcnn is config.dnn_architecture = 'cnn'"),
    (lambda s: (s / "layout.csv").write_text((s / "layout.csv").read_text().replace("(3, 3, 16, 16)",
                                                                                   "(3, 3, 32, 8)", 1)),
     r"layout.csv: line 5: sequential/conv2d_1/kernel of shape \(3, 3, 32, 8\) does not fit conv2.weight "
     r"\(16, 16, 3, 3\)"),
])
def test_smallcnnzoo_malformed_directory_errors_and_leaves_nothing(scdir, tmp_path, damage, message):
    src, _ = scdir
    damage(src)
    store = tmp_path / "sc.zoo"
    with pytest.raises(ZooError, match=message):
        import_smallcnnzoo(src, store)
    assert not store.exists()


def test_smallcnnzoo_incomplete_runs_and_published_manifest(tmp_path):
    src = tmp_path / "cifar10"
    runs = write_smallcnnzoo(src, dataset="cifar10", drop={(2, 3)})  # run 2 crashed before its last checkpoint
    with pytest.raises(ZooError, match=r"run '.*/1002/' has no checkpoint at step\(s\) 3 of the zoo's 0, 1, 3 "
                                       r"\(1 run\(s\) incomplete\); pass --skip-incomplete"):
        import_smallcnnzoo(src, tmp_path / "a.zoo")
    # the published manifest with fewer random draws (expanding all 30,000 costs seconds): same facts
    text = (Path(__file__).parents[1] / "manifests" / "smallcnnzoo" / "cifar10.toml").read_text()
    published = tmp_path / "cifar10.toml"
    published.write_text(text.replace("draws = 30000", "draws = 3"))
    report = import_smallcnnzoo(src, tmp_path / "b.zoo", manifest=published, skip_incomplete=True)
    assert report.models == 4 and report.skipped_models == [list(runs)[2]] and report.manifest == "explicit"
    z = zoo.open(tmp_path / "b.zoo")
    assert z.manifest.name == "smallcnnzoo-cifar10" and z.manifest.dataset["grayscale"]
    assert z.manifest.architectures["smallcnn"].in_shape == (1, 32, 32)  # grayscale CIFAR-10, as published
    mnist = tmp_path / "mnist.toml"
    mnist.write_text(text.replace("draws = 30000", "draws = 3").replace('name = "cifar10"', 'name = "mnist"'))
    with pytest.raises(ZooError, match=r"mnist.toml: declares dataset 'mnist', but .* holds runs on 'cifar10'"):
        import_smallcnnzoo(src, tmp_path / "c.zoo", manifest=mnist, skip_incomplete=True)
    assert not (tmp_path / "a.zoo").exists() and not (tmp_path / "c.zoo").exists()


# --- the CLI and the registry ------------------------------------------------------------------------------
def test_cli_import_both_sources(mzdir, scdir, tmp_path, capsys):
    src, _ = mzdir
    assert main(["import", "modelzoo", str(src), str(tmp_path / "a.zoo"), "--dataset", "mnist", "--json",
                 "--name", "mnist-mini"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["models"], out["checkpoints"], out["zoo"], out["format"]) == (4, 12, "mnist-mini", "modelzoo")
    sc, _ = scdir
    assert main(["import", "smallcnnzoo", str(sc), str(tmp_path / "b.zoo"), "--quiet"]) == 0
    out = capsys.readouterr()  # --quiet: no progress bar, the summary stays
    assert out.err == "" and "imported 5 models, 15 checkpoints (epochs 0, 1, 3)" in out.out
    assert main(["import", "smallcnnzoo", str(sc), str(tmp_path / "b.zoo")]) == 0  # resumed: nothing to do
    assert "wrote 0 unit(s), skipped" in capsys.readouterr().out
    assert main(["import", "modelzoo", str(tmp_path / "nowhere"), str(tmp_path / "c.zoo"), "--dataset",
                 "mnist"]) == 2
    assert "zoo import: error: " in capsys.readouterr().err and not (tmp_path / "c.zoo").exists()
    assert IMPORTERS.names() == ["hf", "inr", "modelzoo", "smallcnnzoo"]


# --- the manifest's explicit population ---------------------------------------------------------------------
BASE = {"zoo": {"name": "explicit"}, "dataset": {"name": "digits", "resize": 8},
        "architecture": {"name": "mlp", "hidden": [4]}, "training": {"epochs": 2}}


def test_manifest_lists_models_explicitly():
    m = Manifest.from_dict({**BASE, "population": {"models": [
        {"seed": 5, "training.lr": 0.1, "architecture.activation": "tanh"},
        {"seed": 5, "training.lr": 0.2},
        {"seed": 1, "training.lr": 0.1, "architecture.activation": "tanh"}]}}, source="x.toml")
    assert [(s.seed, s.hparams["lr"], s.activation) for s in m.models] == [(5, 0.1, "tanh"), (5, 0.2, "relu"),
                                                                          (1, 0.1, "tanh")]
    assert m.seeds == (5, 5, 1)
    assert Manifest.from_dict(m.to_dict()).models == m.models


@pytest.mark.parametrize("population,message", [
    ({}, r"field 'population.seeds': required field is missing \(or list every model in population.models\)"),
    ({"models": [{"seed": 1}], "seeds": [1]}, r"field 'population.models': lists every model itself; remove "
                                              r"population.seeds"),
    ({"models": []}, r"field 'population.models': the list of models is empty"),
    ({"models": [{"training.lr": 0.1}]}, r"field 'population.models\[0\].seed': required integer >= 0"),
    ({"models": [{"seed": 1}, {"seed": 2, "training.lr": -1}]},
     r"field 'population.models\[1\].training.lr': expected a value > 0, got -1"),
    ({"models": [{"seed": 1, "training.epochs": 3}]}, r"training.epochs cannot vary within one zoo"),
    ({"models": [{"seed": 1, "training.lrr": 3}]}, r"unknown field 'training.lrr'"),
])
def test_manifest_explicit_models_errors(population, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict({**BASE, "population": population}, source="x.toml")


def test_grouping_by_architecture_fills_units_and_is_refused_by_the_trainer():
    models = [{"seed": i, "architecture.activation": ("relu", "tanh")[i % 2], "architecture.dropout": 0.1 * i}
              for i in range(5)]
    data = {**BASE, "population": {"models": models}}
    by_structure = Plan(Manifest.from_dict(data), group_size=4)
    assert [g.model_ids for g in by_structure.groups] == [(0, 2, 4), (1, 3)]  # dropout is a per-model rate
    version1 = Plan(Manifest.from_dict(data), group_size=4, version=1)  # format-1 stores: dropout was structure
    assert [g.model_ids for g in version1.groups] == [(0,), (1,), (2,), (3,), (4,)]
    m = Manifest.from_dict({**data, "population": {"models": models, "grouping": "architecture"}})
    assert [g.model_ids for g in Plan(m, group_size=4).groups] == [(0, 1, 2, 3), (4,)]
    from builders.population import Population

    with pytest.raises(ZooError, match=r"models \[0, 1, 2, 3\] differ in activation: one population "
                                       r"trains only models that share everything but dropout, init, init_std, lr, "
                                       r"momentum, seed, weight_decay"):
        Population(m.models[:4], m.models[0].architecture.layout)
    with pytest.raises(ManifestError, match=r"field 'population.grouping': got 'model'; allowed: architecture, "
                                            r"structure"):
        Manifest.from_dict({**data, "population": {"models": models, "grouping": "model"}})


def test_imported_zoos_fill_units_whatever_their_recipes(scdir, tmp_path):
    src, _ = scdir  # five runs, five dropout rates: one group of five, not five groups of one
    report = import_smallcnnzoo(src, tmp_path / "sc.zoo", group_size=4)
    assert report.units_written == 2 * len(STEPS)
    z = zoo.open(tmp_path / "sc.zoo")
    assert z.manifest.population["grouping"] == "architecture"
    assert sorted({(u.model_ids, u.epoch) for u in z.plan.units}) == sorted(
        {(ids, e) for ids in ((0, 1, 2, 3), (4,)) for e in STEPS})
