"""Remote stores against real endpoints on 127.0.0.1: S3 (moto's server mode) for builds, verify, the CLI and
the loaders (DataLoader workers under fork and spawn), and plain HTTP with range requests for read-only use."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import logging
import os
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_zoo, fill_units
from torch.utils.data import DataLoader

import zoo
from builders import build
from loaders import ZooDataset, ZooStream
from zoo.cli import main

pytestmark = pytest.mark.s3

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "weightzoo-test"
# 4 models in groups of 2, checkpoints at epochs 0, 1, 2: 2 groups, 6 units
MANIFEST = """
[zoo]
name = "s3tiny"
[dataset]
name = "digits"
resize = 4
val_size = 100
[architecture]
name = "mlp"
hidden = [8]
[training]
optimizer = "sgd"
lr = 0.05
batch_size = 64
train_fraction = 0.3
epochs = 2
[population]
seeds = [1, 2]
[population.grid]
"architecture.activation" = ["relu", "tanh"]
[checkpoints]
epochs = [0, 1, 2]
"""


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free port, found by boto through the environment (as a user's would be)."""
    log = logging.getLogger("werkzeug")
    level = log.level
    log.setLevel(logging.WARNING)  # not a line per request in failure reports
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # instances are cached by arguments, not by environment
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield url
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
    log.setLevel(level)


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def stores(endpoint, tmp_path_factory):
    """The same zoo built locally, and on S3 by the CLI in two runs: shard 0/2, then the rest after one unit of
    group 0 was removed (as if its writer died before committing it). Returns (local path, URL, both summaries)."""
    tmp = tmp_path_factory.mktemp("s3")
    manifest = tmp / "s3tiny.toml"
    manifest.write_text(MANIFEST)
    local = tmp / "local.zoo"
    build(manifest, local, device="cpu", group_size=2, quiet=True)
    url = f"s3://{BUCKET}/tiny.zoo"
    args = [str(manifest), "-o", url, "--device", "cpu", "--group-size", "2", "--quiet", "--json"]
    summaries = []
    for extra in (["--shard", "0/2"], []):
        if not extra:  # group 0's last unit goes: the group resumes mid-way, with no saved state on S3
            (last,) = [u for u in zoo.open(url).plan.units if u.group == 0 and u.epoch == 2]
            s3fs.S3FileSystem().rm(f"{BUCKET}/tiny.zoo/metadata/{zoo.store.format.fragment_name(last.unit_id)}")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["build", *args, *extra]) == 0
        summaries.append(json.loads(buf.getvalue()))
    return local, url, summaries


def test_build_on_s3_resumes_and_equals_a_local_build(stores):
    local, url, (first, second) = stores
    assert (first["units_written"], first["units_skipped"]) == (3, 0)  # shard 0/2: group 0
    # then: group 0 retrains from its initialization and writes only the unit removed; group 1 is new
    assert (second["units_written"], second["units_skipped"]) == (4, 2)
    assert second["store"] == url
    remote = zoo.open(url)
    assert remote.local is None and remote.reader(remote.arch_ids[0]).remote is not None  # ranged reads
    assert_same_zoo(zoo.open(local), remote)


class _Counting:
    """A filesystem proxy that records the byte ranges of each ``cat_ranges`` call."""

    def __init__(self, fs) -> None:
        self.fs, self.calls = fs, []

    def cat_ranges(self, paths, starts, ends, **kwargs):
        self.calls.append(list(zip(paths, starts, ends)))
        return self.fs.cat_ranges(paths, starts, ends, **kwargs)


def test_ranged_reads_match_the_local_store_with_few_requests(stores):
    local, url, _ = stores
    ref, remote = zoo.open(local), zoo.open(url)
    arch = ref.arch_ids[0]
    n, g = ref.weights(arch).shape[0], ref.plan.group_size
    reader = remote.reader(arch)
    fs = _Counting(reader.remote[0])
    reader.remote = (fs, reader.remote[1])
    everything = reader.read(np.arange(n))  # a fresh reader: each shard fetched whole, index included
    assert np.array_equal(everything.view(np.uint32), ref.read_rows(arch, np.arange(n)).view(np.uint32))
    assert [len(c) for c in fs.calls] == [n // g] and all(s == 0 and e is None for _, s, e in fs.calls[0])
    rng = np.random.default_rng(0)
    for rows in ([], [5], [3, 3, 0, 11, 3], rng.integers(0, n, 40), rng.permutation(n)):
        fs.calls.clear()
        got = reader.read(rows)
        assert np.array_equal(got.view(np.uint32), ref.read_rows(arch, rows).view(np.uint32))
        shards = len(set((np.asarray(rows, dtype=int) // g).tolist()))
        assert sum(len(c) for c in fs.calls) == shards and len(fs.calls) == (1 if shards else 0)  # one per shard


def test_status_info_verify_and_compact_on_s3(stores, capsys):
    local, url, _ = stores
    code, out = run(capsys, "status", url, "--json")
    assert code == 0 and json.loads(out)["complete"] is True and json.loads(out)["units_done"] == 6
    code, out = run(capsys, "info", url, "--json")
    info = json.loads(out)
    assert code == 0 and info["checkpoints"] == 12 and info["store"] == url and info["bytes"] > 0
    code, out = run(capsys, "verify", url)
    assert code == 0 and "12 checkpoints checked, ok" in out

    fs = s3fs.S3FileSystem()
    copy = f"s3://{BUCKET}/compacted.zoo"
    fs.copy(f"{BUCKET}/tiny.zoo", copy[5:], recursive=True)
    before = zoo.open(copy).metadata
    code, out = run(capsys, "compact", copy)
    assert code == 0 and "merged 6 metadata fragment(s)" in out
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{copy[5:]}/metadata", refresh=True)]
    assert len(names) == 1 and names[0].startswith("part-")
    assert zoo.open(copy).metadata.equals(before)
    assert run(capsys, "verify", copy)[0] == 0


def test_verify_names_the_checkpoint_whose_shard_object_changed(stores, capsys):
    _, url, _ = stores
    fs = s3fs.S3FileSystem()
    damaged = f"s3://{BUCKET}/damaged.zoo"
    fs.copy(url[5:], damaged[5:], recursive=True)
    z = zoo.open(damaged)
    meta = z.metadata.to_pylist()
    target = next(r for r in meta if r["model_id"] == 3 and r["epoch"] == 1)
    array = z.weights(target["arch"])
    g = z.plan.group_size
    key = f"{damaged[5:]}/{array.path}/{array.metadata.encode_chunk_key((target['row'] // g, 0))}"
    blob = bytearray(fs.cat(key))
    index = np.frombuffer(bytes(blob[-(g * 16 + 4):-4]), dtype="<u8").reshape(g, 2)
    blob[int(index[target["row"] % g, 0]) + 4 * 5] ^= 0x01  # one bit of the row's sixth float
    fs.pipe(key, bytes(blob))
    code, out = run(capsys, "verify", damaged)
    assert code == 1
    assert re.search(r"damaged: model 3 epoch 1 \(mlp row \d+\): checksum \d+ != recorded \d+", out), out
    assert "FAILED: 1 damaged checkpoint(s)" in out


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loaders_stream_from_s3_with_workers(stores, context):
    """Every checkpoint once per epoch, bit for bit the local store's, through 2 workers of each start method
    (forked workers reopen the store: the parent's S3 clients live on an event loop the child lacks). Under
    spawn both classes pickle the same ``Zoo``, so the stream alone is checked there (a spawned worker
    costs seconds of imports)."""
    local, url, _ = stores
    ref = zoo.open(local)
    arch = ref.arch_ids[0]
    expected = {(m, e): ref.read_rows(arch, [r])[0] for m, e, r in zip(
        *(ref.metadata.column(c).to_pylist() for c in ("model_id", "epoch", "row")))}

    stream = ZooStream(url, targets=("epoch",), batch_size=5, buffer_size=6)
    stream.zoo.read_rows(stream.arch, [0])  # the parent's clients exist before the workers start
    loaders = [DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context=context)]
    if context == "fork":
        ds = ZooDataset(url, targets=("epoch",))
        ds.zoo.read_rows(ds.arch, [0])
        loaders.append(DataLoader(ds, batch_size=5, shuffle=True, num_workers=2, multiprocessing_context=context,
                                  collate_fn=ds.collate))
    for loader in loaders:
        seen = Counter()
        for batch in loader:
            for w, m, e in zip(batch["weights"], batch["model_id"].tolist(), batch["epoch"].tolist()):
                seen[(m, int(e))] += 1
                assert np.array_equal(w.numpy().view(np.uint32), expected[(m, int(e))].view(np.uint32))
        assert seen == Counter(expected.keys())


def test_storage_options_instead_of_environment(stores, capsys, monkeypatch):
    local, url, _ = stores
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    z = zoo.open(url, storage_options=options)
    assert z.metadata.num_rows == 12
    ds = ZooDataset(url, storage_options=options, epochs=[2])
    batch = ds.collate(ds.__getitems__([0, 1]))
    ref = zoo.open(local)
    assert torch.equal(batch["weights"], torch.from_numpy(ref.read_rows(ds.arch, ds.rows[:2])))
    code, out = run(capsys, "status", url, "--json", "--storage-option", f"endpoint_url={endpoint}",
                    "--storage-option", "key=testing", "--storage-option", "secret=testing")
    assert code == 0 and json.loads(out)["checkpoints_done"] == 12
    code, out = run(capsys, "info", url, "--storage-option", "endpoint_url")
    assert code == 2 and "--storage-option 'endpoint_url': expected KEY=VALUE" in out


def test_refresh_sees_units_committed_through_another_client(endpoint, manifest):
    """A reader's cached listing of metadata/ must not hide fragments that another writer (process, machine)
    committed since: ``refresh`` (and every fresh metadata read) lists again."""
    url = f"s3://{BUCKET}/refresh.zoo"
    writer = zoo.create(url, manifest, group_size=3)
    fill_units(writer, writer.plan.units[:2])
    reader = zoo.open(url)
    assert reader.done_units() == {0, 1}
    other = zoo.store.ZooWriter(url, storage_options={"skip_instance_cache": True})  # its own S3 client
    written = fill_units(other, writer.plan.units[2:4], seed=1)
    reader.refresh()
    assert reader.done_units() == {0, 1, 2, 3}
    u = writer.plan.units[3]
    rows = reader.reader(u.arch_id)
    fs = rows.remote = _Counting(rows.remote[0]), rows.remote[1]
    assert np.array_equal(reader.read_rows(u.arch_id, [u.row_start + 1]), written[u.unit_id][[1]])
    # one row of three: the shard's index (a suffix range), then the row's bytes, not the whole object
    offset = int(rows._offsets[u.row_start // 3, 1]) * 4
    assert [[(s, e) for _, s, e in c] for c in fs[0].calls] == [[(-(3 * 16 + 4), None)],
                                                                [(offset, offset + 4 * rows.width)]]


def test_create_errors_on_s3(endpoint, manifest, capsys):
    with pytest.raises(zoo.StoreError, match=r"s3://no-such-bucket/x.zoo: cannot create a store here "
                                             r"\(FileNotFoundError: .*bucket does not exist"):
        zoo.create("s3://no-such-bucket/x.zoo", manifest)
    s3fs.S3FileSystem().pipe(f"{BUCKET}/notes/readme.txt", b"not a zoo")
    with pytest.raises(zoo.StoreError, match=r"s3://weightzoo-test/notes: exists and is not a weightzoo store"):
        zoo.create(f"s3://{BUCKET}/notes", manifest)
    code, out = run(capsys, "info", f"s3://{BUCKET}/missing.zoo")
    assert code == 2 and f"s3://{BUCKET}/missing.zoo: no weightzoo store here" in out and "AWS_ENDPOINT_URL" in out


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers byte-range requests (206), as object stores and CDNs do."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        spec = self.headers.get("Range")
        if spec is None or os.path.isdir(path):
            return super().send_head()
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        first, last = re.fullmatch(r"bytes=(\d*)-(\d*)", spec).groups()
        start = max(0, len(data) - int(last)) if first == "" else int(first)
        end = len(data) if first == "" or last == "" else min(len(data), int(last) + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        return io.BytesIO(data[start:end])


def test_read_only_store_over_http(stores):
    """https:// (here http:// on 127.0.0.1): a store served as static files, read in place."""
    local, _, _ = stores
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_RangeHandler, directory=str(local.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{local.name}"
        remote = zoo.open(url)
        assert remote.reader(remote.arch_ids[0]).remote is not None
        assert_same_zoo(zoo.open(local), remote)
        assert zoo.verify(remote).ok
        batch = next(iter(DataLoader(ZooStream(url, batch_size=12, shuffle=False), batch_size=None)))
        assert batch["weights"].shape == (12, remote.layout(remote.arch_ids[0]).size)
    finally:
        server.shutdown()
        server.server_close()
