"""Parameter layout: the ordered tensors of an architecture inside one flat row.

A checkpoint is stored as one float32 row; the layout says which slice of the
row is which tensor (name, shape, offset, role). Roles are read off the module
types, so no architecture writes them by hand. Flatten and unflatten accept
any leading batch dimensions, so the same code serves one checkpoint or a batch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UnknownNameError, ZooError, allowed_text

if TYPE_CHECKING:  # torch is imported by the methods that take tensors: reading a layout needs none
    import torch
    from torch import nn

#: Roles of tensors in a row. "norm_weight"/"norm_bias" (format 4) are the affine tensors of a normalization
#: that is not a BatchNorm (LayerNorm, GroupNorm, InstanceNorm); "embedding" (format 4) any other tensor a module
#: holds itself (a ViT's class token and position embedding): the derived symmetry spec says which axes permute.
ROLES = ("weight", "bias", "bn_weight", "bn_bias", "running_mean", "running_var", "norm_weight", "norm_bias",
         "embedding")
TRAINABLE_ROLES = frozenset(ROLES[:4] + ROLES[6:])

@dataclass(frozen=True)
class TensorSpec:
    """Where one tensor sits in a row: ``row[offset:stop]``, reshaped to ``shape``; ``role`` is one of ``ROLES``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    role: str

    @property
    def size(self) -> int:
        """Elements of the tensor: the length of its slice of the row."""
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        """End (exclusive) of its slice of the row: the next tensor's offset."""
        return self.offset + self.size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form inside a stored layout; ``from_dict`` reads it back."""
        return {"name": self.name, "shape": list(self.shape), "offset": self.offset, "role": self.role}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        """Inverse of ``to_dict``."""
        return cls(d["name"], tuple(int(s) for s in d["shape"]), int(d["offset"]), d["role"])


def _role(module: nn.Module, attr: str, value: torch.Tensor) -> str | None:
    from torch import nn

    if attr == "num_batches_tracked":
        return None  # an integer counter, not a weight; rebuilt as 0 on load
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) or isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        if attr in ("weight", "bias"):
            return f"norm_{attr}"
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        return {"weight": "bn_weight", "bias": "bn_bias"}.get(attr, attr)
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and attr in ("weight", "bias"):
        return attr
    if isinstance(module, nn.MultiheadAttention) and attr in ("in_proj_weight", "in_proj_bias"):
        return attr[len("in_proj_"):]
    if not value.is_floating_point():
        raise ZooError(f"cannot store {type(module).__name__}.{attr} ({value.dtype}) in a float32 row; a layout "
                       "holds floating-point tensors only")
    return "embedding"


@dataclass(frozen=True)
class Layout:
    """The tensors of one architecture in row order; read off a module (``from_module``) or a store, never written
    by hand."""

    tensors: tuple[TensorSpec, ...]

    # --- construction -----------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module) -> Layout:
        """Read the layout off a module, in its ``state_dict`` order."""
        owners = {}
        for mod_name, mod in module.named_modules():
            for attr, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                owners[f"{mod_name}.{attr}" if mod_name else attr] = (mod, attr)
        tensors, offset = [], 0
        for name, value in module.state_dict().items():
            role = _role(*owners[name], value)
            if role is None:
                continue
            spec = TensorSpec(name, tuple(value.shape), offset, role)
            tensors.append(spec)
            offset = spec.stop
        return cls(tuple(tensors))

    # --- sizes --------------------------------------------------------------
    @property
    def size(self) -> int:
        """Length of a row: every stored tensor, running statistics included."""
        return self.tensors[-1].stop if self.tensors else 0

    @property
    def num_params(self) -> int:
        """Trainable parameters (what papers count)."""
        return sum(t.size for t in self.tensors if t.role in TRAINABLE_ROLES)

    @property
    def names(self) -> list[str]:
        """Tensor names in row order."""
        return [t.name for t in self.tensors]

    def modules(self) -> list[tuple[str, list[TensorSpec]]]:
        """Tensors grouped by owning module (the name before the last dot), in layout order: the layers that
        tokenizers, weight-space views and importers walk."""
        out: dict[str, list[TensorSpec]] = {}
        for t in self.tensors:
            out.setdefault(t.name.rsplit(".", 1)[0] if "." in t.name else "", []).append(t)
        return list(out.items())

    def __getitem__(self, name: str) -> TensorSpec:
        for t in self.tensors:
            if t.name == name:
                return t
        # a KeyError too, so ``except KeyError`` callers keep working; long layouts (ResNet) name only the closest
        names = self.names
        allowed = allowed_text(name, names) if len(names) <= 12 else (
            f"got {name!r}; the layout has {len(names)} tensors: {', '.join(names[:3])}, ..., {names[-1]}"
            + "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(str(name), names, n=1)))
        raise UnknownNameError(f"layout tensor: {allowed}")

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tensors)

    # --- conversion -----------------------------------------------------------
    def flatten(self, state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """State dict (tensors may share leading batch dims) -> rows (..., size) float32."""
        import torch

        missing = [t.name for t in self.tensors if t.name not in state_dict]
        if missing:
            raise ZooError(f"state dict lacks tensors of the layout: {', '.join(missing)}")
        first = state_dict[self.tensors[0].name]
        batch = tuple(first.shape[: first.dim() - len(self.tensors[0].shape)])
        parts = []
        for t in self.tensors:
            value = state_dict[t.name]
            if tuple(value.shape) != batch + t.shape:
                raise ZooError(f"tensor {t.name!r} has shape {tuple(value.shape)}; the layout expects "
                               f"{batch + t.shape}")
            parts.append(value.detach().reshape(*batch, t.size).to(torch.float32))
        return torch.cat(parts, dim=-1)

    def unflatten(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows (..., size) -> state dict of views (no copy)."""
        if rows.shape[-1] != self.size:
            raise ZooError(f"row length {rows.shape[-1]} does not match the layout's {self.size}")
        batch = tuple(rows.shape[:-1])
        return {t.name: rows[..., t.offset:t.stop].reshape(*batch, *t.shape) for t in self.tensors}

    def load_into(self, module: nn.Module, row: torch.Tensor) -> nn.Module:
        """Copy one row into ``module`` exactly (dtype kept as stored)."""
        sd = self.unflatten(row)
        missing, unexpected = module.load_state_dict(sd, strict=False)
        missing = [m for m in missing if not m.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ZooError(f"layout does not match module: missing {missing}, unexpected {unexpected}")
        return module

    # --- serialization --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored per architecture; ``size`` and ``num_params`` are there for readers of the JSON only
        (``from_dict`` recomputes them from the tensors)."""
        return {"size": self.size, "num_params": self.num_params,
                "tensors": [t.to_dict() for t in self.tensors]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Layout:
        """Inverse of ``to_dict``."""
        return cls(tuple(TensorSpec.from_dict(t) for t in d["tensors"]))
