"""The plain way: one model, ``nn.Module`` + ``torch.optim``, one after another.

This is what the published zoos did (one trial per model). It is kept as the
reference the vectorized population is tested against (same seeds, same data
order, same optimizer arithmetic: the same zoo) and timed against in
``benchmarks/builder.py``. It supports what the equivalence needs: no dropout
masks (those are random per model) and no augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from builders.data import Split
from zoo.manifest import ModelSpec

from .optim import lr_factor, optimizer_class
from .population import data_order, init_model


def make_torch_optimizer(spec: ModelSpec, module: nn.Module) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer whose arithmetic the population optimizer of this name follows."""
    t = spec.training
    kwargs = dict(lr=t["lr"], weight_decay=t["weight_decay"])
    if t["optimizer"] == "sgd":
        kwargs["momentum"] = t["momentum"]
    return optimizer_class(t["optimizer"]).torch_class(module.parameters(), **kwargs)


def train_single(spec: ModelSpec, train: Split, epochs: int, *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> nn.Module:
    """Train one model alone for ``epochs`` and return it."""
    module = init_model(spec, dtype).to(device)
    opt = make_torch_optimizer(spec, module)
    n, b = train.x.shape[0], spec.training["batch_size"]
    steps = -(-n // b)
    total = steps * spec.training["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(spec.training["schedule"], s, total))
    module.train()
    for epoch in range(1, epochs + 1):
        order = data_order(spec.seed, epoch, n).to(device)
        for i in range(steps):
            idx = order[i * b:(i + 1) * b]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(train.x[idx]), train.y[idx])
            loss.backward()
            opt.step()
            sched.step()
    return module
