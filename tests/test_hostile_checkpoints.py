"""Hostile checkpoint folders: pickles that would run code, memory bombs, damaged zip directories, links and FIFOs.

Checkpoint folders come from strangers (docs/design.md §7). Each case here is a file crafted the way an attacker
would, read through the real importers (``zoo import modelzoo``, ``inr``, ``smallcnnzoo``; Tiny-ImageNet's reader):
every one ends in a one-line error naming the file (exit 2 from the command line), the ``--skip-incomplete`` models
are left out with the reason, no payload runs (a marker file it would create never appears), and the memory cases
run in a subprocess under an address-space limit that a benign import fits (about 5.5 GB of virtual memory, most of
it torch's libraries) and the old behaviour would exceed (a 4.3 GB memo, 17 GB of rows). The property tests mutate
a real checkpoint's bytes: every outcome is a state dict or the reader's own error.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.importers import import_modelzoo, statedicts, torchfile
from builders.importers.inr import InrFile, read_inr
from zoo.cli import main
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]
#: The address space a subprocess import may use: a benign one peaks near 5.5 GB (torch's libraries mapped).
ADDRESS_LIMIT = 8 * 2**30


def _benchmarks():
    spec = importlib.util.spec_from_file_location("weightzoo_benchmarks_importers_hostile",
                                                  REPO / "benchmarks" / "importers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _benchmarks()


@pytest.fixture(scope="module")
def mz_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-modelzoo") / "tune_zoo_mnist"
    return root, fixtures.write_modelzoo(root, train=False)


@pytest.fixture
def mzdir(mz_template, tmp_path):
    root, written = mz_template
    shutil.copytree(root, tmp_path / root.name)
    return tmp_path / root.name, sorted(written)


def checkpoint(src: Path, trial: str, epoch: int = 1) -> Path:
    return src / trial / f"checkpoint_{epoch:06d}" / "checkpoints"


# --- hostile payloads --------------------------------------------------------------------------------------------
def system_pickle(marker: Path) -> bytes:
    """Protocol 2: GLOBAL os.system, REDUCE with ('touch MARKER',): what pickle.loads would run."""
    cmd = f"touch {marker}".encode()
    return b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."


def open_pickle(marker: Path) -> bytes:
    """GLOBAL builtins.open, REDUCE with (MARKER, 'w'): would create the marker file."""
    path = str(marker).encode()
    return (b"\x80\x02cbuiltins\nopen\nX" + struct.pack("<I", len(path)) + path + b"X\x01\x00\x00\x00w\x86R.")


def stack_global_pickle(marker: Path) -> bytes:
    """Protocol 4: STACK_GLOBAL of two memoized strings (os, system), as pickle.dumps writes it."""
    cmd = f"touch {marker}".encode()
    return (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94X" + struct.pack("<I", len(cmd)) + cmd
            + b"\x85R.")


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def base_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def with_pickle(data: bytes, pickled: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """The torch.save archive ``data`` rebuilt with its data.pkl replaced (CRCs right: only the pickle is hostile)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, pickled if name.endswith("/data.pkl") else src.read(name))
        for name, value in (extra or {}).items():
            dst.writestr(name, value)
    return out.getvalue()


def assert_one_line(text: str) -> None:
    assert text.strip() and len(text.strip().splitlines()) == 1 and "Traceback" not in text, text


# --- pickles that would run code -----------------------------------------------------------------------------
def _hostile_files(marker: Path) -> dict[str, tuple[bytes, str]]:
    legacy, modern = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, modern)
    base = base_checkpoint()
    return {"zip GLOBAL os.system": (with_pickle(base, system_pickle(marker)), "os.system"),
            "zip builtins.open": (with_pickle(base, open_pickle(marker)), "builtins.open"),
            "zip STACK_GLOBAL": (with_pickle(base, stack_global_pickle(marker)), "os.system"),
            "zip REDUCE of a class": (modern.getvalue(), f"{os.system.__module__}.system"),
            "legacy REDUCE of a class": (legacy.getvalue(), f"{os.system.__module__}.system")}


@pytest.mark.parametrize("case", ["zip GLOBAL os.system", "zip builtins.open", "zip STACK_GLOBAL",
                                  "zip REDUCE of a class", "legacy REDUCE of a class"])
def test_unsafe_pickles_are_refused_naming_the_global(tmp_path, case):
    marker = tmp_path / "MARKER"
    data, name = _hostile_files(marker)[case]
    file = tmp_path / "model.pth"
    file.write_bytes(data)
    expected = (f"refused: an unsafe pickle (it names the global {name}; only tensors and plain containers are "
                "read)")
    with pytest.raises(ZooError) as e:
        statedicts.load_state_dict(file)
    assert str(e.value) == f"{file}: {expected}" and "weights_only" not in str(e.value)
    with pytest.raises(ZooError) as e:  # the INR importer's reader
        read_inr(InrFile(file, "train", 0, 0), _convention())
    assert expected in str(e.value) and "weights_only" not in str(e.value)
    if data[:4] == torchfile.ZIP_MAGIC:
        assert torchfile.scan_check(file) == (len(data), expected)
        with pytest.raises(torchfile.Unsafe, match="refused: an unsafe pickle"):
            torchfile.load(data)
    with pytest.raises(torchfile.Unsafe, match=r"refused: an unsafe pickle \(it names the global"):
        torchfile.check_for_torch(data)
    assert not marker.exists()


def _convention():
    from builders.importers.inr import CONVENTIONS
    return CONVENTIONS.get("dwsnets")


def test_an_unsafe_checkpoint_is_exit_2_or_left_out_with_skip_incomplete(mzdir, tmp_path, capsys):
    src, names = mzdir
    marker = tmp_path / "MARKER"
    file = checkpoint(src, names[1])
    file.write_bytes(with_pickle(file.read_bytes(), system_pickle(marker)))
    store = tmp_path / "mz.zoo"
    assert main(["import", "modelzoo", str(src), str(store), "--dataset", "mnist", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert f"{file}: refused: an unsafe pickle (it names the global os.system;" in err and "weights_only" not in err
    assert not store.exists()
    assert main(["import", "modelzoo", str(src), str(store), "--dataset", "mnist", "--skip-incomplete", "--json",
                 "--workers", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped_models"] == [names[1]]
    assert out["skipped_reasons"][names[1]].startswith("checkpoint_000001/checkpoints: refused: an unsafe pickle "
                                                       "(it names the global os.system")
    assert not marker.exists()


# --- memory bombs, in a subprocess under an address-space limit ---------------------------------------------------
#: ``zoo ARGS`` that writes its own peak RSS (KB) to ``$PEAK_FILE`` as it exits: the figure of this one process,
#: not the largest of every child this test process ever ran (``RUSAGE_CHILDREN``).
_PEAK = ("import atexit, os, resource, sys\n"
         "atexit.register(lambda: open(os.environ['PEAK_FILE'], 'w').write("
         "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
         "from zoo.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def _limited(args: list[str], timeout: int = 180) -> tuple[subprocess.CompletedProcess, int]:
    """``zoo ARGS`` in a subprocess whose address space is capped at ``ADDRESS_LIMIT``; (result, its peak RSS in
    KB)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))

    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        done = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, cwd=REPO, env={**os.environ, "PEAK_FILE": str(peak_file)})
        return done, int(peak_file.read_text())


def memo_bomb() -> bytes:
    """A torch.save zip whose data.pkl is ``}r`` (EMPTY_DICT, LONG_BINPUT 2**28): the C unpickler would allocate
    a memo of 2**29 pointers (4.3 GB) for it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"}r" + struct.pack("<I", 2**28) + b".")
        z.writestr("archive/byteorder", b"little")
    return out.getvalue()


def test_a_memo_bomb_is_refused_before_the_unpickler_allocates(mzdir, tmp_path):
    data = memo_bomb()
    assert len(data) < 300
    with pytest.raises(torchfile.Unsafe, match=r"refused: a pickle that puts memo index 268435456 in 2 opcodes"):
        torchfile.load(data)
    with pytest.raises(torchfile.Unsafe, match="memo index 268435456"):  # before torch.load, too
        torchfile.check_for_torch(data)
    src, names = mzdir
    file = checkpoint(src, names[2], 2)
    file.write_bytes(data)
    done, peak = _limited(["import", "modelzoo", str(src), str(tmp_path / "a.zoo"), "--dataset", "mnist",
                           "--workers", "0"])
    assert done.returncode == 2, done.stderr
    assert_one_line(done.stderr)
    assert f"{file}: refused: a pickle that puts memo index 268435456" in done.stderr
    assert peak < 2 * 2**20  # KB: a benign import peaks near 0.7 GB
    done, _ = _limited(["import", "modelzoo", str(src), str(tmp_path / "b.zoo"), "--dataset", "mnist",
                        "--workers", "0", "--skip-incomplete", "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["skipped_models"] == [names[2]]


def stride0_inr(root: Path) -> Path:
    """A DWSNets INR whose tensors are stride-0 views of one value each, declaring widths [65536, 65536]: a 3 KB
    file that, believed, asks for 17 GB of rows."""
    file = root / "mnist_png_training_1_0" / "checkpoints" / "model_final.pth"
    file.parent.mkdir(parents=True)
    one = torch.zeros(1)
    torch.save({"seq.0.weight": one.expand(65536, 2), "seq.0.bias": one.expand(65536),
                "seq.1.weight": one.expand(65536, 65536), "seq.1.bias": one.expand(65536),
                "seq.2.weight": one.expand(1, 65536), "seq.2.bias": one.expand(1)}, file)
    return file


def test_stride0_views_are_refused_under_a_memory_limit(tmp_path):
    src = tmp_path / "mnist-inrs"
    file = stride0_inr(src)
    assert file.stat().st_size < 5000
    with pytest.raises(ZooError, match=r"refused: a tensor of size \(65536, 2\) \(stride \(0, 0\)\) views 131072 "
                                       r"values of a storage of 1"):
        read_inr(InrFile(file, "train", 0, 1), _convention())
    done, peak = _limited(["import", "inr", str(src), str(tmp_path / "inr.zoo"), "--convention", "dwsnets"])
    assert done.returncode == 2, done.stderr
    assert_one_line(done.stderr)
    assert f"{file}: refused: a tensor of size" in done.stderr and peak < 2 * 2**20


def test_inr_widths_are_checked_against_the_file_before_building(tmp_path):
    """Zero-size weights of 65,536 rows: backed by nothing, they imply a 4.3e9-parameter siren."""
    src = tmp_path / "mnist-inrs"
    file = src / "mnist_png_training_1_0" / "checkpoints" / "model_final.pth"
    file.parent.mkdir(parents=True)
    torch.save({"seq.0.weight": torch.zeros(65536, 0), "seq.0.bias": torch.zeros(0),
                "seq.1.weight": torch.zeros(65536, 0), "seq.1.bias": torch.zeros(0),
                "seq.2.weight": torch.zeros(1, 0), "seq.2.bias": torch.zeros(0)}, file)
    from builders.importers import import_inr
    with pytest.raises(ZooError, match=r"model_final.pth: hidden widths \[65536, 65536\] imply 4295294977 "
                                       r"parameters, but the file holds \d+ bytes"):
        import_inr(src, tmp_path / "inr.zoo", convention="dwsnets")
    assert not (tmp_path / "inr.zoo").exists()


# --- damaged zip directories ----------------------------------------------------------------------------------
def zip64_short_extra(data: bytes, extra: bytes) -> bytes:
    """The archive rebuilt without zip64 records, data.pkl's directory entry marked zip64 (sizes 0xFFFFFFFF) with
    ``extra`` as its extra field (too short for the sizes, or empty)."""
    plain = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(plain, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    raw = bytearray(plain.getvalue())
    entries, cd_offset, cd_size = torchfile._directory_span(bytes(raw[-torchfile.TAIL_BYTES:]), len(raw))
    pos = cd_offset
    assert raw[pos:pos + 4] == b"PK\x01\x02"
    name_len, extra_len, comment_len = struct.unpack_from("<3H", raw, pos + 28)
    assert raw[pos + 46:pos + 46 + name_len].endswith(b"data.pkl") and extra_len == 0
    struct.pack_into("<2L", raw, pos + 20, 0xFFFFFFFF, 0xFFFFFFFF)
    struct.pack_into("<H", raw, pos + 30, len(extra))
    raw[pos + 46 + name_len:pos + 46 + name_len] = extra
    # the end record: the directory grew by len(extra)
    eocd = len(raw) - 22
    struct.pack_into("<L", raw, eocd + 12, cd_size + len(extra))
    return bytes(raw)


@pytest.mark.parametrize("extra", [b"", struct.pack("<2H", 1, 4) + b"\0" * 4, struct.pack("<2H", 1, 16),
                                   struct.pack("<H", 1)], ids=["empty", "short", "declared-long", "cut"])
def test_a_zip64_entry_with_a_short_extra_field_is_unreadable(mzdir, tmp_path, capsys, extra):
    data = zip64_short_extra(base_checkpoint(), extra)
    with pytest.raises(torchfile.Unreadable, match=r"not a readable torch.save file, truncated or damaged \(.*zip64"):
        torchfile.load(data)
    with pytest.raises(torchfile.Unreadable, match="zip64"):
        torchfile.check_for_torch(data)
    src, names = mzdir
    file = checkpoint(src, names[0], 0)
    file.write_bytes(data)
    assert "zip64" in torchfile.scan_check(file)[1]
    assert main(["import", "modelzoo", str(src), str(tmp_path / "a.zoo"), "--dataset", "mnist", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert f"{file}: not a readable torch.save file, truncated or damaged" in err and "zip64" in err
    assert main(["import", "modelzoo", str(src), str(tmp_path / "b.zoo"), "--dataset", "mnist", "--workers", "0",
                 "--skip-incomplete", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_models"] == [names[0]]


# --- layout.csv ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sc_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-smallcnnzoo") / "mnist"
    fixtures.write_smallcnnzoo(root)
    return root


@pytest.mark.parametrize("shape, shown", [("-" * 200_000, "longer than 4096 characters"),
                                          ("-" * 2000, "longer than 1024 characters"),
                                          ("(" * 500 + ")" * 500, "expected two integers and a tuple"),
                                          ("(1e400,)", "expected two integers and a tuple"),
                                          ("__import__('os').system('x')", "expected two integers and a tuple")])
def test_a_layout_shape_that_is_no_shape_is_one_line_naming_the_line(sc_template, tmp_path, capsys, shape, shown):
    src = tmp_path / "mnist"
    shutil.copytree(sc_template, src)
    layout = src / "layout.csv"
    lines = layout.read_text().splitlines()
    head, first = lines[0].split(","), lines[1]
    import csv
    row = next(csv.reader([first]))
    row[head.index("shape")] = shape
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    layout.write_text("\n".join([lines[0], buffer.getvalue().strip(), *lines[2:]]) + "\n")
    assert main(["import", "smallcnnzoo", str(src), str(tmp_path / "sc.zoo")]) == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert f"{layout}: line 2:" in err and shown in err
    assert len(err) < 1000


# --- links, FIFOs and paths outside the folder --------------------------------------------------------------------
def test_links_and_fifos_in_trial_folders_are_refused_or_left_out(mzdir, tmp_path):
    """In a subprocess with a timeout: a FIFO that were opened would block the import for good."""
    src, names = mzdir
    outside = tmp_path / "outside"
    outside.mkdir()
    fifo = checkpoint(src, names[0], 1)
    fifo.unlink()
    os.mkfifo(fifo)
    target = outside / "checkpoints"
    shutil.copy(checkpoint(src, names[1], 1), target)
    link = checkpoint(src, names[1], 1)
    link.unlink()
    link.symlink_to(target)
    shutil.move(str(src / names[2]), outside / names[2])  # a trial folder that is a link to one elsewhere
    (src / names[2]).symlink_to(outside / names[2], target_is_directory=True)
    code = "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, "import", "modelzoo", str(src)]
    done = subprocess.run([*args, str(tmp_path / "a.zoo"), "--dataset", "mnist", "--workers", "0"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert_one_line(done.stderr)
    assert (f"{src / names[2]}: trial folder not read (.: a symbolic link to {outside / names[2]}, not a folder; "
            "not read") in done.stderr
    done = subprocess.run([*args, str(tmp_path / "b.zoo"), "--dataset", "mnist", "--workers", "0",
                           "--skip-incomplete", "--json"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["skipped_models"] == names[:3] and out["models"] == 1
    reasons = out["skipped_reasons"]
    assert reasons[names[0]].startswith("checkpoint_000001/checkpoints: a FIFO (named pipe), not a regular file")
    assert reasons[names[1]].startswith(f"checkpoint_000001/checkpoints: a symbolic link to {target}, not a "
                                        "regular file; not read")
    assert reasons[names[2]].startswith(f".: a symbolic link to {outside / names[2]}, not a folder; not read")


def test_a_linked_params_file_leaves_its_trial_out(mzdir, tmp_path):
    src, names = mzdir
    secret = tmp_path / "secret.json"
    secret.write_text((src / names[3] / "params.json").read_text())
    (src / names[3] / "params.json").unlink()
    (src / names[3] / "params.json").symlink_to(secret)
    with pytest.raises(ZooError, match=rf"{names[3]}: trial folder not read \(params.json: a symbolic link to "
                                       rf"{secret}, not a regular file"):
        import_modelzoo(src, tmp_path / "a.zoo", dataset="mnist", workers=1)
    report = import_modelzoo(src, tmp_path / "b.zoo", dataset="mnist", workers=1, skip_incomplete=True)
    assert report.skipped_models == [names[3]]


def test_links_and_fifos_in_inr_and_small_cnn_zoo_folders_are_refused(sc_template, tmp_path, capsys):
    from builders.importers import import_inr, import_smallcnnzoo
    src = tmp_path / "mnist-inrs"
    file = src / "mnist_png_training_1_0" / "checkpoints" / "model_final.pth"
    file.parent.mkdir(parents=True)
    os.mkfifo(file)
    with pytest.raises(ZooError, match=r"model_final.pth: a FIFO \(named pipe\), not a regular file; not read"):
        import_inr(src, tmp_path / "a.zoo", convention="dwsnets")
    file.unlink()
    elsewhere = tmp_path / "elsewhere.pth"
    torch.save({"seq.0.weight": torch.zeros(4, 2)}, elsewhere)
    file.symlink_to(elsewhere)
    with pytest.raises(ZooError, match=rf"model_final.pth: a symbolic link to {elsewhere}, not a regular file"):
        import_inr(src, tmp_path / "a.zoo", convention="dwsnets")
    fmnist = tmp_path / "fmnist_inrs"
    (fmnist / "train").mkdir(parents=True)
    os.mkfifo(fmnist / "train" / "model_0.pth")
    assert main(["import", "inr", str(fmnist), str(tmp_path / "b.zoo"), "--convention", "dwsnets"]) == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert "model_0.pth: a FIFO (named pipe), not a regular file; not read" in err

    sc = tmp_path / "mnist"
    shutil.copytree(sc_template, sc)
    (tmp_path / "weights.npy").write_bytes((sc / "weights.npy").read_bytes())
    (sc / "weights.npy").unlink()
    (sc / "weights.npy").symlink_to(tmp_path / "weights.npy")
    with pytest.raises(ZooError, match=r"weights.npy: a symbolic link to .*, not a regular file; not read"):
        import_smallcnnzoo(sc, tmp_path / "c.zoo")
    (sc / "weights.npy").unlink()
    os.mkfifo(sc / "weights.npy")
    with pytest.raises(ZooError, match=r"weights.npy: a FIFO \(named pipe\), not a regular file"):
        import_smallcnnzoo(sc, tmp_path / "c.zoo")


@pytest.mark.parametrize("entry, message", [
    ("/etc/passwd", r"line 2: entry '/etc/passwd': expected a file name relative to"),
    ("../../../secret.JPEG", r"line 2: entry '../../../secret.JPEG': resolves to .*, outside"),
    ("val_fifo.JPEG", r"val_fifo.JPEG: a FIFO \(named pipe\), not a regular file"),
    ("val_link.JPEG", r"line 2: entry 'val_link.JPEG': resolves to .*secret.JPEG, outside"),
    ("val_inside.JPEG", r"val_inside.JPEG: a symbolic link to .*val_0.JPEG, not a regular file")])
def test_tiny_imagenet_annotations_stay_inside_the_folder(tmp_path, entry, message):
    from PIL import Image

    from builders.data import load_image_data
    base = tmp_path / "tiny-imagenet-200"
    (base / "train" / "n01" / "images").mkdir(parents=True)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(base / "train" / "n01" / "images" / "n01_0.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(image).save(base / "val" / "images" / "val_0.JPEG")
    Image.fromarray(image).save(tmp_path / "secret.JPEG")
    os.mkfifo(base / "val" / "images" / "val_fifo.JPEG")
    (base / "val" / "images" / "val_link.JPEG").symlink_to(tmp_path / "secret.JPEG")
    (base / "val" / "images" / "val_inside.JPEG").symlink_to(base / "val" / "images" / "val_0.JPEG")
    (base / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\tn01\t0\t0\t1\t1\n{entry}\tn01\t0\t0\t1\t1\n")
    with pytest.raises(ZooError, match=message):
        load_image_data({"name": "tiny-imagenet", "root": str(tmp_path), "download": False})


def test_tiny_imagenet_annotation_of_an_unknown_class_names_the_line(tmp_path):
    from builders.data import load_image_data
    base = tmp_path / "tiny-imagenet-200"
    (base / "train" / "n01" / "images").mkdir(parents=True)
    (base / "val").mkdir()
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\n")
    with pytest.raises(ZooError, match=r"val_annotations.txt: line 1: class 'n99' is not one of the 1 folders"):
        load_image_data({"name": "tiny-imagenet", "root": str(tmp_path), "download": False})


# --- property tests: mutated checkpoints ---------------------------------------------------------------------------
BASE = base_checkpoint()
with zipfile.ZipFile(io.BytesIO(BASE)) as _z:
    BASE_PKL = _z.read(next(n for n in _z.namelist() if n.endswith("/data.pkl")))
#: Derandomized (as tests/test_fuzz.py): CI replays the examples a developer ran; explore with --hypothesis-seed.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutate(data: bytes, draw) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF, ord("r"), ord("c"), ord("R"), ord("."), 0x93]))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        else:
            del out[at:]
    return bytes(out)


def _read_all_ways(data: bytes, tmp: Path) -> None:
    """The reader, the pre-torch check, and the importer's boundary: a state dict, or their own errors only."""
    try:
        torchfile.load(data)  # any value made of plain containers and arrays: the boundary below wants a state dict
    except (torchfile.Unreadable, torchfile.Unsupported):
        pass
    try:
        torchfile.check_for_torch(data)
    except torchfile.Unreadable:
        pass
    file = tmp / "mutated.pth"
    file.write_bytes(data)
    size, why = torchfile.scan_check(file)
    assert size == len(data) and (why is None or isinstance(why, str))
    try:
        sd = statedicts.load_state_dict(file)
        assert all(isinstance(v, np.ndarray) for v in sd.values())
    except ZooError as e:
        assert "weights_only=False" not in str(e) and "\n" not in str(e)


@FUZZ
@given(data=st.data())
def test_mutated_archives_are_read_or_refused_by_the_readers_own_errors(tmp_path, data):
    _read_all_ways(_mutate(BASE, data.draw), tmp_path)


@FUZZ
@given(data=st.data())
def test_mutated_pickles_in_a_rebuilt_archive_never_run_code(tmp_path, data):
    marker = tmp_path / "MARKER"
    pickled = bytearray(_mutate(BASE_PKL, data.draw))
    if data.draw(st.booleans()):  # a payload spliced in somewhere
        payload = data.draw(st.sampled_from([system_pickle(marker), open_pickle(marker),
                                             stack_global_pickle(marker)]))[2:-1]
        at = data.draw(st.integers(0, len(pickled)))
        pickled[at:at] = payload
    _read_all_ways(with_pickle(BASE, bytes(pickled)), tmp_path)
    assert not marker.exists()
