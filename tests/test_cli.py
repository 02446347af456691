"""The ``zoo`` command: JSON outputs, human tables, exit codes and error lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.cli import main

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


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
                           "inclusive range (0, 2) (0 = initialization)")


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
