"""Stores and exports from strangers: opening, reading, planning, exporting, importing and loading one never runs code
it names, never allocates what it declares beyond its real bytes, and never writes outside its target.

Each case of the review that found these is a test here. Code execution is watched with a marker file that the
hostile payload would create; memory with an address-space limit on a subprocess (``bounded``). Checkpoint files
(``test_hostile_checkpoints.py``) and shard files (``test_hostile_store.py``) have their own files.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from conftest import fill_units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import _near, _parent, _paths

import zoo
from loaders import ZooDataset
from loaders.hub import DESCRIPTOR, export_hf, import_hf, open_source
from zoo.architectures import get_architecture
from zoo.errors import StoreError, UntrustedCodeError, ZooError
from zoo.manifest import Manifest

REPO = Path(__file__).resolve().parents[1]
#: Address space a hostile-input subprocess may take: what importing torch, zarr and pyarrow and reading a tiny zoo
#: needs, with room to spare, and far below what the old readers asked for (4 to 17 GB).
BOUND = 3 * 2**30


def hostile_manifest(marker: Path, **sections: Any) -> dict:
    """A manifest whose factory is ``os.system`` with a command that creates ``marker``: any call of it shows."""
    data = {"zoo": {"name": "hostile"}, "dataset": {"name": "digits"},
            "architecture": {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}},
            "training": {"epochs": 1}, "population": {"seeds": [0, 1, 2]}, "checkpoints": {"epochs": [0, 1]}}
    data.update(sections)
    return data


def hostile_store(path: Path | str, marker: Path, group_size: int = 2) -> zoo.ZooWriter:
    """A consistent store of a zoo whose architecture is ``os:system``: its layout and spec (an MLP's) are pinned
    onto the manifest by hand, as a forger would write them, so creating it runs nothing."""
    manifest = Manifest.from_dict(hostile_manifest(marker), source="hostile")
    benign = get_architecture("mlp", (1, 8, 8), 10, hidden=[6])
    for m in manifest.models:
        m.architecture.pin(benign.layout, benign.symmetry)
    writer = zoo.create(path, manifest, group_size=group_size)
    fill_units(writer, writer.plan.units)
    assert not marker.exists()
    return writer


def edit_attrs(store: Path, edit) -> None:
    """Rewrite the store's attributes (its root ``zarr.json``) with ``edit(attrs)``."""
    meta = json.loads((store / "zarr.json").read_text())
    edit(meta["attributes"]["weightzoo"])
    (store / "zarr.json").write_text(json.dumps(meta))


def zoo_cli(*args: str, cwd: Path, limit: int | None = BOUND, timeout: float = 120) -> subprocess.CompletedProcess:
    """``zoo ARGS`` in a fresh process, its address space limited to ``limit`` bytes."""

    def bound() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=bound)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The refusal: exit 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- 1. code named by data never runs ------------------------------------------------------------------------
def test_reading_a_factory_zoo_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    hostile_store(tmp_path / "h.zoo", marker)
    for command in (["info", "h.zoo"], ["status", "h.zoo"], ["verify", "h.zoo"], ["export", "hf", "h.zoo", "out"],
                    ["import", "hf", "out", "again.zoo"], ["info", "again.zoo"]):
        result = zoo_cli(*command, cwd=tmp_path, limit=None)  # code execution is the question here, not memory
        assert result.returncode == 0, (command, result.stderr[-2000:])
    z = zoo.open(tmp_path / "again.zoo")
    assert z.metadata.num_rows == 6 and z.arch_ids == ["os-system"]
    ds = ZooDataset(tmp_path / "out", view="flat", augment=("permute",), targets=("test_acc",))
    assert ds.collate([ds[i] for i in range(len(ds))])["weights"].shape[0] == len(ds) > 0
    assert zoo.open(tmp_path / "h.zoo").status()["complete"]
    assert not marker.exists()


def test_a_stored_factory_is_refused_unless_the_caller_opts_in(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    z = zoo.open(hostile_store(tmp_path / "h.zoo", marker).url)
    with pytest.raises(UntrustedCodeError, match=r"^architecture factory 'os:system': refused to import and call it, "
                                                 r"because its name was read from data .*trust_code=True"):
        z.module(0, 1)
    assert not marker.exists()
    # the caller's own function: built on the meta device first, and it must have the stored layout
    called = []

    def wrong(in_shape, num_classes, command):
        called.append(command)
        from torch import nn
        return nn.Linear(3, 2)

    with pytest.raises(StoreError, match=r"the module built for architecture 'os:system' has 8 values in 2 tensors; "
                                         r"the store's layout of 'os-system' has 460 in 4: refusing to load it"):
        z.module(0, 1, factory=wrong)
    assert called == [f"touch {marker}"]  # the stored kwargs reach the caller's function, as JSON values
    assert not marker.exists()


def test_a_torchvision_name_reaches_only_torchvision_models(tmp_path):
    marker = tmp_path / "MARKER"
    store = hostile_store(tmp_path / "h.zoo", marker).url
    for name, kwargs, message in (
            ("torchvision:_api", {}, r"torchvision:_api: not a classification model of torchvision.models"),
            ("torchvision:Weights", {}, r"torchvision:Weights: not a classification model"),
            ("torchvision:resnet18", {"norm_layer": {"factory": "os:system"}},
             r"torchvision:resnet18: argument 'norm_layer' = .*JSON scalars .* or lists of them")):
        def edit(attrs, name=name, kwargs=kwargs):
            attrs["manifest"]["architecture"] = {"name": name, "kwargs": kwargs}
            arch_id = name.replace(":", "-")
            attrs["architectures"] = {arch_id: attrs["architectures"].pop(next(iter(attrs["architectures"])))}
        shutil.rmtree(tmp_path / "t.zoo", ignore_errors=True)
        shutil.copytree(store, tmp_path / "t.zoo")
        edit_attrs(tmp_path / "t.zoo", edit)
        z = zoo.open(tmp_path / "t.zoo")
        with pytest.raises(ZooError, match=message):
            z.manifest.models[0].architecture.module()
    assert not marker.exists()


@pytest.mark.parametrize("store_kind", ["local", "memory"])
def test_no_group_size_is_refused_at_open(tmp_path, store_kind):
    """``"group_size": null`` made the plan build every layout, hence the module: now it is refused first."""
    marker = tmp_path / "MARKER"
    writer = hostile_store(tmp_path / "h.zoo", marker)
    attrs = copy.deepcopy(writer.attrs)
    attrs["group_size"] = None
    if store_kind == "memory":
        url = f"memory://hostile-{os.getpid()}.zoo"
        zarr.open_group(zarr.storage.FsspecStore.from_url(url), mode="w", attributes={"weightzoo": attrs})
        with pytest.raises(StoreError, match=r"memory://.*: group_size None; expected an integer in \[1, 1000000\]"):
            zoo.open(url).status()
    else:
        edit_attrs(tmp_path / "h.zoo", lambda a: a.update(group_size=None))
        for command in (["info", "h.zoo"], ["status", "h.zoo"], ["verify", "h.zoo"], ["export", "hf", "h.zoo", "o"]):
            one_line_error(zoo_cli(*command, cwd=tmp_path, limit=None), "h.zoo: group_size None; expected an integer")
        assert not (tmp_path / "o").exists()
    assert not marker.exists()


def test_an_export_descriptor_alone_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "export"
    folder.mkdir()
    attrs = {"format": "weightzoo", "format_version": 4, "manifest": hostile_manifest(marker), "group_size": None,
             "architectures": {}}
    (folder / DESCRIPTOR).write_text(json.dumps({"format": "weightzoo-hf", "store_attributes": attrs, "files": {},
                                                 "rows": {}, "splits": {}}))
    message = "group_size None; expected an integer"
    one_line_error(zoo_cli("import", "hf", "export", "out.zoo", cwd=tmp_path, limit=None), message)
    with pytest.raises(StoreError, match=message):
        ZooDataset(folder, view="flat")
    monkeypatch.setenv("WEIGHTZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(StoreError, match=message):
        open_source("hf://someone/hostile", download=lambda repo_id, repo_type, revision: str(folder))
    # with a group size but no stored layout: refused, never derived from the module
    attrs.update(group_size=2, architectures={"os-system": {"rows": 4}})
    (folder / DESCRIPTOR).write_text(json.dumps({"format": "weightzoo-hf", "store_attributes": attrs, "files": {},
                                                 "rows": {}, "splits": {}}))
    with pytest.raises(StoreError, match=r"architectures\['os-system'\]: layout must be an object"):
        import_hf(folder, tmp_path / "out.zoo")
    assert not marker.exists() and not (tmp_path / "out.zoo").exists()


# --- 2. attributes are checked before they are used ------------------------------------------------------------
@pytest.mark.parametrize("arch_id", ["/abs/path", "../../x", "a/b", "..", ".hidden", "x\\y"])
def test_architecture_ids_that_are_paths_are_refused(tmp_path, arch_id, filled):
    writer, _ = filled
    store = Path(writer.url)

    def edit(attrs):
        attrs["architectures"] = {arch_id: attrs["architectures"].pop("mlp")}

    edit_attrs(store, edit)
    with pytest.raises(StoreError, match=rf"architecture id {json.dumps(arch_id)[1:-1]!r}|"
                                         r"architecture id .* is not a safe name"):
        export_hf(store, tmp_path / "export")
    assert not (tmp_path / "export").exists() and not Path("/abs").exists() and not (tmp_path.parent / "x").exists()


def test_a_huge_plan_is_refused_before_it_is_expanded(tmp_path, filled):
    writer, _ = filled
    store = Path(writer.url)

    def edit(attrs):
        attrs["manifest"]["population"] = {"seeds": {"start": 0, "stop": 100_000}}
        attrs["manifest"]["training"]["epochs"] = 10_000
        attrs["manifest"]["checkpoints"] = {"epochs": "all"}
        attrs["group_size"] = 1

    edit_attrs(store, edit)
    start = time.perf_counter()
    one_line_error(zoo_cli("status", str(store), cwd=tmp_path),
                   "field 'population': 100000 models x 10001 checkpoint epochs give 1000100000 checkpoints; at most "
                   "10000000")
    assert time.perf_counter() - start < 60


def test_array_shapes_and_row_counts_must_agree_with_the_attributes(filled):
    writer, _ = filled
    store = Path(writer.url)
    edit_attrs(store, lambda a: a["architectures"]["mlp"].update(rows=2**40))
    with pytest.raises(StoreError, match=r"architectures\['mlp'\] records 1099511627776 rows; its manifest and "
                                         r"group size plan 72"):
        zoo.open(store).status()
    edit_attrs(store, lambda a: a["architectures"]["mlp"].update(rows=72))
    meta = json.loads((store / "weights" / "mlp" / "zarr.json").read_text())
    meta["shape"][0] = 2**27
    (store / "weights" / "mlp" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"weights/mlp is a float32 array of shape \(134217728, 485\); the "
                                         r"attributes describe float32 \(72, 485\)"):
        zoo.open(store).read_rows("mlp", [0])


@pytest.mark.parametrize("edit,message", [
    (lambda a: a["architectures"]["mlp"]["layout"]["tensors"][0].update(shape=[-1] * 3),
     r"layout tensor 0 \('fc1.weight'\): shape \[-1, -1, -1\]; expected at most 8 positive integers"),
    (lambda a: a["architectures"]["mlp"]["layout"]["tensors"][1].update(offset=2**64),
     r"layout tensor 1 \('fc1.bias'\): offset 18446744073709551616; tensors lie end to end, so 384 was expected"),
    (lambda a: a["architectures"]["mlp"]["layout"]["tensors"][0].update(shape=[2**20, 2**20, 2**20]),
     r"layout of more than 17179869184 values per row; refused"),
    (lambda a: a["architectures"]["mlp"]["symmetry"]["groups"]["fc1"].update(size=7),
     r"symmetry spec: permutation 'fc1' has size 7 elsewhere but 6 on 'fc1.weight' axis 0"),
    (lambda a: a["architectures"]["mlp"]["symmetry"]["axes"].update({"fc9.weight": ["fc1"]}),
     r"symmetry spec: symmetry spec names 'fc9.weight', which is not in the layout"),
    (lambda a: a.update(plan_version=9), r"plan_version 9; this library knows \[1, 2\]"),
    (lambda a: a.update(group_size=True), r"group_size True; expected an integer in \[1, 1000000\]"),
])
def test_layouts_and_specs_are_checked_when_first_read(filled, edit, message):
    writer, _ = filled
    edit_attrs(Path(writer.url), edit)
    with pytest.raises(StoreError, match=message):
        z = zoo.open(writer.url)
        z.layout("mlp"), z.symmetry("mlp")


def test_metadata_declaring_millions_of_rows_is_refused_before_it_is_read(tmp_path, filled):
    """458 KB of Parquet declaring 33.5 M rows took ``zoo info`` to 5.5 GB; its footer is read first now."""
    writer, _ = filled
    store = Path(writer.url)
    n = 33_500_000
    pq.write_table(pa.table({"model_id": pa.nulls(n, pa.int64()), "unit": pa.nulls(n, pa.int64())}),
                   store / "metadata" / "unit-00000000.parquet")
    assert (store / "metadata" / "unit-00000000.parquet").stat().st_size < 2**20
    one_line_error(zoo_cli("info", str(store), cwd=tmp_path, limit=2**31), "unit-00000000.parquet: declares 33500000 "
                   "rows; the store's plan allows at most 60")
    pq.write_table(pa.table({"unit": pa.nulls(n, pa.int64())}), store / "metadata" / "part-0.parquet")
    one_line_error(zoo_cli("status", str(store), cwd=tmp_path, limit=2**31), "part-0.parquet: declares 33500000 rows")


def test_a_damaged_metadata_file_is_a_store_error(filled):
    writer, _ = filled
    store = Path(writer.url)
    (store / "metadata" / "unit-00000000.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(StoreError, match=r"unit-00000000.parquet: not a readable Parquet file"):
        zoo.open(store).metadata  # noqa: B018


def test_zarr_json_that_is_not_metadata_is_a_store_error(filled, tmp_path):
    writer, _ = filled
    store = Path(writer.url)
    (store / "zarr.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(zoo_cli("info", str(store), cwd=tmp_path), "zarr.json is not valid group metadata")


# --- 3. manifests a user is handed ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ("format_version = " + "9" * 5001 + "\n", "not a usable TOML manifest: Exceeds the limit"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", "not a usable TOML manifest: values nested too deeply"),
])
def test_toml_that_no_parser_should_take_is_a_manifest_error(tmp_path, text, message):
    (tmp_path / "m.toml").write_text(text)
    one_line_error(zoo_cli("plan", "m.toml", cwd=tmp_path), "m.toml: " + message)


def test_a_manifest_nested_too_deeply_is_refused(tmp_path):
    deep: Any = 0
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ZooError, match="nested too deeply|expected"):
        Manifest.from_dict({"zoo": {"name": "x"}, "dataset": {"name": "digits"}, "architecture": {"name": "mlp"},
                            "training": {"epochs": 1}, "population": {"seeds": deep}})


# --- 4. a stored manifest never points at this machine's files or the network ---------------------------------
def test_a_report_never_uses_the_stored_dataset_root_or_downloads(tmp_path, monkeypatch):
    import builders.data
    from builders import build
    from zoo.cli import main
    from zoo.report import ReportOptions, write_report

    inr = {"zoo": {"name": "inr-hostile", "kind": "inr"}, "dataset": {"name": "digits"},
           "images": {"split": "test", "start": 0, "count": 2}, "architecture": {"name": "siren", "hidden": [8]},
           "training": {"lr": 1e-3, "epochs": 1, "batch_size": 64}, "population": {"seeds": [0]},
           "checkpoints": {"epochs": [0, 1]}}
    build(Manifest.from_dict(inr, source="inr.toml"), tmp_path / "inr.zoo", device="cpu", quiet=True)
    edit_attrs(tmp_path / "inr.zoo", lambda a: a["manifest"]["dataset"].update(root="/etc", download=True))
    seen = []
    real = builders.data.load_images

    def spy(dataset, split, indices, **kw):
        seen.append(dict(dataset))
        return real(dataset, split, indices, **kw)

    write_report(tmp_path / "inr.zoo", tmp_path / "r1", images=spy)
    write_report(tmp_path / "inr.zoo", tmp_path / "r2", ReportOptions(data_root=str(tmp_path / "mine")), images=spy)
    # zoo report hands the report builders' reader, which gets the same dataset section
    monkeypatch.setattr(builders.data, "load_images", spy)
    assert main(["report", str(tmp_path / "inr.zoo"), "-o", str(tmp_path / "r3")]) == 0
    assert [(d["root"], d["download"]) for d in seen] == [("~/.cache/weightzoo/data", False),
                                                           (str(tmp_path / "mine"), False),
                                                           ("~/.cache/weightzoo/data", False)]


# --- 5. properties: any edit of a real store's or export's self-description -----------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A small real store and its export, copied afresh for each example."""
    from conftest import tiny_manifest

    root = tmp_path_factory.mktemp("hostile-real")
    writer = zoo.create(root / "tiny.zoo", tiny_manifest(), group_size=3)
    fill_units(writer, writer.plan.units)
    export_hf(writer.url, root / "export", seed=1)
    store = json.loads((root / "tiny.zoo" / "zarr.json").read_text())
    desc = json.loads((root / "export" / DESCRIPTOR).read_text())
    return root, store, desc


@st.composite
def edited(draw: st.DrawFn, document: dict) -> dict:
    data = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        op = draw(st.sampled_from(["near", "delete", "null", "huge"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "null":
            parent[path[-1]] = None
        elif op == "huge":
            parent[path[-1]] = draw(st.sampled_from([2**40, -1, 2**64 - 1, "../../x", "/abs", "os:system",
                                                      {"factory": "os:system"}]))
        else:
            parent[path[-1]] = draw(st.sampled_from(_near(parent[path[-1]])))
    return data


class _AddressSpace:
    """Limits this process's address space to what it holds now plus ``extra`` bytes, for the span of a property:
    an allocation sized by a declared count then fails (MemoryError), which the property calls a failure."""

    def __init__(self, extra: int = 2 * 2**30) -> None:
        self.extra = extra

    def __enter__(self) -> None:
        size = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("VmSize:")).split()[1]) * 1024
        self.previous = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size + self.extra, self.previous[1]))

    def __exit__(self, *exc: object) -> None:
        resource.setrlimit(resource.RLIMIT_AS, self.previous)


def _exercise_store(path: Path) -> None:
    z = zoo.open(path)
    z.info(), z.status()
    for arch in z.arch_ids:
        z.layout(arch), z.symmetry(arch)
    meta = z.metadata
    if meta.num_rows:
        arch, row = meta.column("arch")[0].as_py(), meta.column("row")[0].as_py()
        z.read_rows(arch, [row])
        z.read_rows(arch, [row], verify=True)
        ds = ZooDataset(z, view="tokens", augment=("permute", "rescale"), targets=("test_acc",))
        ds.collate([ds[0]])


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_of_a_store_s_zarr_json_is_accepted_or_refused_with_a_zoo_error(real, tmp_path, data):
    root, store, _ = real
    meta = copy.deepcopy(store)
    meta["attributes"]["weightzoo"] = data.draw(edited(store["attributes"]["weightzoo"]))
    path = tmp_path / f"s{time.monotonic_ns()}.zoo"
    shutil.copytree(root / "tiny.zoo", path)
    (path / "zarr.json").write_text(json.dumps(meta))
    with _AddressSpace():
        try:
            _exercise_store(path)
        except ZooError:
            pass
    shutil.rmtree(path)
    assert not Path("/abs").exists() and not (tmp_path.parent / "x").exists()


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_of_an_export_s_descriptor_is_accepted_or_refused_with_a_zoo_error(real, tmp_path, data):
    root, _, desc = real
    folder = tmp_path / f"e{time.monotonic_ns()}"
    shutil.copytree(root / "export", folder)
    (folder / DESCRIPTOR).write_text(json.dumps(data.draw(edited(desc))))
    target = folder.with_suffix(".zoo")
    with _AddressSpace():
        try:
            import_hf(folder, target)
            _exercise_store(target)
        except ZooError:
            pass
    shutil.rmtree(folder)
    shutil.rmtree(target, ignore_errors=True)
    assert not Path("/abs").exists() and not (tmp_path.parent / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_the_address_space_guard_is_on():
    with _AddressSpace(extra=2**28), pytest.raises(MemoryError):
        np.ones(2**30, dtype=np.uint8)
