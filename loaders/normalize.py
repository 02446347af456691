"""Per-layer normalization of weights, with statistics from the train split only.

Weights of different layers live on very different scales (a BatchNorm
running variance near 1, a 3x3 conv kernel near 0.05), so learners normalize
each layer (here: each tensor of the layout) to zero mean and unit variance.
The statistics are fitted on train-split rows only (never on val/test), saved
as JSON, and inverted exactly enough (float32 affine map) to turn a generated,
normalized sample back into a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.layout import Layout

#: Tensors whose values barely vary get unit scale rather than a huge one.
MIN_STD = 1e-8


class Normalizer:
    """Per-tensor mean and std; ``apply`` maps rows to normalized rows, ``invert`` maps them back."""

    def __init__(self, layout: Layout, mean: Sequence[float], std: Sequence[float], rows: int = 0) -> None:
        if len(mean) != len(layout.tensors) or len(std) != len(layout.tensors):
            raise ZooError(f"normalization statistics cover {len(mean)} tensors; the layout has "
                           f"{len(layout.tensors)}")
        self.layout, self.rows = layout, rows
        self.mean = [float(m) for m in mean]
        self.std = [float(s) if s > MIN_STD else 1.0 for s in std]
        sizes = [t.size for t in layout.tensors]
        self._mean = torch.repeat_interleave(torch.tensor(self.mean, dtype=torch.float32), torch.tensor(sizes))
        self._scale = torch.repeat_interleave(torch.tensor(self.std, dtype=torch.float32), torch.tensor(sizes))

    @classmethod
    def fit(cls, read_rows, rows: np.ndarray, layout: Layout, max_rows: int = 10_000,
            chunk: int = 2048) -> Normalizer:
        """Statistics over ``rows`` (at most ``max_rows``, evenly spaced) read in chunks with ``read_rows``;
        float64 sums, so the result does not depend on the chunking."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            raise ZooError("normalization: the train split is empty; nothing to fit statistics on")
        if rows.size > max_rows:
            rows = rows[np.linspace(0, rows.size - 1, max_rows).round().astype(np.int64)]
        bounds = [(t.offset, t.stop) for t in layout.tensors]
        sums = np.zeros(len(bounds))
        squares = np.zeros(len(bounds))
        for start in range(0, rows.size, chunk):
            block = read_rows(rows[start:start + chunk]).astype(np.float64)
            for i, (lo, hi) in enumerate(bounds):
                part = block[:, lo:hi]
                sums[i] += part.sum()
                squares[i] += np.square(part).sum()
        counts = np.array([(hi - lo) * rows.size for lo, hi in bounds], dtype=np.float64)
        mean = sums / counts
        var = np.maximum(squares / counts - mean ** 2, 0.0)
        return cls(layout, mean.tolist(), np.sqrt(var).tolist(), rows=int(rows.size))

    def apply(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows (B, P) to zero mean and unit variance per tensor, on the rows' device and in their dtype."""
        return (rows - self._mean.to(rows.device, rows.dtype)) / self._scale.to(rows.device, rows.dtype)

    def invert(self, rows: torch.Tensor) -> torch.Tensor:
        """Undo ``apply``: normalized (e.g. generated) rows back to weights."""
        return rows * self._scale.to(rows.device, rows.dtype) + self._mean.to(rows.device, rows.dtype)

    def to_dict(self) -> dict:
        """JSON-ready statistics by tensor name, with ``rows``: how many train rows they were fitted on."""
        return {"kind": "per_tensor", "rows": self.rows,
                "tensors": {t.name: {"mean": m, "std": s} for t, m, s in zip(self.layout.tensors, self.mean,
                                                                              self.std)}}

    @classmethod
    def from_dict(cls, data: dict, layout: Layout, source: str = "normalization") -> Normalizer:
        """Read ``to_dict`` output back; statistics for other tensors than the layout's are a ZooError."""
        tensors = data.get("tensors")
        names = [t.name for t in layout.tensors]
        if not isinstance(tensors, dict) or sorted(tensors) != sorted(names):
            raise ZooError(f"{source}: 'tensors' must hold mean and std for exactly the layout's tensors "
                           f"({len(names)}: {', '.join(names[:4])}, ...)")
        return cls(layout, [tensors[n]["mean"] for n in names], [tensors[n]["std"] for n in names],
                   rows=int(data.get("rows", 0)))

    def save(self, path: str | Path) -> None:
        """Atomic write (temporary file, then rename), so a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, layout: Layout) -> Normalizer:
        """Read a file written by ``save``; an unreadable or non-JSON file is a ZooError."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ZooError(f"normalization file {path}: {e}") from None
        return cls.from_dict(data, layout, source=str(path))


def statistics_key(**parts) -> str:
    """A short stable hash of what the statistics depend on (architecture, train split, filters)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
