"""The ``zoo`` command: JSON outputs, human tables, exit codes and error lines."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import Importer, main

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_json(capsys):
    code, out, _ = run(capsys, "plan", str(MANIFESTS / "modelzoo" / "mnist-hyp-10-fixed.toml"), "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["models"] == 2560
    assert plan["checkpoints"] == 2560 * 51
    assert plan["architectures"] == {"cnn-s": 2464}
    assert plan["store_bytes"] == 2560 * 51 * 2464 * 4


def test_plan_table(capsys):
    code, out, _ = run(capsys, "plan", str(MANIFESTS / "modelzoo" / "resnet18-cifar10.toml"))
    assert code == 0
    assert "models             1,000" in out
    assert "  resnet18         11,173,962 parameters, row of 11,183,562 floats" in out


def test_bad_manifest_exit_code_and_message(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[zoo]\nname = "x"\n[dataset]\nname = "mnist"\n[architecture]\nname = "cnn-s"\n'
                    '[training]\nepochs = 2\n[population]\nseeds = [1]\n[checkpoints]\nepochs = [0, 3]\n')
    code, out, err = run(capsys, "plan", str(path))
    assert code == 2 and out == ""
    assert err.strip() == (f"zoo plan: error: {path}: field 'checkpoints.epochs': got 3; epochs are integers in the "
                           "inclusive range [0, 2] (0 = initialization)")


def test_info_status_verify(capsys, filled):
    writer, _ = filled
    code, out, _ = run(capsys, "info", writer.url, "--json")
    info = json.loads(out)
    assert code == 0
    assert info["checkpoints"] == info["checkpoints_planned"] == 60
    assert info["architectures"]["mlp"]["params"] == writer.layout("mlp").num_params
    assert info["status"] == {"ok": 60}
    acc = writer.metadata.column("test_acc").to_pylist()
    assert info["test_acc"] == {"min": min(acc), "max": max(acc)}
    code, out, _ = run(capsys, "status", writer.url, "--json")
    assert json.loads(out)["units_done"] == json.loads(out)["units_total"] == len(writer.plan.units)
    code, out, _ = run(capsys, "status", writer.url)
    assert f"{len(writer.plan.units)} / {len(writer.plan.units)} done (100.0%)" in out
    code, out, _ = run(capsys, "verify", writer.url)
    assert code == 0 and out.strip().endswith("60 checkpoints checked, ok")
    code, out, _ = run(capsys, "compact", writer.url)
    assert code == 0 and f"merged {len(writer.plan.units)} metadata fragment(s)" in out
    code, out, _ = run(capsys, "info", writer.url)
    assert "60 of 60" in out


def test_missing_store(capsys, tmp_path):
    code, _, err = run(capsys, "status", str(tmp_path / "none.zoo"))
    assert code == 2
    assert "none.zoo: no weightzoo store here" in err


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bulid"])
    assert e.value.code == 2


def test_one_command_table_drives_the_parser():
    from zoo.cli import COMMANDS, IMPORTERS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [c.name for c in COMMANDS.values()]
    assert [c.name for c in COMMANDS.values()] == ["build", "plan", "info", "status", "verify", "compact",
                                                   "architectures", "report", "import", "export", "push", "task"]
    sources = next(a for a in sub.choices["import"]._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sources.choices) == IMPORTERS.names() == ["hf", "inr", "modelzoo", "smallcnnzoo"]
    for source in IMPORTERS.values():  # every importer under the one protocol
        assert isinstance(source, Importer) and sources.choices[source.name].description == source.help


def test_info_explains_padded_rows(capsys, filled):
    writer, _ = filled  # 20 models in 2 structures of 10: groups of 3, 3, 3, 1 each; 3 checkpoint epochs
    code, out, _ = run(capsys, "info", writer.url, "--json")
    info = json.loads(out)
    a = info["architectures"]["mlp"]
    assert code == 0 and (a["rows"], a["rows_planned"], a["rows_padding"]) == (8 * 3 * 3, 20 * 3, 8 * 3 * 3 - 60)
    assert "padding (rows_padding)" in info["rows_note"] and "group_size = 3 rows" in info["rows_note"]
    code, out, _ = run(capsys, "info", writer.url)
    assert "72 rows of" in out and "floats (60 for checkpoints, 12 padding)" in out


def test_quiet_hides_the_progress_bar_not_the_summary(capsys, tmp_path):
    manifest = tmp_path / "q.toml"
    manifest.write_text('[zoo]\nname = "q"\n[dataset]\nname = "digits"\nresize = 8\n[architecture]\nname = "mlp"\n'
                        'hidden = [4]\n[training]\nepochs = 1\nbatch_size = 256\n[population]\nseeds = [1, 2]\n')
    code, out, err = run(capsys, "build", str(manifest), "-o", str(tmp_path / "q.zoo"), "--quiet", "--device", "cpu")
    assert code == 0 and err == ""  # no progress bar
    assert out.count("\n") == 1 and ": wrote 2 unit(s), skipped 0 already committed; 2 model-epochs in" in out


def test_closed_pipe_exits_quietly(tmp_path):
    """`zoo ... --json | head`: the reader goes away; no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo.cli", "architectures", "--json"], stdout=write,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr.decode()) == (141, "")


@pytest.mark.parametrize("argv,absent", [
    (["--help"], ("torch", "builders", "loaders", "tasks")),
    (["import", "--help"], ("torch", "builders", "loaders")),
    (["task", "run", "--help"], ("torch", "builders", "loaders", "tasks", "sklearn")),
    (["info", "STORE"], ("torch", "torchvision", "builders", "loaders")),
    (["status", "STORE", "--json"], ("torch", "torchvision", "builders", "loaders")),
])
def test_light_commands_import_nothing_heavy(argv, absent, filled):
    writer, _ = filled
    argv = [writer.url if a == "STORE" else a for a in argv]
    code = ("import sys\nfrom zoo.cli import main\ntry:\n    code = main(%r)\nexcept SystemExit as e:\n"
            "    code = e.code\nprint(code, sorted(m for m in %r if m in sys.modules), file=sys.stderr)\n"
            % (argv, absent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "0 []"
