"""``zoo import inr``: published INR sets (DWSNets, NFN) from fixture folders written here in their layouts.

The fixtures are ``torch.save`` files of plain state dicts with the published key names (DWSNets: ``seq.N.*``;
NFN: ``net.N.linear.*`` and an output ``net.N.*``), tiny widths ([4, 4]) and the published folder and file names.
Each test checks what matters: the stored weights equal the files' tensors, every image's split, index and class
land in the metadata, the siren's conventions are the set's, and an imported INR computes what the file's tensors
compute by hand. Evaluation (``--evaluate``) runs on scikit-learn's bundled digits, offline.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zoo
from builders.data import load_images
from builders.importers import import_inr
from builders.importers.inr import CONVENTIONS, GROUP_SIZE, InrSource
from loaders import ZooDataset
from zoo.architectures.modules import coordinate_grid
from zoo.cli import main
from zoo.errors import ManifestError, ZooError
from zoo.manifest import Manifest

HIDDEN = (4, 4)


def siren_tensors(seed: int, channels: int = 1, hidden=HIDDEN) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of each layer of a 2 -> hidden -> channels SIREN, small enough that sin stays informative."""
    g = torch.Generator().manual_seed(seed)
    sizes = [2, *hidden, channels]
    return [(torch.rand(o, i, generator=g) * 0.2 - 0.1, torch.rand(o, generator=g) * 0.2 - 0.1)
            for i, o in zip(sizes[:-1], sizes[1:])]


def dwsnets_dict(layers) -> dict[str, torch.Tensor]:
    out = {}
    for i, (w, b) in enumerate(layers):
        out[f"seq.{i}.weight"], out[f"seq.{i}.bias"] = w, b
    return out


def nfn_dict(layers) -> dict[str, torch.Tensor]:
    out = {}
    for i, (w, b) in enumerate(layers):
        prefix = f"net.{i}" if i == len(layers) - 1 else f"net.{i}.linear"
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = w, b
    return out


def forward(layers, coords: torch.Tensor, offset: float) -> torch.Tensor:
    """The published forward by hand: sin(30 (W x + b)) per sine layer, a linear output, plus the offset."""
    h = coords
    for w, b in layers[:-1]:
        h = torch.sin(30.0 * (h @ w.T + b))
    w, b = layers[-1]
    return h @ w.T + b + offset


# --- fixtures in the published layouts ------------------------------------------------------------------------
#: DWSNets' MNIST archive: (split folder word, class, index) of each INR folder.
DWS_MNIST = [("training", 5, 10), ("training", 0, 3), ("testing", 7, 0), ("training", 4, 7), ("testing", 2, 5)]


def write_dwsnets_mnist(root: Path) -> dict[tuple[str, int], tuple[Path, int, list]]:
    """mnist-inrs/mnist_png_<training|testing>_<label>_<idx>/checkpoints/model_final.pth; (split, index) ->
    (file, class, layers)."""
    written = {}
    for k, (word, label, index) in enumerate(DWS_MNIST):
        file = root / f"mnist_png_{word}_{label}_{index}" / "checkpoints" / "model_final.pth"
        file.parent.mkdir(parents=True)
        layers = siren_tensors(k)
        torch.save(dwsnets_dict(layers), file)
        written[({"training": "train", "testing": "test"}[word], index)] = (file, label, layers)
    (root / "mnist_splits.json").write_text("{}")  # other files beside the INRs are not INRs
    return written


def write_dwsnets_fmnist(root: Path) -> dict[tuple[str, int], tuple[Path, int, list]]:
    """fmnist_inrs/<train|test>/model_<idx>.pth, the class in the state dict ('label': an int or a tensor)."""
    written = {}
    for k, (split, index, label) in enumerate([("train", 4, 7), ("test", 2, 3), ("train", 1, 9)]):
        file = root / split / f"model_{index}.pth"
        file.parent.mkdir(parents=True, exist_ok=True)
        layers = siren_tensors(10 + k)
        sd: dict = dwsnets_dict(layers)
        sd["label"] = label if k != 1 else torch.tensor(label)
        torch.save(sd, file)
        written[(split, index)] = (file, label, layers)
    return written


def write_nfn(root: Path, images: list[tuple[int, int]], channels: int = 1, augmented: bool = True
              ) -> dict[int, tuple[Path, int, list]]:
    """siren_<name>_wts/randinit_smaller_<label>s/net<idx>.pth (idx over train and test together), plus one
    augmented copy (randinit_smaller_aug0_<label>s), which the import leaves out."""
    written = {}
    for k, (index, label) in enumerate(images):
        file = root / f"randinit_smaller_{label}s" / f"net{index}.pth"
        file.parent.mkdir(parents=True, exist_ok=True)
        layers = siren_tensors(20 + k, channels)
        torch.save(nfn_dict(layers), file)
        written[index] = (file, label, layers)
    if augmented:
        index, label = images[0]
        aug = root / f"randinit_smaller_aug0_{label}s" / f"net{index}.pth"
        aug.parent.mkdir(parents=True)
        torch.save(nfn_dict(siren_tensors(99, channels)), aug)
    return written


def assert_rows_are_the_files(z, by_model: list[list]) -> None:
    """Each model's stored tensors are its file's, exactly (after the key mapping)."""
    for model_id, layers in enumerate(by_model):
        sd = z.module(model_id, z.plan.epochs[0]).state_dict()
        for i, (w, b) in enumerate(layers):
            assert torch.equal(sd[f"net.{i}.weight"], w) and torch.equal(sd[f"net.{i}.bias"], b)


# --- DWSNets ------------------------------------------------------------------------------------------------------
def test_dwsnets_mnist_folders_import_exactly(tmp_path):
    written = write_dwsnets_mnist(tmp_path / "mnist-inrs")
    report = import_inr(tmp_path / "mnist-inrs", tmp_path / "dws.zoo", convention="dwsnets")
    assert (report.format, report.models, report.checkpoints, report.checkpoint_epochs) == ("inr", 5, 5, [1])
    assert report.zoo == "mnist-inr-dwsnets" and report.architectures == {"siren": 4 * 2 + 4 + 4 * 4 + 4 + 4 + 1}
    z = zoo.open(tmp_path / "dws.zoo")
    assert zoo.verify(tmp_path / "dws.zoo").ok
    order = sorted(written, key=lambda k: (k[0] != "train", k[1]))  # train, then test, each by index
    assert [(m.hparams["image_split"], m.hparams["image_index"]) for m in z.manifest.models] == order
    assert z.manifest.images["indices"] == {"train": [3, 7, 10], "test": [0, 5]}
    assert z.attrs["imported_from"]["models"] == [
        str(written[k][0].relative_to(tmp_path / "mnist-inrs")) for k in order]
    assert z.attrs["imported_from"]["convention"] == "dwsnets"
    rows = sorted(z.metadata.to_pylist(), key=lambda r: r["model_id"])
    for row, key in zip(rows, order):
        assert (row["image_split"], row["image_index"], row["label"]) == (*key, written[key][1])
        assert (row["epoch"], row["step"], row["mse"], row["psnr"], row["psnr_2x"]) == (1, None, None, None, None)
        assert (row["hidden"], row["w0"], row["first_w0"], row["offset"], row["init_scheme"], row["coords"],
                row["pixels"], row["dataset"], row["seed"], row["status"]) == (
            list(HIDDEN), 30.0, 30.0, 0.5, "dwsnets", "xy", "unit", "mnist", 0, "ok")
    assert_rows_are_the_files(z, [written[k][2] for k in order])

    # an imported INR is the published network: (column, row) coordinates, sine layers, linear output + 0.5
    coords = coordinate_grid(28, 28, "xy")
    for model_id, key in enumerate(order):
        with torch.no_grad():
            got = z.module(model_id, 1)(coords)
        expected = forward(written[key][2], coords, 0.5)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        image = z.render(model_id, 1)
        torch.testing.assert_close(image, expected.T.reshape(1, 28, 28).clamp(0, 1), rtol=0, atol=1e-6)
    flat = ZooDataset(tmp_path / "dws.zoo", view="flat")  # the loaders read it as any zoo
    assert len(flat) == 5


def test_dwsnets_fashion_mnist_files_carry_their_class(tmp_path):
    written = write_dwsnets_fmnist(tmp_path / "fmnist_inrs")
    report = import_inr(tmp_path / "fmnist_inrs", tmp_path / "f.zoo", convention="dwsnets", steps=1000)
    z = zoo.open(tmp_path / "f.zoo")
    assert report.zoo == "fashion-mnist-inr-dwsnets" and report.checkpoint_epochs == [1000]
    order = [("train", 1), ("train", 4), ("test", 2)]
    got = [(r["image_split"], r["image_index"], r["label"], r["step"], r["dataset"])
           for r in sorted(z.metadata.to_pylist(), key=lambda r: r["model_id"])]
    assert got == [(*k, written[k][1], 1000, "fashion-mnist") for k in order]
    assert_rows_are_the_files(z, [written[k][2] for k in order])


# --- NFN ------------------------------------------------------------------------------------------------------
def test_nfn_folders_import_exactly_and_leave_augmented_copies_out(tmp_path):
    root = tmp_path / "siren_mnist_wts"
    written = write_nfn(root, [(5, 3), (60002, 7), (59999, 1)])  # 60002: test image 2 (after 60,000 train)
    report = import_inr(root, tmp_path / "nfn.zoo", convention="nfn")
    z = zoo.open(tmp_path / "nfn.zoo")
    assert report.models == 3 and report.zoo == "mnist-inr-nfn"
    assert z.attrs["imported_from"]["augmented_left_out"] == 1
    assert "1 augmented copies (randinit_smaller_aug*) left out" in z.manifest.zoo["description"]
    rows = sorted(z.metadata.to_pylist(), key=lambda r: r["model_id"])
    assert [(r["image_split"], r["image_index"], r["label"]) for r in rows] == [
        ("train", 5, 3), ("train", 59999, 1), ("test", 2, 7)]
    assert {(r["offset"], r["init_scheme"], r["coords"], r["pixels"], r["w0"], r["first_w0"]) for r in rows} == {
        (0.0, "sitzmann", "ij", "signed", 30.0, 30.0)}
    by_model = [written[i][2] for i in (5, 59999, 60002)]
    assert_rows_are_the_files(z, by_model)
    coords = coordinate_grid(28, 28, "ij")
    for model_id, layers in enumerate(by_model):
        with torch.no_grad():
            torch.testing.assert_close(z.module(model_id, 1)(coords), forward(layers, coords, 0.0), rtol=0, atol=1e-6)


def test_nfn_evaluate_records_the_fit_as_a_build_does(tmp_path):
    """On the bundled digits (8x8, offline): mse and psnr on the pixel grid, psnr_2x on the 2x grid, by hand."""
    cfg = {"name": "digits"}
    x_train, y_train = load_images(cfg, "train", [0, 11])
    x_test, y_test = load_images(cfg, "test", [4])
    images = [(0, int(y_train[0])), (11, int(y_train[1])), (1438 + 4, int(y_test[0]))]
    root = tmp_path / "siren_digits_wts"
    written = write_nfn(root, images, augmented=False)
    import_inr(root, tmp_path / "d.zoo", convention="nfn", evaluate=True)
    z = zoo.open(tmp_path / "d.zoo")
    rows = sorted(z.metadata.to_pylist(), key=lambda r: r["model_id"])
    truth = [x_train[0], x_train[1], x_test[0]]
    for row, (index, label), image in zip(rows, images, truth):
        layers = written[index][2]
        assert row["label"] == label and row["dataset"] == "digits"
        fitted = (forward(layers, coordinate_grid(8, 8, "ij"), 0.0).T.reshape(1, 8, 8) + 1) / 2  # signed -> [0, 1]
        mse = float((fitted - image).square().mean())
        fine = (forward(layers, coordinate_grid(16, 16, "ij"), 0.0).T.reshape(1, 16, 16) + 1) / 2
        reference = F.interpolate(image[None], size=(16, 16), mode="bilinear", align_corners=True)[0]
        mse_2x = float((fine - reference).square().mean())
        assert math.isclose(row["mse"], mse, rel_tol=1e-5)
        assert math.isclose(row["psnr"], -10 * math.log10(mse), rel_tol=1e-5)
        assert math.isclose(row["psnr_2x"], -10 * math.log10(mse_2x), rel_tol=1e-5)

    # a class that is not the image's: the index convention is wrong somewhere
    wrong = (int(y_train[0]) + 1) % 10
    bad = tmp_path / "bad" / "siren_digits_wts"
    write_nfn(bad, [(0, wrong)], augmented=False)
    with pytest.raises(ZooError, match=rf"net0.pth: class {wrong}, but image 0 of the train split of 'digits' is a "
                                       rf"{int(y_train[0])}"):
        import_inr(bad, tmp_path / "bad.zoo", convention="nfn", evaluate=True)
    assert not (tmp_path / "bad.zoo").exists()


def test_evaluate_never_downloads(tmp_path):
    write_dwsnets_mnist(tmp_path / "mnist-inrs")
    with pytest.raises(ZooError, match=r"--evaluate: dataset 'mnist': files not found or unreadable under .*; "
                                       r"--evaluate never downloads"):
        import_inr(tmp_path / "mnist-inrs", tmp_path / "e.zoo", convention="dwsnets", evaluate=True,
                   data_root=str(tmp_path / "no-data"))
    assert not (tmp_path / "e.zoo").exists() and not (tmp_path / "no-data").exists()


# --- resuming, the command line ---------------------------------------------------------------------------------
def test_a_rerun_resumes_and_a_failure_leaves_no_store(tmp_path):
    root = tmp_path / "mnist-inrs"
    written = write_dwsnets_mnist(root)
    file = written[("test", 5)][0]  # the last model: its unit is written after the others
    good = file.read_bytes()
    sd = dwsnets_dict(written[("test", 5)][2])
    del sd["seq.1.bias"]
    torch.save(sd, file)
    with pytest.raises(ZooError, match=rf"{file}: layer 1 has no bias \(seq.N.weight and seq.N.bias\)"):
        import_inr(root, tmp_path / "r.zoo", convention="dwsnets", group_size=2)
    assert not (tmp_path / "r.zoo").exists()  # the store the failed import created is gone
    file.write_bytes(good)
    first = import_inr(root, tmp_path / "r.zoo", convention="dwsnets", group_size=2)
    again = import_inr(root, tmp_path / "r.zoo", convention="dwsnets", group_size=2)
    assert (first.units_written, again.units_written, again.units_skipped) == (3, 0, 3)
    assert GROUP_SIZE == 1024 and zoo.open(tmp_path / "r.zoo").attrs["group_size"] == 2


def test_the_command_line_imports_and_lists_the_conventions(tmp_path, capsys):
    write_dwsnets_mnist(tmp_path / "mnist-inrs")
    assert main(["import", "inr", str(tmp_path / "mnist-inrs"), str(tmp_path / "c.zoo"), "--convention", "dwsnets",
                 "--name", "mnist-five", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["models"], out["zoo"], out["checkpoint_epochs"]) == ("inr", 5, "mnist-five", [1])
    assert main(["import", "inr", str(tmp_path / "mnist-inrs"), str(tmp_path / "c.zoo"), "--convention", "dwsnets",
                 "--name", "mnist-five", "--quiet"]) == 0
    assert "wrote 0 unit(s), skipped 1 already committed" in capsys.readouterr().out
    assert main(["import", "inr", str(tmp_path / "mnist-inrs"), str(tmp_path / "d.zoo"), "--convention",
                 "siren"]) == 2
    assert "unknown INR convention: got 'siren'; allowed: dwsnets, nfn" in capsys.readouterr().err
    assert not (tmp_path / "d.zoo").exists() and CONVENTIONS.names() == ["dwsnets", "nfn"]


# --- errors name the file and what is wrong --------------------------------------------------------------------
def _rewrite(written, key, edit) -> Path:
    file, _, layers = written[key]
    sd = dwsnets_dict(layers)
    edit(sd)
    torch.save(sd, file)
    return file


@pytest.mark.parametrize("damage,message", [
    (lambda r, w: _rewrite(w, ("train", 3), lambda sd: sd.pop("seq.2.weight")),
     r"{file}: layer 2 has no weight \(seq.N.weight and seq.N.bias\)"),
    (lambda r, w: _rewrite(w, ("train", 7), lambda sd: sd.update({"seq.0.scale": torch.ones(4)})),
     r"{file}: unexpected key 'seq.0.scale'; DWSNets \(Navon et al. 2023\) INRs hold seq.N.weight and seq.N.bias"),
    (lambda r, w: _rewrite(w, ("test", 0), lambda sd: sd.update({"seq.0.weight": torch.zeros(5, 2)})),
     r"{file}: tensor 'seq.0.weight' has shape \(5, 2\); siren on 1x28x28 inputs expects \(4, 2\) for "
     r"'net.0.weight'"),
    (lambda r, w: _rewrite(w, ("train", 10), lambda sd: sd.update({"label": 3})),
     r"{file}: 'label' entry 3, but the path says class 5"),
    (lambda r, w: ((r / "stray.pth").write_bytes(b""), r / "stray.pth")[1],
     r"{file}: file name not in the dwsnets layout; its INRs are <dataset>_png_<training\|testing>_<label>_<index>/"),
    (lambda r, w: w[("train", 3)][0].unlink() or w[("train", 3)][0],
     r"{file}: missing \(a DWSNets INR folder mnist_png_training_0_3 holds checkpoints/model_final.pth\)"),
    (lambda r, w: (w[("train", 7)][0].write_bytes(b""), w[("train", 7)][0])[1], r"{file}: empty \(0 bytes"),
    (lambda r, w: (r / "mnist_png_training_9_70000" / "checkpoints").mkdir(parents=True) or torch.save(
        dwsnets_dict(siren_tensors(0)), r / "mnist_png_training_9_70000" / "checkpoints" / "model_final.pth") or
     r / "mnist_png_training_9_70000" / "checkpoints" / "model_final.pth",
     r"{file}: image 70000; the train split of 'mnist' has 60000 images"),
])
def test_dwsnets_errors_name_the_file(tmp_path, damage, message):
    root = tmp_path / "mnist-inrs"
    written = write_dwsnets_mnist(root)
    file = damage(root, written)
    with pytest.raises(ZooError, match=message.format(file=re.escape(str(file)))):
        import_inr(root, tmp_path / "x.zoo", convention="dwsnets")
    assert not (tmp_path / "x.zoo").exists()


def test_other_errors(tmp_path):
    root = tmp_path / "mnist-inrs"
    write_dwsnets_mnist(root)
    with pytest.raises(ZooError, match="unknown INR convention: got 'DWS'; allowed: dwsnets, nfn"):
        import_inr(root, tmp_path / "x.zoo", convention="DWS")
    with pytest.raises(ZooError, match=r"mnist_png_training_0_3/checkpoints/model_final.pth: output layer "
                                       r"'seq.2.weight' has 1 channel\(s\), but 'cifar10' images have 3$"):
        import_inr(root, tmp_path / "x.zoo", convention="dwsnets", dataset="cifar10")
    with pytest.raises(ZooError, match=r"mnist_png_testing_2_5/checkpoints/model_final.pth: file name not in the nfn "
                                       r"layout; its INRs are randinit_smaller_<label>s/net<index>.pth"):
        import_inr(root, tmp_path / "x.zoo", convention="nfn")  # a DWSNets folder is no NFN folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match=r"empty: no INR files in the nfn layout; expected randinit_smaller_<label>s/"):
        import_inr(tmp_path / "empty", tmp_path / "x.zoo", convention="nfn")
    nfn = tmp_path / "siren_mnist_wts"
    write_nfn(nfn, [(70000, 1)], augmented=False)
    with pytest.raises(ZooError, match=r"net70000.pth: image 70000 of the 70000 train and test images of 'mnist'"):
        import_inr(nfn, tmp_path / "x.zoo", convention="nfn")
    odd = tmp_path / "odd" / "weights"
    write_nfn(odd, [(1, 2)], augmented=False)
    with pytest.raises(ZooError, match=r"odd/weights: the folder names do not say which dataset the INRs fit; pass "
                                       r"--dataset NAME"):
        import_inr(odd, tmp_path / "x.zoo", convention="nfn")
    sd = nfn_dict(siren_tensors(1))
    sd["net.2.linear.weight"] = sd.pop("net.2.weight")  # the output layer in the sine layers' form
    torch.save(sd, odd / "randinit_smaller_2s" / "net1.pth")
    with pytest.raises(ZooError, match=r"net1.pth: 'net.2.linear.weight' and 'net.2.bias' name layer 2 in two forms"):
        import_inr(odd, tmp_path / "x.zoo", convention="nfn", dataset="mnist")
    twice = tmp_path / "twice" / "siren_mnist_wts"
    write_nfn(twice, [(3, 1)], augmented=False)
    (twice / "randinit_smaller_4s").mkdir()
    torch.save(nfn_dict(siren_tensors(2)), twice / "randinit_smaller_4s" / "net3.pth")
    with pytest.raises(ZooError, match=r"net3.pth and .*net3.pth: two INRs of image 3 of the train split"):
        import_inr(twice, tmp_path / "x.zoo", convention="nfn")
    assert not (tmp_path / "x.zoo").exists()
    with pytest.raises(ZooError, match="not a directory"):
        InrSource(tmp_path / "nowhere", convention="nfn")


# --- the manifest's listed images -------------------------------------------------------------------------------
def inr_manifest(images: dict) -> Manifest:
    return Manifest.from_dict({"zoo": {"name": "listed", "kind": "inr"}, "dataset": {"name": "digits"},
                               "images": images, "architecture": {"name": "siren", "hidden": [4]},
                               "training": {"epochs": 1}, "population": {"seeds": [0, 1]}}, source="m.toml")


def test_images_can_be_listed_in_one_split_or_both():
    m = inr_manifest({"split": "test", "indices": [9, 2]})
    assert m.image_indices == (9, 2) and m.image_refs == (("test", 9), ("test", 2))
    assert [(s.hparams["image_split"], s.hparams["image_index"], s.seed) for s in m.models] == [
        ("test", 9, 0), ("test", 9, 1), ("test", 2, 0), ("test", 2, 1)]
    both = inr_manifest({"indices": {"test": [1], "train": [5, 0]}})  # train first, whatever the table's order
    assert both.image_refs == (("train", 5), ("train", 0), ("test", 1)) and both.images["split"] == "train"
    with pytest.raises(ManifestError, match="field 'images.indices': lists images of both splits"):
        both.image_indices  # noqa: B018 - what a build of one split reads
    assert inr_manifest({"indices": {"test": [3]}}).images["split"] == "test"
    assert inr_manifest({"split": "test", "start": 2, "count": 2}).image_refs == (("test", 2), ("test", 3))


@pytest.mark.parametrize("images,message", [
    ({"indices": [1, 1]}, r"field 'images.indices\[1\]': image 1 is listed twice"),
    ({"indices": [1438]}, r"field 'images.indices\[0\]': got 1438; the train split of 'digits' has 1438 images"),
    ({"indices": {"val": [1]}}, r"field 'images.indices.val': unknown split; got 'val'; allowed: test, train"),
    ({"indices": {"test": [1]}, "split": "test"}, r"field 'images.split': images.indices is a table"),
    ({"indices": [1], "start": 3}, r"field 'images.start': images.indices lists the images itself"),
    ({"indices": []}, r"field 'images.indices': expected a non-empty list of image indices"),
    ({"indices": "all"}, r"field 'images.indices': expected list or dict or none"),
])
def test_listed_images_errors(images, message):
    with pytest.raises(ManifestError, match=message):
        inr_manifest(images)

