"""Hugging Face export / import / push: datasets.load_dataset reads the export offline with the right features,
export -> import is bit-exact (metadata included), the descriptor cannot point outside its folder, Hub sources are
explicit and cached by (id, revision), and a push that cannot succeed fails in one line before exporting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import fill_units, tiny_manifest

import zoo
import zoo.hf
import zoo.hf.cache
import zoo.hf.export
from loaders import ZooDataset
from loaders.hub import DESCRIPTOR, HubRef, export_hf, hub_ref, import_hf, open_source, push
from zoo.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def exported(filled, tmp_path):
    writer, written = filled
    out = tmp_path / "export"
    summary = export_hf(writer.url, out, seed=1)
    return writer, written, out, summary


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WEIGHTZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _card(out) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def _fake_download(folder: Path, asked: list):
    def download(repo_id, repo_type, revision):
        asked.append((repo_id, repo_type, revision))
        return str(folder)
    return download


def _edit_descriptor(out: Path, entry: str) -> None:
    desc = json.loads((out / DESCRIPTOR).read_text())
    desc["files"]["mlp"]["train"][0] = entry
    (out / DESCRIPTOR).write_text(json.dumps(desc))


# --- export -----------------------------------------------------------------------------------------------
def test_export_layout_and_card(exported):
    writer, _, out, summary = exported
    desc = json.loads((out / DESCRIPTOR).read_text())
    assert summary["checkpoints"] == 60 and summary["configs"] == ["mlp"]
    assert sum(desc["rows"]["mlp"].values()) == 60
    header, body = _card(out)
    assert header["license"] == "cc0-1.0"
    assert {"weight-space-learning", "model-zoo"} <= set(header["tags"])
    assert header["size_categories"] == ["n<1K"]
    config = header["configs"][0]
    assert config["config_name"] == "mlp" and config["default"] is True
    assert {d["split"] for d in config["data_files"]} == {"train", "val", "test"}
    assert "## Layout of `mlp`" in body and "| fc1.weight | (6, 64) | 0 | weight |" in body
    assert "load_dataset(" in body and 'ZooDataset("hf://REPO_ID"' in body
    # splits are by model, and each file holds rows sorted by unit
    models = {}
    for split, files in desc["files"]["mlp"].items():
        for f in files:
            t = pq.read_table(out / f)
            assert t.column("unit").to_pylist() == sorted(t.column("unit").to_pylist())
            for m in t.column("model_id").to_pylist():
                assert models.setdefault(m, split) == split
    assert len(models) == 20


def test_card_names_only_the_varied_columns_and_no_empty_citation(exported):
    writer, _, out, _ = exported
    _, body = _card(out)
    varied = [line for line in body.splitlines() if line.startswith("| varied |")]
    assert varied == ["| varied | activation, lr, seed |"]
    # the same function as zoo report's (which leaves out the seed: it only names a model)
    from zoo.report import varied_hparams
    assert sorted([*varied_hparams(writer, writer.metadata)[0], "seed"]) == ["activation", "lr", "seed"]
    assert "## Citation" not in body and "pip install weightzoo" not in body
    assert 'pip install -e ".[hf]"' in body and "from its repository" in body


def test_card_cites_the_zoo_it_reproduces(tmp_path):
    manifest = tiny_manifest(zoo__citation="Someone et al. 2020, A zoo")
    writer = zoo.create(tmp_path / "cited.zoo", manifest, group_size=3)
    fill_units(writer, writer.plan.units)
    export_hf(writer.url, tmp_path / "out", repo_id="me/cited")
    _, body = _card(tmp_path / "out")
    assert "## Citation\n\nThis zoo reproduces:\n\n> Someone et al. 2020, A zoo\n" in body
    assert 'ZooDataset("hf://me/cited"' in body and "zoo import hf hf://me/cited my.zoo" in body


def test_export_into_an_occupied_folder_is_refused_before_any_work(filled, tmp_path, capsys, monkeypatch):
    writer, _ = filled
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(zoo.hf.export, "open_zoo", lambda *a, **kw: pytest.fail("the store was opened"))
    assert main(["export", "hf", writer.url, str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"zoo export: error: {out}: exists and is not an empty folder; choose a new output folder"]
    assert "checkpoint" not in captured.err and captured.out == ""  # no progress bar drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied", "tiny.zoo"]  # no temporary folder
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(zoo.ZooError, match=r"exists and is not an empty folder"):
        export_hf(writer.url, out / "notes.txt")


def test_load_dataset_offline_with_features(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    writer, written, out, _ = exported
    width = writer.layout("mlp").size
    cache = str(tmp_path / "hf-cache")  # never an earlier run's Arrow cache of a same-named export
    ds = datasets.load_dataset(str(out), split="train", cache_dir=cache)
    feature = ds.features["weights"]
    assert getattr(feature, "length", None) == width
    inner = getattr(feature, "feature", None)
    assert getattr(inner, "dtype", None) == "float32"
    assert ds.features["test_acc"].dtype == "float64" and ds.features["model_id"].dtype == "int64"
    assert ds.features["status"].dtype == "string"
    t = ds.with_format("torch")
    row = t[0]
    assert isinstance(row["weights"], torch.Tensor) and row["weights"].dtype == torch.float32
    z = zoo.open(writer.url)
    arch, r = z.locate(int(row["model_id"]), int(row["epoch"]))
    assert torch.equal(row["weights"], torch.from_numpy(z.read_rows(arch, [r])[0]))
    total = sum(len(datasets.load_dataset(str(out), "mlp", split=s, cache_dir=cache)) for s in ("train", "val", "test"))
    assert total == 60


def test_export_shards_by_size(filled, tmp_path):
    writer, _ = filled
    width = writer.layout("mlp").size
    summary = export_hf(writer.url, tmp_path / "small", shard_bytes=10 * (4 * width + 512),
                        row_group_bytes=3 * (4 * width + 512))
    desc = json.loads((tmp_path / "small" / DESCRIPTOR).read_text())
    for split, files in desc["files"]["mlp"].items():
        n = desc["rows"]["mlp"][split]
        assert len(files) == -(-n // 10)
        assert files[0].endswith(f"-00000-of-{len(files):05d}.parquet")
        assert pq.ParquetFile(tmp_path / "small" / files[0]).metadata.row_group(0).num_rows == 3
    assert summary["files"] == sum(len(f) for f in desc["files"]["mlp"].values())
    import_hf(tmp_path / "small", tmp_path / "back.zoo")
    assert zoo.open(tmp_path / "back.zoo").metadata.equals(zoo.open(writer.url).metadata)


# --- import -------------------------------------------------------------------------------------------------
def test_export_import_round_trip_is_bit_exact(exported, tmp_path):
    writer, written, out, _ = exported
    result = import_hf(out, tmp_path / "back.zoo")
    assert result["units_written"] == len(writer.plan.units) and result["checkpoints"] == 60
    a, b = zoo.open(writer.url), zoo.open(tmp_path / "back.zoo")
    assert a.metadata.equals(b.metadata)
    rows = np.arange(a.weights("mlp").shape[0])
    assert np.array_equal(a.read_rows("mlp", rows).view(np.uint32), b.read_rows("mlp", rows).view(np.uint32))
    assert a.attrs["manifest"] == b.attrs["manifest"] and a.attrs["group_size"] == b.attrs["group_size"]
    assert zoo.verify(b).ok
    again = import_hf(out, tmp_path / "back.zoo")
    assert again["units_written"] == 0 and again["units_skipped"] == len(writer.plan.units)


def test_import_detects_damage_and_bad_sources(exported, tmp_path, monkeypatch):
    writer, _, out, _ = exported
    desc = json.loads((out / DESCRIPTOR).read_text())
    f = out / desc["files"]["mlp"]["train"][0]
    t = pq.read_table(f)
    crc = t.column("crc32").to_pylist()
    crc[0] ^= 1
    t = t.set_column(t.column_names.index("crc32"), "crc32", pa.array(crc))
    pq.write_table(t, f)
    with pytest.raises(zoo.ZooError, match=r"checksum mismatch for model \d+ at epoch \d+ .*the export is damaged"):
        import_hf(out, tmp_path / "bad.zoo")
    with pytest.raises(zoo.ZooError, match=r"no weightzoo.json; not a weightzoo export"):
        import_hf(tmp_path, tmp_path / "x.zoo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(zoo.StoreNotFoundError, match=r"^not a source: no such file or folder"):
        import_hf("not a source", tmp_path / "y.zoo")
    with pytest.raises(zoo.ZooError, match=r"s3://bucket/x.zoo: a store URL; an export to import is a local folder"):
        import_hf("s3://bucket/x.zoo", tmp_path / "y.zoo")
    assert not (tmp_path / "x.zoo").exists() and not (tmp_path / "y.zoo").exists()


@pytest.mark.parametrize("entry, why", [("/etc/passwd", "no absolute path"), ("../outside.parquet", "no '..'"),
                                        ("data/mlp/../../../outside.parquet", "no '..'")])
def test_import_refuses_files_outside_the_export(exported, tmp_path, entry, why):
    _, _, out, _ = exported
    pq.write_table(pq.read_table(out / json.loads((out / DESCRIPTOR).read_text())["files"]["mlp"]["train"][0]),
                   tmp_path / "outside.parquet")  # a readable Parquet file the entry could reach
    _edit_descriptor(out, entry)
    message = (rf"weightzoo.json: files\['mlp'\]\['train'\] entry '{entry}': outside the export folder .*"
               rf"\(no absolute path, no '\.\.'\)")
    assert why in message.replace("\\", "")
    with pytest.raises(zoo.ZooError, match=message):
        import_hf(out, tmp_path / "new.zoo")
    assert not (tmp_path / "new.zoo").exists()  # refused before the store was created


def test_import_refuses_a_symlink_leading_out(exported, tmp_path):
    _, _, out, _ = exported
    desc = json.loads((out / DESCRIPTOR).read_text())
    first = out / desc["files"]["mlp"]["train"][0]
    shutil.copy(first, tmp_path / "elsewhere.parquet")
    first.unlink()
    first.symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(zoo.ZooError, match=r"entry 'data/mlp/train-00000-of-00001.parquet': a symlink leading out "
                                           r"of the export folder"):
        import_hf(out, tmp_path / "new.zoo")
    assert not (tmp_path / "new.zoo").exists()


def test_hub_cache_snapshots_may_link_into_their_blobs(exported, tmp_path, cache):
    """huggingface_hub's cache keeps a snapshot's files as symlinks into the repository's blobs/: those stay
    inside the repository's cache folder and are accepted; a link out of it is not."""
    writer, _, out, _ = exported
    repo = tmp_path / "hf-cache" / "datasets--me--tiny-zoo"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(out, snapshot)
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(p for p in snapshot.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.move(f, blob)
        f.symlink_to(os.path.relpath(blob, f.parent))
    z = open_source("hf://me/tiny-zoo", download=_fake_download(snapshot, []))
    assert z.metadata.equals(zoo.open(writer.url).metadata)
    first = snapshot / json.loads((snapshot / DESCRIPTOR).read_text())["files"]["mlp"]["train"][0]
    shutil.copy(first, tmp_path / "elsewhere.parquet")
    first.unlink()
    first.symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(zoo.ZooError, match=r"a symlink leading out of the export folder"):
        import_hf("hf://me/tiny-zoo", tmp_path / "new.zoo", download=_fake_download(snapshot, []))
    assert not (tmp_path / "new.zoo").exists()


def test_loaders_refuse_files_outside_the_export(exported, tmp_path, cache):
    _, _, out, _ = exported
    _edit_descriptor(out, "../../secret.parquet")
    asked = []
    with pytest.raises(zoo.ZooError, match=r"entry '\.\./\.\./secret.parquet': outside the export folder"):
        open_source("hf://me/tiny-zoo", download=_fake_download(out, asked))
    with pytest.raises(zoo.ZooError, match=r"entry '\.\./\.\./secret.parquet': outside the export folder"):
        ZooDataset(out)
    assert asked == [("me/tiny-zoo", "dataset", None)]
    assert not cache.exists() or not any(cache.rglob("zarr.json"))  # no store skeleton in the cache


# --- explicit Hub sources -------------------------------------------------------------------------------------
def test_hub_references_are_explicit():
    assert hub_ref("hf://me/zoo") == HubRef("me/zoo", None)
    assert hub_ref("hf://me/zoo@v1.0") == HubRef("me/zoo", "v1.0")
    assert hub_ref("hf://me/zoo@refs%2Fpr%2F1") == HubRef("me/zoo", "refs/pr/1")
    assert hub_ref("hf://me/zoo", revision="abc123") == HubRef("me/zoo", "abc123")
    assert hub_ref("me/zoo", hub=True, revision="v2") == HubRef("me/zoo", "v2")
    assert hub_ref("me/zoo") is None and hub_ref("exports/zoo") is None and hub_ref("s3://b/x.zoo") is None
    assert hub_ref("hf://datasets/me/repo/my.zoo") is None  # a store uploaded as files: fsspec reads it
    with pytest.raises(zoo.ZooError, match=r"hf://me/zoo/extra: not a Hub source; an exported dataset repository "
                                           r"is hf://user/name\[@revision\]"):
        hub_ref("hf://me/zoo/extra")
    with pytest.raises(zoo.ZooError, match=r"names revision 'v1', but revision='v2' was given"):
        hub_ref("hf://me/zoo@v1", revision="v2")
    with pytest.raises(zoo.ZooError, match=r"\./zoo: not a Hub source"):
        hub_ref("./zoo", hub=True)
    assert HubRef("me/zoo", "refs/pr/1").cache_name == "me--zoo@refs%2Fpr%2F1.zoo"
    assert HubRef("me/zoo").url == "hf://me/zoo" and HubRef("me/zoo", "v1").url == "hf://me/zoo@v1"


def test_a_missing_local_path_is_an_error_never_a_download(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **kw: calls.append((a, kw)) or "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(zoo.StoreNotFoundError, match=r"^exports/zoo: no such file or folder \(a store, or an export "
                                                     r"folder with weightzoo.json\); an exported dataset repository "
                                                     r"is hf://user/name"):
        ZooDataset("exports/zoo")
    assert main(["import", "hf", "me/zoo", "copy.zoo"]) == 2
    assert capsys.readouterr().err.startswith("zoo import: error: me/zoo: no such file or folder")
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_hub_sources_download_and_cache_by_id_and_revision(exported, tmp_path, cache):
    writer, _, out, _ = exported
    asked = []
    download = _fake_download(out, asked)
    z = open_source("hf://me/tiny-zoo", download=download)
    assert asked == [("me/tiny-zoo", "dataset", None)]
    assert z.metadata.equals(zoo.open(writer.url).metadata)
    assert Path(z.url) == cache / "hub" / "me--tiny-zoo.zoo"
    v1 = open_source("hf://me/tiny-zoo@v1", download=download)
    v2 = open_source("me/tiny-zoo", hub=True, revision="v2", download=download)
    assert asked[1:] == [("me/tiny-zoo", "dataset", "v1"), ("me/tiny-zoo", "dataset", "v2")]
    assert Path(v1.url).name == "me--tiny-zoo@v1.zoo" and Path(v2.url).name == "me--tiny-zoo@v2.zoo"
    names = sorted(p.name for p in (cache / "hub").iterdir())
    assert names == ["me--tiny-zoo.zoo", "me--tiny-zoo@v1.zoo", "me--tiny-zoo@v2.zoo"]
    assert not any(p.name.startswith(".") for p in cache.rglob("*"))  # nothing hidden from ls


def _fragments(store: Path) -> dict[str, int]:
    """The store's metadata fragments and when each was written: what an import touched."""
    return {p.name: p.stat().st_mtime_ns for p in (store / "metadata").iterdir()}


def test_a_cached_import_is_reused_only_when_complete(exported, tmp_path, cache):
    writer, _, out, _ = exported
    download = _fake_download(out, [])
    target = Path(open_source("hf://me/tiny-zoo", download=download).url)
    before = _fragments(target)
    assert len(before) == len(writer.plan.units)
    # complete: reused as it is, nothing written
    assert Path(open_source("hf://me/tiny-zoo", download=download).url) == target
    assert _fragments(target) == before
    # an interrupted import (one unit's metadata missing): resumed, exactly that unit written again
    missing = sorted(before)[0]
    (target / "metadata" / missing).unlink()
    z = open_source("hf://me/tiny-zoo", download=download)
    after = _fragments(target)
    assert after.keys() == before.keys() and {k for k in after if after[k] != before[k]} == {missing}
    assert z.metadata.equals(zoo.open(writer.url).metadata) and zoo.verify(z).ok
    # a damaged cache (a row whose checksum is not the export's): imported again from scratch
    damaged = target / "metadata" / sorted(before)[1]
    t = pq.read_table(damaged)
    crc = t.column("crc32").to_pylist()
    crc[0] ^= 1
    pq.write_table(t.set_column(t.column_names.index("crc32"), "crc32", pa.array(crc)), damaged)
    before = _fragments(target)
    z = open_source("hf://me/tiny-zoo", download=download)
    after = _fragments(target)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    assert z.metadata.equals(zoo.open(writer.url).metadata) and zoo.verify(z).ok


def test_a_moved_revision_is_imported_again(exported, tmp_path, cache):
    writer, _, out, _ = exported
    open_source("hf://me/tiny-zoo", download=_fake_download(out, []))
    other = zoo.create(tmp_path / "other.zoo", tiny_manifest(zoo__name="other"), group_size=3)
    fill_units(other, other.plan.units, seed=7)
    export_hf(other.url, tmp_path / "other-export")
    z = open_source("hf://me/tiny-zoo", download=_fake_download(tmp_path / "other-export", []))
    assert Path(z.url) == cache / "hub" / "me--tiny-zoo.zoo"
    assert z.manifest.name == "other" and z.metadata.equals(zoo.open(other.url).metadata)


def test_store_urls_and_export_folders(exported, tmp_path, cache, monkeypatch):
    writer, _, out, _ = exported
    # an export folder works where a store does (imported once, keyed by its absolute path)
    ds = ZooDataset(out, view="flat", split="all")
    assert len(ds) == 60
    assert Path(ds.zoo.url).parent == cache / "exports" and Path(ds.zoo.url).name.startswith("export-")
    # the zoo keeps the export's split by model (seed 1 there, not the loader's default seed 0)
    desc = json.loads((out / DESCRIPTOR).read_text())
    train = ZooDataset(out, split="train")
    assert set(train.model_ids.tolist()) == set(desc["splits"]["train"])
    assert set(ZooDataset(writer.url, split="train").model_ids.tolist()) != set(desc["splits"]["train"])
    # hub=True: a bare user/name is a Hub id (the network call, snapshot_download, answers from the export)
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_download(out, asked))
    hubbed = ZooDataset("me/tiny-zoo", hub=True, revision="v1", view="flat")
    assert asked == [("me/tiny-zoo", "dataset", "v1")] and Path(hubbed.zoo.url).name == "me--tiny-zoo@v1.zoo"
    assert torch.equal(hubbed[0]["weights"], ds[0]["weights"])
    # hf://datasets/... is a store URL: fsspec's HfFileSystem reads it in place, nothing is imported
    opened = []
    monkeypatch.setattr(zoo.hf.cache, "open_zoo", lambda url, **kw: opened.append(url) or writer)
    assert open_source("hf://datasets/me/repo/my.zoo") is writer
    assert opened == ["hf://datasets/me/repo/my.zoo"]
    with pytest.raises(zoo.ZooError, match=r"revision='v1' applies to Hub sources"):
        open_source(writer.url, revision="v1")


def test_push_checks_then_stops_at_the_upload_call(filled):
    writer, _ = filled
    calls = []

    class FakeApi:
        def whoami(self, token):
            calls.append(("whoami", token))
            return {"name": "me"}

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kw):
            folder = Path(kw["folder_path"])
            calls.append(("upload_folder", kw["repo_id"], sorted(p.name for p in folder.iterdir())))
            card = (folder / "README.md").read_text()
            assert card.startswith("---\nlicense: cc0-1.0") and 'ZooDataset("hf://me/tiny-zoo"' in card

    url = push(writer.url, "me/tiny-zoo", token="hf_test", api=FakeApi())
    assert url == "https://huggingface.co/datasets/me/tiny-zoo"
    assert calls[0] == ("whoami", "hf_test")
    assert calls[1][:2] == ("create_repo", "me/tiny-zoo") and calls[1][2]["repo_type"] == "dataset"
    assert calls[2] == ("upload_folder", "me/tiny-zoo", ["README.md", "data", "weightzoo.json"])


def _zoo_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``zoo ARGS`` in a fresh process with a clean Hugging Face environment and its own temporary folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    clean.update(HF_HOME=str(tmp_path / "hf-home"), TMPDIR=str(tmp_path / "tmp"), PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=REPO, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_push_without_a_token_fails_in_one_line_before_exporting(filled, tmp_path):
    pytest.importorskip("huggingface_hub")
    writer, _ = filled
    result = _zoo_cli(["push", writer.url, "me/zoo"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "zoo push: error: no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was exported"]
    assert list((tmp_path / "tmp").iterdir()) == []  # no export folder was made


def test_push_to_an_unreachable_hub_fails_in_one_line_before_exporting(filled, tmp_path):
    pytest.importorskip("huggingface_hub")
    writer, _ = filled
    result = _zoo_cli(["push", writer.url, "me/zoo"], tmp_path, HF_TOKEN="hf_not_a_real_token",
                      HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo push: error: the Hub at http://127.0.0.1:9 is unreachable (")
    assert lines[0].endswith("): check the network, or HF_ENDPOINT; nothing was exported")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cli_export_import_push(filled, tmp_path, capsys, monkeypatch):
    writer, _ = filled
    assert main(["export", "hf", writer.url, str(tmp_path / "out"), "--fractions", "0.5,0.25,0.25", "--seed", "2",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoints"] == 60
    desc = json.loads((tmp_path / "out" / DESCRIPTOR).read_text())
    assert desc["split_fractions"] == {"train": 0.5, "val": 0.25, "test": 0.25} and desc["split_seed"] == 2
    assert len(desc["splits"]["train"]) == 10
    assert main(["import", "hf", str(tmp_path / "out"), str(tmp_path / "back.zoo"), "--quiet"]) == 0
    assert zoo.open(tmp_path / "back.zoo").metadata.equals(zoo.open(writer.url).metadata)
    assert main(["import", "hf", str(tmp_path / "out"), str(tmp_path / "back.zoo")]) == 0
    out = capsys.readouterr().out
    assert "imported 20 models, 60 checkpoints" in out and f"skipped {len(writer.plan.units)} already committed" in out
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_download(tmp_path / "out", asked))
    assert main(["import", "hf", "me/zoo", str(tmp_path / "hub.zoo"), "--hub", "--revision", "v3", "--quiet"]) == 0
    assert main(["import", "hf", "hf://me/zoo@v4", str(tmp_path / "hub4.zoo"), "--quiet"]) == 0
    assert asked == [("me/zoo", "dataset", "v3"), ("me/zoo", "dataset", "v4")]
    assert zoo.open(tmp_path / "hub4.zoo").metadata.equals(zoo.open(writer.url).metadata)
    assert main(["export", "hf", writer.url, str(tmp_path / "x"), "--fractions", "0.5,0.5"]) == 2
    assert "--fractions '0.5,0.5': expected three fractions (train,val,test)" in capsys.readouterr().err
    pushed = []
    monkeypatch.setattr(zoo.hf, "push", lambda store, repo, **kw: pushed.append((store, repo, kw)) or "URL")
    assert main(["push", writer.url, "me/zoo", "--private"]) == 0
    assert pushed[0][:2] == (writer.url, "me/zoo") and pushed[0][2]["private"] is True
