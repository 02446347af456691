"""builders.data: torchvision's own readers on tiny files written here, and scikit-learn's bundled digits.

Nothing is downloaded: MNIST is written as raw IDX files, CIFAR-10 as python pickle batches, in the
folder layout torchvision expects, so the real reader code runs on them.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from builders.data import LUMA, ImageData, load_image_data
from zoo.datasets import input_shape
from zoo.errors import ZooError

N_TRAIN, N_TEST = 60, 20
CIFAR_PER_BATCH, CIFAR_TEST = 8, 10


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: 2 zero bytes, type code 0x08 (uint8), number of dims, each dim as big-endian uint32, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def make_mnist(root: Path, folder: str = "MNIST", seed: int = 0) -> dict[str, np.ndarray]:
    """Random images whose pixel (0, 0) is the image's index, so tests can tell images apart."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n)
        y = (np.arange(n) * 7 % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out[prefix] = (x, y)
    return out


def make_cifar10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10's python batches: dicts with 'data' (n, 3072) uint8 rows (R, G, B planes) and 'labels'."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    xs, ys = [], []
    for name, n in [(f"data_batch_{i}", CIFAR_PER_BATCH) for i in range(1, 6)] + [("test_batch", CIFAR_TEST)]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        with open(base / name, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), "labels": y, "batch_label": name}, f)
        xs.append(x)
        ys.append(np.array(y))
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return {"train": (np.concatenate(xs[:5]), np.concatenate(ys[:5])), "test": (xs[5], ys[5])}


@pytest.fixture
def mnist(tmp_path):
    return tmp_path, make_mnist(tmp_path)


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    # torchvision's CIFAR10 checks the md5 of every batch against the real files'; ours are tiny fakes, so
    # only that check is replaced by "the file exists" (the reading code itself runs unchanged).
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    return tmp_path, make_cifar10(tmp_path)


def load(root, name, **kw) -> ImageData:
    return load_image_data({"name": name, "root": str(root), **{k: v for k, v in kw.items() if k != "fraction"}},
                           train_fraction=kw.get("fraction", 1.0))


def ids(split) -> list[int]:
    """The image indices written into pixel (0, 0) (MNIST fixture, normalize = false)."""
    return [round(v) for v in (split.x[:, 0, 0, 0] * 255).tolist()]


# --- readers and shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_files_load_exact_pixels_and_labels(tmp_path, name, folder):
    raw = make_mnist(tmp_path, folder)
    data = load(tmp_path, name, normalize=False)
    assert data.train.x.shape == (N_TRAIN, 1, 28, 28) and data.test.x.shape == (N_TEST, 1, 28, 28)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.val is None and data.num_classes == 10
    assert data.mean == (0.0,) and data.std == (1.0,)
    for split, key in ((data.train, "train"), (data.test, "t10k")):
        x, y = raw[key]
        assert torch.equal(split.x, torch.from_numpy(x).float().unsqueeze(1) / 255)
        assert torch.equal(split.y, torch.from_numpy(y).long())
        assert torch.bincount(split.y, minlength=10).tolist() == np.bincount(y, minlength=10).tolist()


def test_cifar_pickles_load_channels_first(cifar):
    root, raw = cifar
    data = load(root, "cifar10", normalize=False)
    x, y = raw["train"]
    assert data.train.x.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    assert torch.equal(data.train.x, torch.from_numpy(x).float() / 255)
    assert data.train.y.tolist() == y.tolist()
    assert torch.equal(data.test.x, torch.from_numpy(raw["test"][0]).float() / 255)
    assert data.test.y.tolist() == raw["test"][1].tolist()


def _exists_only(monkeypatch, *modules):
    """Replace torchvision's md5 check (made for the real files) by "the file exists"; reading runs unchanged."""
    import importlib

    for name in modules:
        module = importlib.import_module(f"torchvision.datasets.{name}")
        monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())


def test_svhn_mat_files(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    _exists_only(monkeypatch, "svhn")
    rng = np.random.default_rng(1)
    expected = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = np.array([10, 1, 2, 3, 9, 10][:n], dtype=np.uint8)  # SVHN labels the digit 0 as 10
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y[:, None]})
        expected[split] = (x, np.where(y == 10, 0, y))
    data = load(tmp_path, "svhn", normalize=False)
    for split, got in (("train", data.train), ("test", data.test)):
        assert torch.equal(got.x, torch.from_numpy(expected[split][0]).float() / 255)
        assert got.y.tolist() == expected[split][1].tolist()


def test_stl10_binary_files(tmp_path, monkeypatch):
    _exists_only(monkeypatch, "stl10")
    base = tmp_path / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(2)
    expected = {}
    for split, n in (("train", 3), ("test", 2)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        y = np.arange(1, n + 1, dtype=np.uint8)  # 1-based on disk
        (base / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # stored column-major
        (base / f"{split}_y.bin").write_bytes(y.tobytes())
        expected[split] = (x, y - 1)
    (base / "unlabeled_X.bin").write_bytes(b"")
    data = load(tmp_path, "stl10", normalize=False, resize=48)
    assert data.train.x.shape == (3, 3, 48, 48)
    full = load(tmp_path, "stl10", normalize=False)
    for split, got in (("train", full.train), ("test", full.test)):
        assert torch.equal(got.x, torch.from_numpy(expected[split][0]).float() / 255)
        assert got.y.tolist() == expected[split][1].tolist()


def test_usps_bz2_files(tmp_path):
    import bz2

    rng = np.random.default_rng(3)
    expected = {}
    for name, n in (("usps.bz2", 5), ("usps.t.bz2", 3)):
        v = rng.choice([-1.0, 0.0, 1.0], (n, 256))  # -1 -> 0, 0 -> 127, 1 -> 255 in torchvision's reader
        labels = rng.integers(1, 11, n)
        lines = [f"{lab} " + " ".join(f"{j + 1}:{val:g}" for j, val in enumerate(row)) for lab, row in zip(labels, v)]
        (tmp_path / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
        expected[name] = (np.choose((v + 1).astype(int), [0, 127, 255]).reshape(n, 1, 16, 16), labels - 1)
    data = load(tmp_path, "usps", normalize=False)
    for name, got in (("usps.bz2", data.train), ("usps.t.bz2", data.test)):
        assert torch.equal(got.x, torch.from_numpy(expected[name][0]).float() / 255)
        assert got.y.tolist() == expected[name][1].tolist()


def test_tiny_imagenet_folder(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    rng = np.random.default_rng(4)
    for wnid in ("n02", "n01"):  # class index follows the sorted wnids
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            path = base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(base / "val" / "images" / "val_0.JPEG")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val" / "images" / "val_1.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t1\t2\t3\t4\n")
    data = load(tmp_path, "tiny-imagenet", normalize=False)
    assert data.train.x.shape == (4, 3, 64, 64) and data.num_classes == 200
    assert data.train.y.tolist() == [0, 0, 1, 1] and data.test.y.tolist() == [1, 0]

    def pil(p):
        return torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(data.train.x[0], pil(base / "train" / "n01" / "images" / "n01_0.JPEG"))
    assert torch.equal(data.test.x[0], pil(base / "val" / "images" / "val_0.JPEG"))  # grayscale -> RGB
    assert torch.equal(data.test.x[0, 0], data.test.x[0, 2])


# --- preprocessing ------------------------------------------------------------------------------------
def test_fixed_mean_std_applied_exactly(mnist, cifar):
    root, raw = mnist
    data = load(root, "mnist", mean=[0.1307], std=[0.3081])
    expected = (torch.from_numpy(raw["t10k"][0]).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(data.test.x, expected, rtol=0, atol=1e-6)
    assert data.mean == (0.1307,) and data.std == (0.3081,)

    root, raw = cifar
    data = load(root, "cifar10", mean=[0.5, 0.4, 0.3], std=[0.25, 0.5, 1.0])
    m, s = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.25, 0.5, 1.0]).view(3, 1, 1)
    torch.testing.assert_close(data.test.x, (torch.from_numpy(raw["test"][0]).float() / 255 - m) / s,
                               rtol=0, atol=1e-6)


def test_train_split_statistics_standardize_train_only(cifar):
    root, raw = cifar
    data = load(root, "cifar10", val_size=8, split_seed=3)
    x = data.train.x
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(x.std((0, 2, 3), unbiased=False), torch.ones(3), rtol=0, atol=1e-4)
    # the statistics are those of the 32 train images only (not val, not test)
    unnormalized = load(root, "cifar10", val_size=8, split_seed=3, normalize=False).train.x.double()
    np.testing.assert_allclose(data.mean, unnormalized.mean((0, 2, 3)).numpy(), atol=1e-9)
    np.testing.assert_allclose(data.std, unnormalized.std((0, 2, 3), unbiased=False).numpy(), atol=1e-7)
    assert abs(data.test.x.mean().item()) > 1e-4  # test is normalized with train's numbers, not its own


def test_wrong_number_of_fixed_means_names_the_field(mnist):
    root, _ = mnist
    with pytest.raises(ZooError, match=r"dataset\.mean.*expected 1 number"):
        load(root, "mnist", mean=[0.5, 0.5, 0.5], std=[0.5])
    with pytest.raises(ZooError, match=r"dataset\.std"):
        load(root, "mnist", mean=[0.5])


def test_grayscale_uses_luma_weights(cifar, mnist):
    root, raw = cifar
    data = load(root, "cifar10", grayscale=True, normalize=False)
    assert data.train.x.shape == (40, 1, 32, 32)
    rgb = torch.from_numpy(raw["train"][0]).float() / 255
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert LUMA == (0.299, 0.587, 0.114)
    torch.testing.assert_close(data.train.x[:, 0], expected, rtol=0, atol=1e-6)
    root, raw = mnist  # one channel stays as it is
    gray = load(root, "mnist", grayscale=True, normalize=False)
    assert torch.equal(gray.train.x, torch.from_numpy(raw["train"][0]).float().unsqueeze(1) / 255)


def test_resize_and_center_crop(cifar, mnist):
    root, raw = cifar
    resized = load(root, "cifar10", resize=28, normalize=False)
    assert resized.train.x.shape == (40, 3, 28, 28) == (40, *input_shape("cifar10", resize=28))
    src = torch.from_numpy(raw["train"][0]).float() / 255
    expected = torch.nn.functional.interpolate(src, size=(28, 28), mode="bilinear", antialias=True)
    torch.testing.assert_close(resized.train.x, expected, rtol=0, atol=1e-6)

    cropped = load(root, "cifar10", center_crop=24, normalize=False)
    assert torch.equal(cropped.train.x, src[:, :, 4:28, 4:28])  # offset round((32 - 24) / 2) = 4

    root, _ = mnist
    both = load(root, "mnist", resize=32, center_crop=28, grayscale=True)
    assert both.test.x.shape[1:] == input_shape("mnist", grayscale=True, resize=32, center_crop=28) == (1, 28, 28)
    too_big = load(root, "mnist", center_crop=40, normalize=False)  # larger than the image: no crop
    assert too_big.train.x.shape[1:] == (1, 28, 28) == input_shape("mnist", center_crop=40)


def test_batched_preprocessing_equals_one_batch(cifar, monkeypatch):
    root, _ = cifar
    whole = load(root, "cifar10", resize=40, center_crop=36, val_size=5)
    monkeypatch.setattr("builders.data._BATCH_FLOATS", 3 * 40 * 40 * 3)  # 3 images per preprocessing batch
    batched = load(root, "cifar10", resize=40, center_crop=36, val_size=5)
    for a, b in ((whole.train, batched.train), (whole.val, batched.val), (whole.test, batched.test)):
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole.mean, batched.mean, atol=1e-9)
    np.testing.assert_allclose(whole.std, batched.std, atol=1e-9)


def test_resize_keeps_a_constant_image_constant(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((4, 28, 28), 51, np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    x = load(tmp_path, "mnist", resize=13, normalize=False).train.x
    assert x.shape == (4, 1, 13, 13)
    torch.testing.assert_close(x, torch.full_like(x, 0.2), rtol=0, atol=1e-6)


# --- splits -------------------------------------------------------------------------------------------
def test_val_split_is_seeded_disjoint_and_sorted(mnist):
    root, raw = mnist
    a = load(root, "mnist", val_size=12, split_seed=5, normalize=False)
    b = load(root, "mnist", val_size=12, split_seed=5, normalize=False)
    c = load(root, "mnist", val_size=12, split_seed=6, normalize=False)
    tr, va = ids(a.train), ids(a.val)
    assert len(va) == 12 and len(tr) == N_TRAIN - 12
    assert sorted(tr + va) == list(range(N_TRAIN)) and tr == sorted(tr) and va == sorted(va)
    assert ids(b.val) == va and torch.equal(a.train.x, b.train.x)
    assert ids(c.val) != va
    assert a.val.y.tolist() == raw["train"][1][va].tolist()
    assert ids(a.test) == list(range(N_TEST))  # the test split is the dataset's own, untouched


def test_val_size_too_large(mnist):
    root, _ = mnist
    with pytest.raises(ZooError, match=rf"dataset\.val_size = {N_TRAIN} must be smaller than the {N_TRAIN}"):
        load(root, "mnist", val_size=N_TRAIN)
    assert load(root, "mnist", val_size=0).val is None


def test_train_fraction_is_a_seeded_sorted_subset(mnist):
    root, _ = mnist
    full = load(root, "mnist", val_size=10, normalize=False)
    half = load(root, "mnist", val_size=10, normalize=False, fraction=0.5)
    again = load(root, "mnist", val_size=10, normalize=False, fraction=0.5)
    kept = ids(half.train)
    assert len(kept) == 25 and kept == sorted(kept) and set(kept) <= set(ids(full.train))
    assert kept == ids(again.train) and ids(half.val) == ids(full.val)
    assert len(load(root, "mnist", fraction=0.1).train) == 6
    # normalization statistics come from the whole train split, whatever the fraction
    assert load(root, "mnist", fraction=0.5).mean == load(root, "mnist").mean
    with pytest.raises(ZooError, match="train_fraction"):
        load(root, "mnist", fraction=1.5)


# --- missing files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "cifar10", "usps", "tiny-imagenet"])
def test_missing_files_name_the_root_and_download(tmp_path, name):
    root = tmp_path / "nothing-here"
    with pytest.raises(ZooError) as info:
        load(root, name)
    text = str(info.value)
    assert repr(name) in text and str(root) in text and "download = true" in text


def test_root_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ZooError, match=str(tmp_path / "data")):
        load("~/data", "mnist")
    make_mnist(tmp_path / "data")
    assert len(load("~/data", "mnist").train) == N_TRAIN


# --- digits: the real offline dataset -----------------------------------------------------------------
def test_digits_real_data():
    data = load_image_data({"name": "digits", "val_size": 100, "normalize": False})
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 1797 and sizes == [1797 - 359 - 100, 100, 359]
    assert data.num_classes == 10 and data.train.x.shape[1:] == (1, 8, 8)
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    assert set(y.tolist()) == set(range(10)) and torch.bincount(y).min() >= 170
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    assert x.min() == 0.0 and x.max() == 1.0 and torch.equal(x * 16, (x * 16).round())

    from sklearn.datasets import load_digits
    images = (torch.as_tensor(load_digits().images, dtype=torch.float32) / 16).reshape(1797, 64)
    assert sorted(map(tuple, x.reshape(1797, 64).tolist())) == sorted(map(tuple, images.tolist()))

    other = load_image_data({"name": "digits", "split_seed": 7, "normalize": False})
    same = load_image_data({"name": "digits", "split_seed": 7, "normalize": False})
    assert torch.equal(other.test.x, same.test.x) and not torch.equal(other.test.x, data.test.x)

    norm = load_image_data({"name": "digits"})
    assert abs(norm.train.x.mean().item()) < 1e-5 and abs(norm.train.x.std().item() - 1) < 1e-3


def test_image_data_to_device(mnist):
    root, _ = mnist
    data = load(root, "mnist", val_size=5)
    moved = data.to("cpu")
    assert torch.equal(moved.val.x, data.val.x) and moved.mean == data.mean
    if torch.cuda.is_available():
        on_gpu = load_image_data({"name": "mnist", "root": str(root), "val_size": 5}, device="cuda")
        assert on_gpu.train.x.is_cuda and on_gpu.val.y.is_cuda
        torch.testing.assert_close(on_gpu.train.x.cpu(), data.train.x, rtol=0, atol=1e-6)
