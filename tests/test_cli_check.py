"""``zoo architectures --check NAME``: the derived spec, its notes and the function-preservation check."""

from __future__ import annotations

import json

import pytest

from zoo.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_vit(capsys):
    code, out, err = run(capsys, "architectures", "--check", "vit", "--in-shape", "1,8,8", "--option", "layers=1",
                         "--option", "width=16", "--option", "mlp=32", "--option", "heads=2")
    assert code == 0 and err == ""
    assert out.startswith("vit on 1x8x8 inputs, 10 classes: ")
    prefix = "encoder.layers.encoder_layer_0"
    for group in (f"{prefix}.self_attention.heads: 2 units", f"{prefix}.self_attention.qk: 8 units",
                  f"{prefix}.self_attention.v: 8 units", f"{prefix}.mlp.0: 32 units", "conv_proj: 16 units"):
        assert f"  {group}, fixed, allows permute" in out
    assert "not permuted: nothing beyond the input and output axes" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.endswith(("PASS", "FAIL"))
             or "nothing to draw" in line}
    assert lines["permute"][2] == "PASS" and float(lines["permute"][1]) < 1e-12
    assert "(no group allows it: nothing to draw)" in " ".join(lines["rescale"])


def test_check_torchvision_resnet18_json(capsys):
    code, out, _ = run(capsys, "architectures", "--check", "torchvision:resnet18", "--in-shape", "3,32,32", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["params"] == 11_181_642 and report["notes"] == []
    assert report["architecture"]["name"] == "torchvision:resnet18"
    assert report["groups"][0].startswith("conv1: 64 units, relu, allows permute/rescale")
    assert len(report["groups"]) == 12  # the stem's stream, one per block's inner conv, one per downsampled stream
    assert {k: (c["ok"], c["drawn"]) for k, c in report["checks"].items()} == {
        "permute": (True, True), "rescale": (True, True), "signflip": (True, False)}


def test_check_factory_prints_what_it_does_not_permute(capsys, tmp_path, monkeypatch):
    (tmp_path / "wz_check_nets.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, in_shape, num_classes, width):\n"
        "        super().__init__()\n"
        "        self.a = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], width)\n"
        "        self.b = nn.Linear(width, width)\n"
        "        self.c = nn.Linear(width, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        x = torch.relu(self.a(x.flatten(1)))\n"
        "        return self.c(torch.cumsum(self.b(x), dim=1))\n\n"
        "def make_net(in_shape, num_classes, width=16):\n"
        "    return Net(in_shape, num_classes, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "architectures", "--check", "wz_check_nets:make_net", "--dataset", "digits",
                       "--kwargs", '{"width": 8}')
    assert code == 0
    assert "wz_check_nets:make_net on 1x8x8 inputs, 10 classes: 682 parameters" in out
    assert "  a: 8 units, relu, allows permute/rescale, 3 tensor axes" in out
    assert "not permuted (1 note(s)):\n  b: not permuted (function cumsum is not understood)" in out


def test_check_fails_with_exit_code_1(capsys, monkeypatch):
    import zoo.architectures.check as check

    monkeypatch.setattr(check, "preservation_error", lambda *a, **k: 0.5)
    code, out, _ = run(capsys, "architectures", "--check", "mlp", "--in-shape", "1,4,4", "--option", "hidden=[4]")
    assert code == 1
    assert "  permute   5.00e-01  FAIL" in out


@pytest.mark.parametrize("argv,message", [
    (["--check", "resnet-19"], r"zoo architectures: error: unknown architecture: got 'resnet-19'; allowed: cnn-l, "
                               r"cnn-s, mlp, resnet, resnet18, siren, smallcnn, vit \(did you mean 'resnet18'\?\); "
                               r"or 'torchvision:NAME'"),
    (["--check", "torchvision:resnet19"], r"torchvision:resnet19: not a classification model of torchvision.models"),
    (["--check", "mlp", "--kwargs", "{}"], r"--kwargs: 'mlp' is a registered architecture; give its options as "
                                           r"--option KEY=VALUE"),
    (["--check", "mlp", "--in-shape", "1,8"], r"--in-shape: got '1,8'; expected three positive integers C,H,W"),
    (["--check", "mlp", "--option", "hidden"], r"--option: got 'hidden'; expected KEY=VALUE"),
    (["--check", "mlp", "--option", "widht=3"], r"field 'architecture.widht': unknown option of 'mlp'"),
    (["--check", "torchvision:resnet18", "--kwargs", "[1]"], r"--kwargs: expected a JSON object"),
    (["--in-shape", "1,8,8"], r"--in-shape goes with --check NAME"),
])
def test_check_errors(capsys, argv, message):
    import re

    code, out, err = run(capsys, "architectures", *argv)
    assert code == 2 and out == ""
    assert re.search(message, err), err
