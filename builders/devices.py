"""Which device a build trains on, and how its step runs there, decided without importing torch where possible.

``zoo plan`` answers in a fraction of a second on a machine without a GPU: the CPU needs no torch to be named, and
the step mode is a rule on (setting, device kind, steps). Asking torch about CUDA costs its import (seconds), so
that question is asked only where NVIDIA's device files exist.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

#: On CPU, ``auto`` compiles when a population runs at least this many steps: compiling costs tens of
#: seconds once per shape, and saves a few milliseconds per step.
CPU_COMPILE_MIN_STEPS = 20_000
#: ``--device`` values.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


class HasType(Protocol):
    """A device as far as planning needs one: ``torch.device`` or the torch-free CPU stand-in."""

    type: str


def cuda_hardware_present() -> bool:
    """False only when this host certainly has no CUDA device: Linux without NVIDIA's device files (``/dev/nvidia0``
    ..., or ``/dev/dxg`` under WSL2). Only plans use this shortcut; a build asks torch."""
    dev = Path("/dev")
    return not sys.platform.startswith("linux") or (dev / "dxg").exists() or any(dev.glob("nvidia[0-9]*"))


def resolve_device(device: str) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> the torch device, refusing CUDA where there is none."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError(f"device {device!r}: CUDA is not available on this machine; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ZooError(f"device {device!r}; allowed: {', '.join(DEVICE_CHOICES)}")
    return torch.device(device)


def plan_device(device: str) -> HasType | torch.device:
    """The device a plan describes: the CPU without importing torch when no GPU can be present."""
    if device == "cpu" or device == "auto" and not cuda_hardware_present():
        return _Cpu()
    return resolve_device(device)


class _Cpu:
    type = "cpu"

    def __str__(self) -> str:
        return "cpu"


def device_name(device: torch.device) -> str:
    """What the metadata's ``device`` column records: the GPU's name, or ``cpu``."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def choose_mode(setting: str, device: HasType, steps: int) -> str:
    """``training.compile`` (or the command line's override) -> the step mode for one population.

    ``off``: eager. ``on`` (``--compile``): compiled, captured on CUDA. ``auto``: captured on CUDA; on CPU
    compiled only when the population runs ``CPU_COMPILE_MIN_STEPS`` steps or more."""
    if setting == "off":
        return "eager"
    if device.type == "cuda":
        return "cuda-graph"
    if setting == "on" or steps >= CPU_COMPILE_MIN_STEPS:
        return "compiled"
    return "eager"
