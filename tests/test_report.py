"""zoo report: every section, counts equal to the store's metadata, valid PNG figures, diverged models, the CLI."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import fill_units, tiny_manifest

import zoo
from builders import build
from builders.data import load_images
from zoo.cli import main
from zoo.errors import ZooError
from zoo.manifest import Manifest
from zoo.report import ReportOptions, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BUILT = """
[zoo]
name = "built"
[dataset]
name = "digits"
val_size = 200
[architecture]
name = "mlp"
hidden = [16]
[training]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = 64
epochs = 2
[population]
seeds = [1, 2]
[population.grid]
"architecture.activation" = ["relu", "tanh"]
"training.lr" = [0.05, 1e30]
[checkpoints]
epochs = [0, 1, 2]
"""
BUILT_SECTIONS = ["counts", "sampling", "accuracy", "hyperparameters", "curves", "diverged", "weights-mlp"]


# --- reading the page ------------------------------------------------------------------------------
def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def counts(page: str) -> dict[str, int]:
    """data-key -> value of the counts table; the shown text must be the same number."""
    rows = re.findall(r'<tr data-key="([^"]+)"><th>[^<]*</th><td class="num" data-value="(\d+)">([^<]*)</td>', page)
    for _, value, text in rows:
        assert text == f"{int(value):,}"
    return {k: int(v) for k, v, _ in rows}


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def section(page: str, key: str) -> str:
    return re.search(rf'<section id="{re.escape(key)}">(.*?)</section>', page, re.S).group(1)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 500 and height >= 350, (path, width, height)
    assert len(data) > 15_000, (path, len(data))


def expected_counts(z: zoo.Zoo) -> dict[str, int]:
    m = z.metadata.to_pylist()
    status = z.status()
    return {"models": len({r["model_id"] for r in m}), "checkpoints": len(m),
            "diverged_models": len({r["model_id"] for r in m if r["status"] == "diverged"}),
            "missing_units": status["units_total"] - status["units_done"], "store_bytes": z.nbytes(),
            **{f"arch:{a}": sum(r["arch"] == a for r in m) for a in z.arch_ids}}


# --- a small zoo built for real (two of its four configurations diverge) ---------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    (root / "built.toml").write_text(BUILT)
    result = build(root / "built.toml", root / "built.zoo", device="cpu", group_size=4, quiet=True)
    report = write_report(root / "built.zoo", root / "report")
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    return zoo.open(root / "built.zoo"), result, report, page, root / "report"


def test_built_report_has_every_section(built):
    _, _, report, page, _ = built
    assert sections(page) == BUILT_SECTIONS
    assert report["varied"] == ["activation", "lr"]
    for key in ("accuracy", "hyperparameters", "curves"):
        assert len(images(section(page, key))) == 1, key
    weights = section(page, "weights-mlp")
    assert images(weights) == ["fig-weights-mlp.png", "fig-pca-mlp.png"]
    assert "Per-tensor statistics" in weights and "PCA" in weights
    assert "No checkpoint" not in page


def test_counts_on_the_page_equal_the_store(built):
    z, _, report, page, _ = built
    shown = counts(page)
    assert shown == expected_counts(z)
    assert shown["checkpoints"] == 8 * 3 and shown["models"] == 8 and shown["missing_units"] == 0
    assert report["counts"]["checkpoints"] == z.metadata.num_rows
    assert report["counts"]["diverged_checkpoints"] == sum(s == "diverged" for s in
                                                           z.metadata.column("status").to_pylist())


def test_every_referenced_image_is_a_png_beside_the_page(built):
    _, _, report, page, out = built
    srcs = images(page)
    assert sorted(srcs) == sorted(report["figures"]) and len(srcs) == 5
    for src in srcs:
        assert "/" not in src and ":" not in src  # relative, beside index.html
        assert_png(out / src)
    # opens offline: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page and "<link" not in page


def test_built_zoo_shows_its_diverged_models(built):
    z, result, _, page, _ = built
    diverged = sorted({r["model_id"] for r in z.metadata.to_pylist() if r["status"] == "diverged"})
    assert diverged and diverged == sorted(result.diverged)
    part = section(page, "diverged")
    assert f'data-diverged="{len(diverged)}"' in part
    assert [int(m) for m in re.findall(r'<tr data-model="(\d+)">', part)] == diverged
    for mid in diverged:  # every diverged model has the exploding learning rate
        row = re.search(rf'<tr data-model="{mid}">(.*?)</tr>', part).group(1)
        assert "<td>1e+30</td>" in row
    assert counts(page)["diverged_models"] == len(diverged)


# --- random-filled stores: several architectures, partial builds, diverged records ---------------------
def fill_with_diverged(writer, units, diverged: set[int], seed: int = 0) -> None:
    """Commit random rows; the models in ``diverged`` get status 'diverged' and NaN weights after epoch 0."""
    rng = np.random.default_rng(seed)
    for u in units:
        rows = rng.standard_normal((len(u.model_ids), writer.layout(u.arch_id).size)).astype(np.float32)
        records = []
        for i, mid in enumerate(u.model_ids):
            bad = mid in diverged and u.epoch > 0
            if bad:
                rows[i] = np.nan
            records.append({"test_acc": float("nan") if bad else float(rng.uniform(0.1, 1.0)),
                            "train_acc": float("nan") if bad else float(rng.uniform(0.1, 1.0)),
                            "status": "diverged" if bad else "ok"})
        writer.write_unit(u, rows, records)


def test_several_architectures_partial_store_with_diverged_records(tmp_path):
    manifest = tiny_manifest(population__grid={"architecture.hidden": [[6, 5], [4]], "training.lr": [1e-3, 1e-2]})
    writer = zoo.create(tmp_path / "multi.zoo", manifest, group_size=4)
    units = writer.plan.units
    done = [u for u in units if u.group != 1]  # leave one group's units uncommitted
    committed = sorted({m for u in done for m in u.model_ids})
    diverged = [committed[0], committed[5], committed[-1]]
    fill_with_diverged(writer, done, diverged=set(diverged))
    result = write_report(tmp_path / "multi.zoo", tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    z = zoo.open(tmp_path / "multi.zoo")
    assert z.arch_ids == ["mlp-0", "mlp-1"]
    assert sections(page) == BUILT_SECTIONS[:-1] + ["weights-mlp-0", "weights-mlp-1"]
    assert set(result["varied"]) == {"hidden", "lr"}
    shown = counts(page)
    assert shown == expected_counts(z)
    assert shown["missing_units"] == len(units) - len(done) == 3
    assert shown["checkpoints"] == sum(len(u.model_ids) for u in done) < z.plan.checkpoints
    assert shown["diverged_models"] == 3
    assert [int(m) for m in re.findall(r'<tr data-model="(\d+)">', page)] == diverged
    for arch in ("mlp-0", "mlp-1"):
        assert images(section(page, f"weights-{arch}")) == [f"fig-weights-{arch}.png", f"fig-pca-{arch}.png"]
    for src in images(page):
        assert_png(tmp_path / "out" / src)
    # diverged rows hold NaN weights: the weight figures read only models that never diverged
    assert "models that never diverged" in page


def test_cli_report_states_and_respects_sample_sizes(tmp_path, capsys, manifest):
    writer = zoo.create(tmp_path / "s.zoo", manifest, group_size=3)
    fill_units(writer, writer.plan.units)
    out = tmp_path / "out"
    assert main(["report", writer.url, "-o", str(out), "--weight-models", "2", "--pca-points", "4",
                 "--curve-models", "3", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["index"] == str(out / "index.html") and result["counts"]["checkpoints"] == 60
    page = (out / "index.html").read_text(encoding="utf-8")
    n_models = len(manifest.models)
    assert result["samples"]["mlp"] == {"weight_stats": {"models": 2, "of": n_models, "checkpoints": 2 * 3},
                                        "pca": {"points": 4, "of": n_models}}
    assert f"mlp: weight statistics read 2 of {n_models} models (6 checkpoints); PCA read 4 of {n_models} final " \
           "checkpoints." in page
    assert "training curves draw at most 3 models" in section(page, "sampling")
    assert "3 of 20 models drawn" in section(page, "curves")
    # fill_units records no train accuracy: the page says why the gap is missing instead of plotting nothing
    assert "records no train accuracy, so no generalization gap" in section(page, "accuracy")
    assert 'data-diverged="0"' in section(page, "diverged")


def test_empty_store_still_reports_counts(tmp_path, manifest):
    writer = zoo.create(tmp_path / "e.zoo", manifest, group_size=3)
    result = write_report(tmp_path / "e.zoo", tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert result["figures"] == [] and images(page) == []
    shown = counts(page)
    assert shown["checkpoints"] == 0 and shown["missing_units"] == len(writer.plan.units)
    assert "No checkpoint is committed yet" in section(page, "accuracy")
    assert "No checkpoint of this architecture is committed yet" in section(page, "weights-mlp")


def test_bad_options_name_the_option():
    with pytest.raises(ZooError, match=r"report option 'pca_points': got 0; expected an integer >= 1"):
        ReportOptions(pca_points=0)


# --- an inr zoo (one SIREN per digit): PSNR where a classifier zoo shows accuracy, originals beside fields ---------
INR = {"zoo": {"name": "inr-report", "kind": "inr"}, "dataset": {"name": "digits"},
       "images": {"split": "test", "start": 3, "count": 4}, "architecture": {"name": "siren", "hidden": [16, 16]},
       "training": {"lr": 1e-3, "epochs": 30, "batch_size": 64}, "population": {"seeds": [0, 1]},
       "checkpoints": {"epochs": [0, 15, 30]}}
INR_SECTIONS = ["counts", "sampling", "psnr", "reconstructions", "hyperparameters", "curves", "diverged",
                "weights-siren"]


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("inr") / "inr.zoo"
    build(Manifest.from_dict(INR, source="inr.toml"), path, device="cpu", quiet=True)
    return path


def test_inr_report_shows_psnr_and_originals_beside_reconstructions(inr_zoo, tmp_path):
    report = write_report(inr_zoo, tmp_path / "out", ReportOptions(grid_models=6), images=load_images)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert sections(page) == INR_SECTIONS
    assert "accuracy" not in page.lower()  # every classifier figure is replaced by its PSNR equivalent
    assert report["figures"] == ["fig-psnr.png", "fig-reconstructions.png", "fig-hyperparameters.png",
                                 "fig-curves.png", "fig-weights-siren.png", "fig-pca-siren.png"]
    assert sorted(images(page)) == sorted(report["figures"])
    for src in report["figures"]:
        assert_png(tmp_path / "out" / src)
    z = zoo.open(inr_zoo)
    assert counts(page) == expected_counts(z)
    final = [r for r in z.metadata.to_pylist() if r["epoch"] == 30]
    psnr = sorted(r["psnr"] for r in final)
    # the PSNR section: the histogram and a table of the fit columns at the last step
    part = section(page, "psnr")
    assert images(part) == ["fig-psnr.png"] and "2× grid" in part
    row = re.search(r'<tr data-metric="psnr">(.*?)</tr>', part).group(1)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells[0] == "8" and float(cells[1]) == pytest.approx(psnr[0], abs=0.01)
    assert float(cells[3]) == pytest.approx(float(np.median(psnr)), abs=0.01)
    assert float(cells[-1]) == pytest.approx(psnr[-1], abs=0.01)
    assert re.search(r'<tr data-metric="mse">', part) and re.search(r'<tr data-metric="psnr_2x">', part)
    # the grid: 6 of 8 fields at evenly spaced PSNR ranks, the worst first and the best last
    part = section(page, "reconstructions")
    assert images(part) == ["fig-reconstructions.png"] and "data-originals" not in part
    assert "PSNR" in part and "lowest" in part
    by_psnr = [r["model_id"] for r in sorted(final, key=lambda r: (r["psnr"], r["model_id"]))]
    assert [int(m) for m in re.findall(r'<tr data-model="(\d+)">', part)] == [by_psnr[i] for i in (0, 1, 3, 4, 6, 7)]
    assert report["samples"]["reconstructions"] == {"models": 6, "of": 8, "originals": True}
    assert "renders 6 of 8 healthy final checkpoints" in section(page, "sampling")
    # PSNR per hyperparameter (the image) and per class of the image; PSNR against the fitting step
    assert report["varied"] == ["image_index"]
    assert "the class of each field" in section(page, "hyperparameters")
    assert "PSNR at each checkpoint step" in section(page, "curves")
    assert "colour: final PSNR" in section(page, "weights-siren")


def test_inr_report_without_its_dataset_shows_reconstructions_only(inr_zoo, tmp_path):
    def missing(*args, **kwargs):
        raise ZooError("dataset 'digits': files not found or unreadable under /nowhere")

    report = write_report(inr_zoo, tmp_path / "out", images=missing)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert sections(page) == INR_SECTIONS
    part = section(page, "reconstructions")
    assert 'data-originals="0"' in part and "files not found or unreadable under /nowhere" in part
    assert "reconstructions only" in part and images(part) == ["fig-reconstructions.png"]
    assert_png(tmp_path / "out" / "fig-reconstructions.png")
    assert len(re.findall(r'<tr data-model="\d+">', part)) == 8  # every field, fewer than the default 12
    assert report["samples"]["reconstructions"] == {"models": 8, "of": 8, "originals": False}
    assert "the original images could not be loaded" in section(page, "sampling")


def test_inr_report_without_an_image_reader_says_so(inr_zoo, tmp_path):
    """zoo never imports builders: a caller that hands in no reader gets the reconstructions and the reason."""
    report = write_report(inr_zoo, tmp_path / "out")
    part = section((tmp_path / "out" / "index.html").read_text(encoding="utf-8"), "reconstructions")
    assert 'data-originals="0"' in part and "no image reader was given" in part and "reconstructions only" in part
    assert report["samples"]["reconstructions"] == {"models": 8, "of": 8, "originals": False}


def test_empty_inr_store_reports_its_sections(tmp_path):
    zoo.create(tmp_path / "e.zoo", Manifest.from_dict(INR, source="inr.toml"), group_size=8)
    result = write_report(tmp_path / "e.zoo", tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert sections(page) == INR_SECTIONS and result["figures"] == []
    for key in ("psnr", "reconstructions", "hyperparameters", "curves"):
        assert "No checkpoint is committed yet" in section(page, key)


# --- the command ---------------------------------------------------------------------------------------
def test_cli_report_line_exit_codes_and_errors(tmp_path, capsys, manifest):
    z = zoo.create(tmp_path / "e.zoo", manifest, group_size=3)  # empty: the command's plumbing, quickly
    out = tmp_path / "out"
    assert main(["report", z.url, "-o", str(out), "--weight-models", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out / 'index.html'}: 0 checkpoints of 0 models, 0 figures in ")
    assert (out / "index.html").exists()

    missing = tmp_path / "nowhere.zoo"
    assert main(["report", str(missing), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zoo report: error: {missing}: no weightzoo store here (FileNotFoundError)"
    assert not (tmp_path / "o2").exists()

    (tmp_path / "afile").write_text("x")
    assert main(["report", z.url, "-o", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"zoo report: error: {tmp_path / 'afile'}: exists and is not a folder; "
                                               "the report needs a folder for index.html and its figures")

    assert main(["report", z.url, "-o", str(out), "--pca-points", "0"]) == 2
    assert "report option 'pca_points': got 0" in capsys.readouterr().err
