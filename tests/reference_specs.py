"""The hand-written symmetry tables the registered architectures had before specs were derived (``derive.py``).

Kept as references only: ``test_derive.py`` proves the derived spec of every registered architecture equals its
table here (up to group names). New architectures get no table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zoo.layout import Layout


def conv(name: str, p_in: str | None, p_out: str | None, bias: bool = True) -> dict[str, tuple]:
    """Table entries of a Conv2d: weight (out, in, kh, kw) with spatial axes never permuted, and its bias."""
    axes: dict[str, tuple] = {f"{name}.weight": (p_out, p_in, None, None)}
    if bias:
        axes[f"{name}.bias"] = (p_out,)
    return axes


def dense(name: str, p_in: str | None, p_out: str | None, bias: bool = True) -> dict[str, tuple]:
    """Table entries of a Linear layer; ``p_in`` may carry a repeat (``"P3*9"``) when it reads a flattened map."""
    axes: dict[str, tuple] = {f"{name}.weight": (p_out, p_in)}
    if bias:
        axes[f"{name}.bias"] = (p_out,)
    return axes


def norm(name: str, p: str | None) -> dict[str, tuple]:
    """Table entries of a BatchNorm: affine parameters and running statistics all follow the channel's unit."""
    return {f"{name}.{k}": (p,) for k in ("weight", "bias", "running_mean", "running_var")}


def convnet_symmetry(layout: Layout, pools: Sequence[bool]) -> tuple[dict, dict]:
    n = len(pools)
    axes: dict[str, tuple] = {}
    nonlinearity: dict[str, str] = {}
    prev = None
    for i, pool in enumerate(pools, start=1):
        axes.update(conv(f"conv{i}", prev, f"C{i}"))
        nonlinearity[f"C{i}"] = "pool_act" if pool else "act"
        prev = f"C{i}"
    head = "fc1" if "fc1.weight" in layout else "fc"
    channels = layout[f"conv{n}.weight"].shape[0]
    per_channel = layout[f"{head}.weight"].shape[1] // channels  # flattened H*W (1 after global pooling)
    feature_axis = prev if per_channel == 1 else f"{prev}*{per_channel}"
    if head == "fc1":
        axes.update(dense("fc1", feature_axis, "H1"))
        axes.update(dense("fc2", "H1", None))
        nonlinearity["H1"] = "act"
    else:
        axes.update(dense("fc", feature_axis, None))
    return axes, nonlinearity


def mlp_symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    hidden = options["hidden"]
    perms = [None] + [f"H{i}" for i in range(1, len(hidden) + 1)] + [None]
    axes: dict[str, tuple] = {}
    for i in range(len(perms) - 1):
        axes.update(dense(f"fc{i + 1}", perms[i], perms[i + 1]))
    return axes, {p: "act" for p in perms if p}


def resnet_symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    axes: dict[str, tuple] = {}
    nonlinearity: dict[str, str] = {}
    stream = "S0"
    axes.update(conv("conv1", None, stream, bias=False))
    axes.update(norm("bn1", stream))
    nonlinearity[stream] = "relu"
    stage = 1
    while f"layer{stage}.0.conv1.weight" in layout:
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in layout:
            prefix, inner, out = f"layer{stage}.{block}", f"P{stage}.{block}", stream
            if f"{prefix}.downsample.0.weight" in layout:  # a new residual stream starts here
                out = f"S{stage}"
                axes.update(conv(f"{prefix}.downsample.0", stream, out, bias=False))
                axes.update(norm(f"{prefix}.downsample.1", out))
                nonlinearity[out] = "relu"
            axes.update(conv(f"{prefix}.conv1", stream, inner, bias=False))
            axes.update(norm(f"{prefix}.bn1", inner))
            axes.update(conv(f"{prefix}.conv2", inner, out, bias=False))
            axes.update(norm(f"{prefix}.bn2", out))
            nonlinearity[inner] = "relu"
            stream = out
            block += 1
        stage += 1
    axes.update(dense("fc", stream, None))
    return axes, nonlinearity


def siren_symmetry(layout: Layout, options: Mapping[str, Any]) -> tuple[dict, dict]:
    n = len(options["hidden"])
    perms = [None] + [f"H{i}" for i in range(1, n + 1)] + [None]
    axes: dict[str, tuple] = {}
    for i in range(n + 1):
        axes.update(dense(f"net.{i}", perms[i], perms[i + 1]))
    return axes, {p: "act" for p in perms if p}



POOLS = {"cnn-s": (True, True, False), "cnn-l": (True, True, True), "smallcnn": (False, False, False)}

#: Architecture name -> (layout, options) -> (axes, nonlinearity), as ``SymmetrySpec.build`` takes them.
def _convnet(pools: Sequence[bool]) -> Callable[[Layout, Mapping[str, Any]], tuple[dict, dict]]:
    return lambda layout, options: convnet_symmetry(layout, pools)


REFERENCES: dict[str, Callable[[Layout, Mapping[str, Any]], tuple[dict, dict]]] = {
    **{name: _convnet(pools) for name, pools in POOLS.items()},
    "mlp": mlp_symmetry,
    "resnet": resnet_symmetry,
    "resnet18": resnet_symmetry,
    "siren": siren_symmetry,
}
