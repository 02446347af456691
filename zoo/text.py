"""Numbers as people read them, for every text this library prints (``zoo status``/``info``, ``zoo report``):
one spelling of a size or an epoch list wherever it appears."""

from __future__ import annotations

from collections.abc import Sequence


def byte_size(n: float) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 KB``, ..., ``3.2 TB`` (never larger units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def epochs_text(epochs: Sequence[int]) -> str:
    """Checkpoint epochs: a run of more than three consecutive ones as ``first..last``, else listed."""
    epochs = list(epochs)
    if len(epochs) > 3 and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}..{epochs[-1]}"
    return ", ".join(map(str, epochs))
