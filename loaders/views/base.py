"""``View``: a view's two directions, encode and decode. Its own module so that every view module, and the registry
in ``loaders.views``, import it without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class View:
    """A view's two directions; ``decode`` is None for a view that cannot give rows back."""

    name: str
    encode: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    decode: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None
    owner: Any = None  # the object behind encode/decode, for paths that fuse more into it (the Tokenizer)
