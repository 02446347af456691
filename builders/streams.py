"""Per-model random streams that do not depend on who else is in the population.

A population's dropout masks and augmentation draws used to come from one generator call over the whole
(models, ...) batch, so a model's masks depended on which models shared its population: a build with another
population size trained another zoo. Here every random number is a pure function of (the model's key, the step,
a salt naming the draw, the element's index), computed with integer arithmetic on the device:

- the same model gets the same masks in a population of 1, 64 or 4,096, on any device, eager or compiled;
- there is no generator state to carry, so a captured step (CUDA graph, ``torch.compile``) stays pure.

The hash is a 32-bit integer mixer (xor-shift-multiply, constant 0x45d9f3b) run in int64 so that no product
overflows; 24 bits of it make a float32 uniform in [0, 1).
"""

from __future__ import annotations

import torch
from torch import nn

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B
_GOLDEN = 0x9E3779B9


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit hash of ``x`` (int64 values, any sign), as int64 in [0, 2**32)."""
    x = x & M32
    x = ((x ^ (x >> 16)) * _MUL) & M32
    x = ((x ^ (x >> 16)) * _MUL) & M32
    return x ^ (x >> 16)


def combine(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """Hash of the pair (a, b): order matters, equal inputs in other positions give unrelated outputs."""
    return mix32(mix32(a) * 31 + (b & M32 if isinstance(b, int) else b & M32) + _GOLDEN)


def model_keys(seeds: list[int], model_ids: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(K,) int64 keys: one stream per model, from its seed and its id (zoos where every model has one seed,
    such as the Small CNN Zoo, still draw independent masks)."""
    seeds_t = torch.tensor(seeds, dtype=torch.int64)
    ids_t = torch.tensor(model_ids, dtype=torch.int64)
    return combine(combine(seeds_t >> 32, seeds_t), ids_t).to(device)


def uniform(key: torch.Tensor, shape: tuple[int, ...], salt: int = 0) -> torch.Tensor:
    """float32 uniforms in [0, 1) of ``shape`` for each element of ``key`` (any shape): (*key.shape, *shape)."""
    n = 1
    for s in shape:
        n *= s
    index = torch.arange(n, device=key.device, dtype=torch.int64).view(*([1] * key.dim()), *shape)
    h = combine(combine(key, salt).view(*key.shape, *([1] * len(shape))), index)
    return (h >> 8).to(torch.float32) * (1.0 / 2**24)


class StreamDropout(nn.Module):
    """Dropout with a per-model rate and a per-model stream, for a module run under ``vmap``.

    Replaces ``nn.Dropout`` in a population's template. Its two buffers (not part of any checkpoint) are
    stacked per model like the others: ``p`` (the model's rate; 0 leaves the input unchanged, bit for bit)
    and ``key`` (the model's stream at this step). ``salt`` tells the module's applications apart.
    """

    p: torch.Tensor
    key: torch.Tensor

    def __init__(self, salt: int) -> None:
        super().__init__()
        self.salt = salt
        self.register_buffer("p", torch.zeros(()), persistent=False)
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input in eval mode; in training, inverted dropout (as ``nn.Dropout``) with masks from ``key``."""
        if not self.training:
            return x
        keep = uniform(self.key, tuple(x.shape), self.salt) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p).to(x.dtype)


def replace_dropout(module: nn.Module) -> list[str]:
    """Swap every ``nn.Dropout`` of ``module`` for a ``StreamDropout``, in place; returns their names."""
    names: list[str] = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.Dropout):
                full = f"{name}.{attr}" if name else attr
                setattr(child, attr, StreamDropout(salt=len(names) + 1))
                names.append(full)
    return names
