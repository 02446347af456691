"""Start-up and early refusals: `import zoo` and `zoo plan` need no torch, memoized architecture facts equal the
module's, and bad input is refused before any file is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.architectures import ARCHITECTURES, get_architecture
from zoo.architectures import cache as arch_cache
from zoo.errors import ManifestError, ZooError
from zoo.layout import Layout
from zoo.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "zarr", "builders", "loaders", "matplotlib", "sklearn")


def _modules_after(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps({m: m in sys.modules for"
                          f" m in {HEAVY!r}}}))"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_zoo_imports_no_torch_and_no_store_libraries():
    loaded = _modules_after("import zoo")
    assert not any(loaded.values()), loaded
    loaded = _modules_after("import zoo; zoo.load_manifest")  # a lazy name resolves ...
    assert not loaded["torch"] and not loaded["torchvision"]  # ... and still needs no torch


def test_zoo_plan_needs_no_torch_once_the_architecture_is_memoized(tmp_path):
    env = {arch_cache.CACHE_ENV: str(tmp_path)}
    code = ("from zoo.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['plan', 'manifests/quickstart.toml', '--device', 'cpu']) == 0\n")
    assert _modules_after(code, env)["torch"]  # the first plan builds the module once ...
    loaded = _modules_after(code, env)  # ... later plans read its layout and activation sizes from the memo
    assert not loaded["torch"] and not loaded["torchvision"], loaded
    # layout and activation sizes for each of the three activations of the grid
    assert len(list((tmp_path / "architectures").glob("smallcnn-*.json"))) == 6


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_memoized_layout_equals_the_modules(name, tmp_path, monkeypatch):
    monkeypatch.setenv(arch_cache.CACHE_ENV, str(tmp_path))
    shape = (3, 32, 32)
    fresh = get_architecture(name, shape).layout  # computed, then written
    assert fresh == Layout.from_module(get_architecture(name, shape).module())
    again = get_architecture(name, shape).layout  # a new Architecture object: read from the memo
    assert again == fresh
    for f in (tmp_path / "architectures").glob(f"{name}-layout-*.json"):
        f.write_text("{not json")  # a damaged entry is recomputed, not trusted
    assert get_architecture(name, shape).layout == fresh


def test_memo_key_follows_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv(arch_cache.CACHE_ENV, str(tmp_path))
    a = get_architecture("mlp", (1, 8, 8), hidden=[4])
    b = get_architecture("mlp", (1, 8, 8), hidden=[5])
    assert a.layout.size != b.layout.size
    assert len(list((tmp_path / "architectures").glob("mlp-layout-*.json"))) == 2


def test_architectures_state_the_input_sizes_they_accept(tmp_path):
    text = (ROOT / "manifests" / "quickstart.toml").read_text().replace("resize = 16", "resize = 1")
    path = tmp_path / "small.toml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=r"small\.toml: field 'architecture.name': 'smallcnn' takes inputs of at "
                                            r"least 15x15 pixels; the dataset gives 1x1"):
        load_manifest(path)
    assert ARCHITECTURES.get("cnn-s").min_side({}) == 20  # 20 -> conv 16 -> pool 8 -> conv 4 -> pool 2 -> conv 1
    get_architecture("cnn-s", (1, 20, 20)).layout  # noqa: B018 - the smallest accepted input builds
    with pytest.raises(ZooError, match="at least 20x20"):
        get_architecture("cnn-s", (1, 19, 19))


def test_a_missing_dataset_is_refused_before_the_store_is_created(tmp_path):
    from builders import build

    data = {"zoo": {"name": "m"}, "dataset": {"name": "mnist", "root": str(tmp_path / "nothing")},
            "architecture": {"name": "mlp", "hidden": [4]}, "training": {"epochs": 1},
            "population": {"seeds": [0]}}
    out = tmp_path / "m.zoo"
    from zoo.manifest import Manifest

    with pytest.raises(ZooError, match="dataset 'mnist': files not found"):
        build(Manifest.from_dict(data, source="m.toml"), out, device="cpu", quiet=True)
    assert not out.exists()
