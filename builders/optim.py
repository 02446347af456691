"""Optimizers and schedules over stacked parameters, with per-model hyperparameters.

``torch.optim`` takes one learning rate per parameter group; a population needs
one per model. These optimizers hold every model's state in tensors with a
leading model axis and take per-model learning rate, momentum and weight decay
as (K,) tensors. Their arithmetic follows ``torch.optim`` (SGD, Adam, AdamW,
RMSprop with default betas/eps/alpha, no amsgrad/nesterov), so a model trained
in a population follows the same trajectory as alone (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zoo.errors import ZooError, allowed_text


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, 1, ...) broadcastable against a stacked parameter."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


class PopulationOptimizer:
    """Base: ``step(params, grads, lr_factor)`` updates the stacked params in place."""

    def __init__(self, params: Sequence[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                 momentum: torch.Tensor) -> None:
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "state": [{k: v.clone() for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.state = [{k: v.clone() for k, v in s.items()} for s in state["state"]]

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr_factor: float = 1.0) -> None:
        self.steps += 1
        for p, g, s in zip(params, grads, self.state):
            lr = _per_model(self.lr, p) * lr_factor if lr_factor != 1.0 else _per_model(self.lr, p)
            self._update(p, g, s, lr, _per_model(self.weight_decay, p), _per_model(self.momentum, p))

    def _update(self, p, g, s, lr, wd, momentum) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(PopulationOptimizer):
    def _update(self, p, g, s, lr, wd, momentum) -> None:
        d = g + wd * p
        if "momentum_buffer" not in s:
            s["momentum_buffer"] = d.clone()  # torch: the first step's buffer is the gradient itself
        else:
            s["momentum_buffer"].mul_(momentum).add_(d)
        d = torch.where(momentum != 0, s["momentum_buffer"], d)
        p.sub_(lr * d)


class Adam(PopulationOptimizer):
    betas = (0.9, 0.999)
    eps = 1e-8
    decoupled = False

    def _update(self, p, g, s, lr, wd, momentum) -> None:
        b1, b2 = self.betas
        if self.decoupled:
            p.mul_(1 - lr * wd)
        else:
            g = g + wd * p
        if "exp_avg" not in s:
            s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        t = self.steps
        bias1, bias2 = 1 - b1**t, 1 - b2**t
        denom = (v.sqrt() / math.sqrt(bias2)).add_(self.eps)
        p.sub_((lr / bias1) * (m / denom))


class AdamW(Adam):
    decoupled = True


class RMSprop(PopulationOptimizer):
    alpha = 0.99
    eps = 1e-8

    def _update(self, p, g, s, lr, wd, momentum) -> None:
        g = g + wd * p
        if "square_avg" not in s:
            s["square_avg"] = torch.zeros_like(p)
        sq = s["square_avg"]
        sq.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        p.sub_(lr * (g / (sq.sqrt().add_(self.eps))))


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def make_optimizer(name: str, params: Sequence[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                   momentum: torch.Tensor) -> PopulationOptimizer:
    if name not in OPTIMIZERS:
        raise ZooError(f"optimizer: {allowed_text(name, OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, weight_decay, momentum)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    ``onecycle`` is torch's ``OneCycleLR(max_lr=lr, total_steps=...)`` with its defaults (pct_start 0.3,
    cosine annealing, div_factor 25, final_div_factor 1e4), stepped every batch, with cycle_momentum=False:
    momentum stays the manifest's value.
    """
    if schedule == "constant":
        return 1.0
    if schedule != "onecycle":
        raise ZooError(f"schedule: {allowed_text(schedule, ('constant', 'onecycle'))}")
    initial = 1.0 / 25.0
    final = initial / 1e4
    phase1_end = float(0.3 * total_steps) - 1
    phase2_end = float(total_steps) - 1

    def cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= phase1_end:
        return cos(initial, 1.0, step / phase1_end)
    return cos(1.0, final, (step - phase1_end) / (phase2_end - phase1_end))
