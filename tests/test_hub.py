"""Hugging Face export / import / push: datasets.load_dataset reads the export offline with the right features,
export -> import is bit-exact (metadata included), the push stops at the upload call, loaders take Hub ids."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import zoo
from loaders import ZooDataset
from zoo.cli import main
from zoo.hub import DESCRIPTOR, export_hf, import_hf, open_source, push


@pytest.fixture
def exported(filled, tmp_path):
    writer, written = filled
    out = tmp_path / "export"
    summary = export_hf(writer.url, out, seed=1)
    return writer, written, out, summary


def _card(out) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


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
    assert "load_dataset(" in body and "ZooDataset(" in body and "## Citation" in body
    # splits are by model, and each file holds rows sorted by unit
    models = {}
    for split, files in desc["files"]["mlp"].items():
        for f in files:
            t = pq.read_table(out / f)
            assert t.column("unit").to_pylist() == sorted(t.column("unit").to_pylist())
            for m in t.column("model_id").to_pylist():
                assert models.setdefault(m, split) == split
    assert len(models) == 20


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


def test_import_detects_damage_and_bad_sources(exported, tmp_path):
    writer, _, out, _ = exported
    desc = json.loads((out / DESCRIPTOR).read_text())
    f = out / desc["files"]["mlp"]["train"][0]
    t = pq.read_table(f)
    crc = t.column("crc32").to_pylist()
    crc[0] ^= 1
    t = t.set_column(t.column_names.index("crc32"), "crc32", __import__("pyarrow").array(crc))
    pq.write_table(t, f)
    with pytest.raises(zoo.ZooError, match=r"checksum mismatch for model \d+ at epoch \d+ .*the export is damaged"):
        import_hf(out, tmp_path / "bad.zoo")
    with pytest.raises(zoo.ZooError, match=r"no weightzoo.json; not a weightzoo export"):
        import_hf(tmp_path, tmp_path / "x.zoo")
    with pytest.raises(zoo.ZooError, match=r"neither an export folder nor a Hub dataset id"):
        import_hf("not a source", tmp_path / "y.zoo")
    with pytest.raises(zoo.ZooError, match=r"exists and is not empty"):
        export_hf(writer.url, out)


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


def test_push_stops_at_the_upload_call(filled):
    writer, _ = filled
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kw):
            from pathlib import Path
            folder = Path(kw["folder_path"])
            calls.append(("upload_folder", kw["repo_id"], sorted(p.name for p in folder.iterdir())))
            assert (folder / "README.md").read_text().startswith("---\nlicense: cc0-1.0")

    url = push(writer.url, "me/tiny-zoo", api=FakeApi())
    assert url == "https://huggingface.co/datasets/me/tiny-zoo"
    assert calls[0][:2] == ("create_repo", "me/tiny-zoo") and calls[0][2]["repo_type"] == "dataset"
    assert calls[1] == ("upload_folder", "me/tiny-zoo", ["README.md", "data", "weightzoo.json"])


def test_loaders_take_a_hub_id(exported, tmp_path, monkeypatch):
    writer, _, out, _ = exported
    monkeypatch.setenv("WEIGHTZOO_CACHE", str(tmp_path / "cache"))
    asked = []

    def fake_download(repo_id, repo_type, revision):
        asked.append((repo_id, repo_type))
        return str(out)

    z = open_source("me/tiny-zoo", download=fake_download)
    assert asked == [("me/tiny-zoo", "dataset")]
    assert z.metadata.equals(zoo.open(writer.url).metadata)
    assert str(z.url).startswith(str(tmp_path / "cache" / "hub" / "me--tiny-zoo-"))
    import zoo.hub as hub
    monkeypatch.setattr(hub, "resolve_source", lambda src, **kw: out)
    ds = ZooDataset("me/tiny-zoo", view="flat", split="all")
    assert len(ds) == 60
    # the zoo keeps the export's split by model (seed 1 there, not the loader's default seed 0)
    desc = json.loads((out / DESCRIPTOR).read_text())
    train = ZooDataset("me/tiny-zoo", split="train")
    assert set(train.model_ids.tolist()) == set(desc["splits"]["train"])
    assert set(ZooDataset(writer.url, split="train").model_ids.tolist()) != set(desc["splits"]["train"])
    ds2 = ZooDataset(out, view="flat")  # an export folder works too
    assert torch.equal(ds2[0]["weights"], ds[0]["weights"])
    # a complete cached import is reused without scanning the export again
    monkeypatch.setattr(hub, "import_hf", lambda *a, **kw: pytest.fail("imported again"))
    assert ZooDataset("me/tiny-zoo").zoo.url == ds.zoo.url


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
    assert main(["export", "hf", writer.url, str(tmp_path / "x"), "--fractions", "0.5,0.5"]) == 2
    assert "--fractions '0.5,0.5': expected three fractions (train,val,test)" in capsys.readouterr().err
    import zoo.hub as hub
    pushed = []
    monkeypatch.setattr(hub, "push", lambda store, repo, **kw: pushed.append((store, repo, kw)) or "URL")
    assert main(["push", writer.url, "me/zoo", "--private"]) == 0
    assert pushed[0][:2] == (writer.url, "me/zoo") and pushed[0][2]["private"] is True
