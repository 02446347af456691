"""Views: small pure functions from a batch of flat rows (+ the layout) to a learner's format, and back.

Each view is derived from the layout alone (names, shapes, offsets, roles), so
a new architecture gets every view without a line of code. ``encode`` maps
rows (B, P) to a dict of tensors; ``decode`` maps that dict back to rows where
the view is invertible (so generated tokens become models).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zoo.errors import ZooError, allowed_text
from zoo.layout import Layout
from zoo.registry import Registry


@dataclass(frozen=True)
class View:
    """A view's two directions; ``decode`` is None for a view that cannot give rows back."""

    name: str
    encode: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    decode: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None


VIEWS: Registry[Callable[..., View]] = Registry("view")


def make_view(name: str, layout: Layout, spec: Any = None, **options: Any) -> View:
    """Build view ``name``. ``spec`` (the architecture's ``SymmetrySpec``) reaches only the factories that
    take a ``spec`` keyword (nfn, dws, graph need it); an option the factory does not take is an error."""
    import inspect

    factory = VIEWS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p not in ("layout", "spec")]
    for key in options:
        if key not in allowed:
            raise ZooError(f"view {name!r}: unknown option: "
                           + (allowed_text(key, allowed) if allowed else f"got {key!r}; it takes no options"))
    if "spec" in params:
        options["spec"] = spec
    return factory(layout, **options)


@VIEWS.decorator("flat")
def flat(layout: Layout) -> View:
    """``{"weights": rows}``, the (B, P) rows unchanged: for learners that take one vector per model."""
    return View("flat", lambda rows: {"weights": rows}, lambda batch: batch["weights"])


@VIEWS.decorator("state_dict")
def state_dict(layout: Layout) -> View:
    """Tensor name -> (B, *shape): each model as its checkpoint's tensors (``Layout.unflatten``)."""
    return View("state_dict", lambda rows: layout.unflatten(rows), lambda batch: layout.flatten(batch))



class Tokenizer:
    """SANE-style tokens: one row per output channel of every module (its incoming weights, then its bias;
    for BatchNorm its weight, bias, running mean and variance), cut into tokens of ``tokensize`` values with
    zero padding and a mask. Positions are (global token index, module index, token index within the module).

    One precomputed index (token slot -> flat position, -1 for padding) drives encode and decode.
    """

    def __init__(self, layout: Layout, tokensize: int = 64) -> None:
        if tokensize < 1:
            raise ZooError(f"tokensize must be >= 1, got {tokensize}")
        self.layout, self.tokensize = layout, tokensize
        slots, positions, start = [], [], 0
        for layer, (_, tensors) in enumerate(layout.modules()):
            channels = tensors[0].shape[0]
            if any(t.shape[0] != channels for t in tensors):
                raise ZooError(f"module of {tensors[0].name!r}: tensors disagree on the output channel count")
            per_channel = [(t.offset + torch.arange(t.size).view(channels, -1)) for t in tensors]
            rows = torch.cat(per_channel, dim=1)  # (channels, values per channel)
            width = rows.shape[1]
            n_tok = math.ceil(width / tokensize)
            padded = torch.full((channels, n_tok * tokensize), -1, dtype=torch.int64)
            padded[:, :width] = rows
            tokens = padded.view(channels * n_tok, tokensize)
            slots.append(tokens)
            k = tokens.shape[0]
            positions.append(torch.stack([torch.arange(start, start + k), torch.full((k,), layer),
                                          torch.arange(k)], dim=1))
            start += k
        self.index = torch.cat(slots)  # (T, tokensize)
        self.mask = self.index >= 0
        self.positions = torch.cat(positions)  # (T, 3)
        self.valid = self.mask.view(-1)
        # padding slots read a zero column appended to the rows: one index_select, no masking pass
        self.gather = torch.where(self.valid, self.index.view(-1), layout.size)
        self.scatter = self.index.view(-1)[self.valid]  # decode: token slot values -> flat positions
        if int(self.valid.sum()) != layout.size:  # every value appears exactly once
            raise ZooError("tokenization does not cover the layout exactly once")

    @property
    def num_tokens(self) -> int:
        """Tokens per model (T); every model of the layout has the same."""
        return self.index.shape[0]

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """``tokens`` (B, T, tokensize), zero-padded; ``mask`` (B, T, tokensize), true on real values;
        ``positions`` (B, T, 3). ``mask`` and ``positions`` are expanded views, the same for every sample."""
        b = rows.shape[0]
        padded = torch.cat([rows, rows.new_zeros(b, 1)], dim=1)
        tokens = padded.index_select(1, self.gather.to(rows.device)).view(b, self.num_tokens, self.tokensize)
        mask = self.mask.to(rows.device)
        return {"tokens": tokens, "mask": mask.expand(b, -1, -1), "positions": self.positions.to(rows.device)
                .expand(b, -1, -1)}

    def decode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rows (B, P) from ``batch["tokens"]`` alone: the values in padding slots are dropped."""
        tokens = batch["tokens"]
        b = tokens.shape[0]
        rows = torch.zeros(b, self.layout.size, dtype=tokens.dtype, device=tokens.device)
        valid = self.valid.to(tokens.device)
        rows[:, self.scatter.to(tokens.device)] = tokens.reshape(b, -1)[:, valid]
        return rows


@VIEWS.decorator("tokens")
def tokens(layout: Layout, tokensize: int = 64) -> View:
    """SANE-style tokens of ``tokensize`` values (``Tokenizer``); ``random_window`` cuts training windows."""
    tok = Tokenizer(layout, tokensize)
    return View("tokens", tok.encode, tok.decode)


def random_window(batch: dict[str, torch.Tensor], windowsize: int, generator: torch.Generator | None = None
                  ) -> dict[str, torch.Tensor]:
    """A random window of ``windowsize`` consecutive tokens per sample (SANE's training windows)."""
    b, t = batch["tokens"].shape[:2]
    if windowsize >= t:
        return batch
    start = torch.randint(0, t - windowsize + 1, (b, 1), generator=generator)
    idx = (start + torch.arange(windowsize)).to(batch["tokens"].device)
    return {k: v.gather(1, idx.view(b, windowsize, *([1] * (v.dim() - 2))).expand(b, windowsize, *v.shape[2:]))
            for k, v in batch.items()}


def check_view(name: str) -> None:
    """Refuse an unknown view name before any work (a ZooError that lists the views and suggests one)."""
    if name not in VIEWS:
        raise ZooError(f"view: {allowed_text(name, VIEWS.names())}")
