"""Every ```python block of README.md and of the pages under docs/ runs as written, alone, in a fresh
interpreter.

Each block runs as ``python -c BLOCK`` in a temp folder holding the data the pages name: ``quickstart.zoo``
(the quickstart manifest's store, random rows, no training), ``my-zoo-hf/`` (its Hugging Face export),
``smallcnnzoo/cifar10/`` (a tiny Small CNN Zoo folder, from the importer tests' writer) and ``manifests/`` (the
repository's, as in a clone). The S3 block reads ``s3://my-bucket/zoos/quickstart.zoo`` from a moto server on
127.0.0.1, on a free port that replaces the block's example endpoint. Nothing is downloaded: the Hub is offline
(``HF_HUB_OFFLINE``) and every cache lives in the temp folder. A block whose first line is ``# needs: network``
is skipped with that reason; none is, today. The toml block labelled ``manifests/quickstart.toml`` is that file
with comments added.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fill_units
from test_importers import write_smallcnnzoo

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The README and every page under docs/: their blocks run alike.
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: How many ```python blocks the pages hold: a block cannot vanish (or appear untested) unnoticed.
EXPECTED_BLOCKS = 12
#: The S3 block's example endpoint (a MinIO on this machine), replaced by the moto server's.
S3_ENDPOINT = "http://127.0.0.1:9000"
S3_STORE = "my-bucket/zoos/quickstart.zoo"
#: Imported modules that come from an extra rather than the core install: module -> extra.
EXTRAS = {"datasets": "hf", "s3fs": "s3"}


def fenced_blocks(language: str, page: Path = README) -> list[tuple[int, str]]:
    """(line number of the block's first line, its text) for every ```language block of ``page``."""
    lines = page.read_text().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append((start + 1, "\n".join(lines[start:number - 1]) + "\n"))
            start = None
    assert start is None, f"{page.name}:{start}: unclosed ```{language} block"
    return blocks


#: (where, source) of every ```python block of every page.
BLOCKS = [(f"{page.relative_to(ROOT)}:{line}", source)
          for page in PAGES for line, source in fenced_blocks("python", page)]


def test_every_python_block_is_collected():
    assert len(BLOCKS) == EXPECTED_BLOCKS, [line for line, _ in BLOCKS]


def _code(line: str) -> str:
    """A TOML line without its comment (a '#' outside a string) and trailing blanks."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip()
    return line.rstrip()


def test_the_quickstart_manifest_block_is_the_file_with_comments_added():
    label = "This is `manifests/quickstart.toml`, with\ncomments added"
    page = next(p for p in PAGES if label in p.read_text())
    text = page.read_text()
    label_line = text[:text.index(label)].count("\n") + 1
    block = next(b for line, b in fenced_blocks("toml", page) if line > label_line)
    source = (ROOT / "manifests" / "quickstart.toml").read_text()
    assert tomllib.loads(block) == tomllib.loads(source)

    def code_lines(t: str) -> list[str]:
        return [c for c in map(_code, t.splitlines()) if c]

    assert code_lines(block) == code_lines(source)  # the same lines in the same order; comments are the README's


# --- the data the blocks name ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The folder a reader would run the blocks in, made once: each block gets its own copy."""
    import zoo
    from loaders.hub import export_hf
    from zoo.manifest import load_manifest

    root = tmp_path_factory.mktemp("readme-data")
    writer = zoo.create(root / "quickstart.zoo", load_manifest(ROOT / "manifests" / "quickstart.toml"))
    fill_units(writer, writer.plan.units)
    export_hf(root / "quickstart.zoo", root / "my-zoo-hf")
    # one run crashed before its last checkpoint, as in the published CIFAR-10 folder (skip_incomplete=True)
    write_smallcnnzoo(root / "smallcnnzoo" / "cifar10", dataset="cifar10", drop={(2, 3)})
    (root / "manifests").symlink_to(ROOT / "manifests", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def s3_endpoint(data) -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1 holding s3://my-bucket/zoos/quickstart.zoo."""
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    fs = s3fs.S3FileSystem(endpoint_url=url, key="testing", secret="testing", skip_instance_cache=True)
    fs.mkdir(S3_STORE.split("/")[0])
    fs.put(str(data / "quickstart.zoo"), S3_STORE, recursive=True)
    assert fs.exists(f"{S3_STORE}/zarr.json")
    yield url
    server.stop()


def _needs(source: str) -> str | None:
    """Why a block cannot run here, or None: its `# needs:` line, or an extra that is not installed."""
    first = source.splitlines()[0]
    if first.startswith("# needs:"):
        need = first.removeprefix("# needs:").strip()
        assert need == "network", f"unknown need {need!r}: only Hub blocks that need the network may be skipped"
        return f"marked '{first}' in the documentation: it talks to the Hugging Face Hub"
    for module in re.findall(r"^\s*(?:from|import)\s+(\w+)", source, re.M):
        if module in EXTRAS and importlib.util.find_spec(module) is None:
            return f"needs the '{EXTRAS[module]}' extra ({module} is not installed)"
    return None


def _s3(source: str) -> bool:
    return "s3://my-bucket/" in source


@pytest.mark.slow  # a fresh interpreter per block: ~5 s each, most of it importing torch
@pytest.mark.parametrize("source", [pytest.param(s, id=where, marks=[pytest.mark.s3] if _s3(s) else [])
                                    for where, s in BLOCKS])
def test_python_block_runs_as_written(source, data, tmp_path, request):
    why = _needs(source)
    if why:
        pytest.skip(why)
    if _s3(source):
        assert S3_ENDPOINT in source
        source = source.replace(S3_ENDPOINT, request.getfixturevalue("s3_endpoint"))
    cwd = tmp_path / "readme"
    shutil.copytree(data, cwd, symlinks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "FSSPEC_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
            "WEIGHTZOO_CACHE": str(tmp_path / "weightzoo-cache"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    for noise in ("Traceback", "Exception ignored"):  # a worker or finalizer failing without failing the run
        assert noise not in done.stderr, done.stderr[-4000:]
