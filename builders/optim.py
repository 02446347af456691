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
from typing import TYPE_CHECKING, ClassVar

import torch

from zoo.recipes import OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:
    from zoo.manifest import ModelSpec


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, 1, ...) broadcastable against a stacked parameter."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


class PopulationOptimizer:
    """Base: ``step(params, grads, lr_factor)`` updates the stacked params in place.

    Everything a step reads is a tensor on the parameters' device: the step count (``steps_t``), the
    per-model hyperparameters and the schedule's factor. A step therefore never synchronizes with the host
    and has no Python branch on a value, so it can be compiled and captured as part of a training step.
    The state (moments, momentum buffers) exists from the start, zero-filled: for these optimizers a
    zero-initialized state gives the same arithmetic as torch's lazily created one.
    """

    state_keys: tuple[str, ...] = ()
    #: The ``torch.optim`` class whose arithmetic this follows (the single-model reference trains with it).
    torch_class: ClassVar[type[torch.optim.Optimizer]]

    def __init__(self, params: Sequence[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                 momentum: torch.Tensor) -> None:
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        device = params[0].device if params else torch.device("cpu")
        self.steps_t = torch.zeros((), dtype=torch.float64, device=device)
        self.state: list[dict[str, torch.Tensor]] = [{k: torch.zeros_like(p) for k in self.state_keys}
                                                     for p in params]

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far (a host read of ``steps_t``, which synchronizes with the device)."""
        return int(self.steps_t)  # a host read: for state files, never inside a step

    def state_dict(self) -> dict:
        """The step count and a copy of every moment and buffer: what a resumable state file keeps."""
        return {"steps": self.steps, "state": [{k: v.clone() for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict`` output in place (the tensors keep their identity, so a captured step stays
        valid); a moment missing from ``state`` is zeroed."""
        self.steps_t.fill_(state["steps"])
        for mine, saved in zip(self.state, state["state"]):
            for k, v in mine.items():  # a state file from before the first step holds no moments: zeros
                v.copy_(saved[k]) if k in saved else v.zero_()

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
             lr_factor: torch.Tensor | float = 1.0) -> None:
        """One eager update in place; ``lr_factor`` is the schedule's multiplier (``lr_factor()``) for this step."""
        self.steps_t += 1
        apply_updates(type(self), params, grads, self.state, self.steps_t, self.lr, self.weight_decay,
                      self.momentum, lr_factor)

    @classmethod
    def update(cls, p, g, s, lr, wd, momentum, t) -> None:  # pragma: no cover - abstract
        """One parameter's update; ``t`` is the step count after this step (a float64 tensor)."""
        raise NotImplementedError


def apply_updates(kind: type[PopulationOptimizer], params, grads, states, steps_t: torch.Tensor, lr: torch.Tensor,
                  weight_decay: torch.Tensor, momentum: torch.Tensor, lr_factor: torch.Tensor | float = 1.0) -> None:
    """Update every stacked parameter in place: a pure function of tensors (compiled with the training step)."""
    for p, g, s in zip(params, grads, states):
        kind.update(p, g, s, _per_model(lr, p) * lr_factor, _per_model(weight_decay, p), _per_model(momentum, p),
                    steps_t)


@OPTIMIZERS.implement("sgd")
class SGD(PopulationOptimizer):
    """``torch.optim.SGD`` (dampening 0, no Nesterov), weight decay added to the gradient."""

    state_keys = ("momentum_buffer",)
    torch_class = torch.optim.SGD

    @classmethod
    def update(cls, p, g, s, lr, wd, momentum, t) -> None:
        """A model whose momentum is 0 takes the plain gradient step; its buffer is still kept."""
        d = g + wd * p
        buf = s["momentum_buffer"]
        buf.mul_(momentum).add_(d)  # torch's first buffer is the gradient itself: 0 * momentum + d
        d = torch.where(momentum != 0, buf, d)
        p.sub_(lr * d)


@OPTIMIZERS.implement("adam")
class Adam(PopulationOptimizer):
    """``torch.optim.Adam`` with default betas and eps; the per-model momentum is ignored."""

    torch_class: ClassVar[type[torch.optim.Optimizer]] = torch.optim.Adam
    betas = (0.9, 0.999)
    eps = 1e-8
    decoupled = False
    state_keys = ("exp_avg", "exp_avg_sq")

    @classmethod
    def update(cls, p, g, s, lr, wd, momentum, t) -> None:
        """Weight decay decoupled (AdamW) or added to the gradient (Adam); bias corrections computed in float64."""
        b1, b2 = cls.betas
        if cls.decoupled:
            p.mul_(1 - lr * wd)
        else:
            g = g + wd * p
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bias1 = (1 - b1**t).to(p.dtype)
        bias2_sqrt = (1 - b2**t).sqrt().to(p.dtype)
        denom = (v.sqrt() / bias2_sqrt).add_(cls.eps)
        p.sub_((lr / bias1) * (m / denom))


@OPTIMIZERS.implement("adamw")
class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with weight decay applied to the parameters, not the gradient."""

    torch_class = torch.optim.AdamW
    decoupled = True


@OPTIMIZERS.implement("rmsprop")
class RMSprop(PopulationOptimizer):
    """``torch.optim.RMSprop`` with default alpha and eps, not centered; the per-model momentum is ignored."""

    torch_class = torch.optim.RMSprop
    alpha = 0.99
    eps = 1e-8
    state_keys = ("square_avg",)

    @classmethod
    def update(cls, p, g, s, lr, wd, momentum, t) -> None:
        """Weight decay added to the gradient before it enters the squared average, as torch does."""
        g = g + wd * p
        sq = s["square_avg"]
        sq.mul_(cls.alpha).addcmul_(g, g, value=1 - cls.alpha)
        p.sub_(lr * (g / (sq.sqrt().add_(cls.eps))))


def optimizer_class(name: str) -> type[PopulationOptimizer]:
    """The population optimizer of a declared name (``zoo.recipes.OPTIMIZERS``)."""
    return OPTIMIZERS.implementation(name)


def make_optimizer(name: str, params: Sequence[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                   momentum: torch.Tensor) -> PopulationOptimizer:
    """One optimizer over a population's stacked parameters, with per-model (K,) hyperparameters."""
    return optimizer_class(name)(params, lr, weight_decay, momentum)


def population_optimizer(specs: Sequence[ModelSpec], params: Sequence[torch.Tensor], device: torch.device | str,
                         dtype: torch.dtype | None = None) -> PopulationOptimizer:
    """The optimizer of a population of ``specs`` (one recipe, so one optimizer kind), each model's learning rate,
    weight decay and momentum read from its own spec: the one place a population's hyperparameters become (K,)
    tensors, for classifiers and neural fields alike."""
    def per_model(key: str) -> torch.Tensor:
        return torch.tensor([float(s.training[key]) for s in specs], device=device, dtype=dtype)

    return make_optimizer(specs[0].training["optimizer"], params, per_model("lr"), per_model("weight_decay"),
                          per_model("momentum"))


def lr_factor(schedule: str, step, total_steps: int):
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based; a float or a tensor)."""
    return SCHEDULES.implementation(schedule)(step, total_steps)


@SCHEDULES.implement("constant")
def _constant(step, total_steps: int) -> float:
    return 1.0


@SCHEDULES.implement("onecycle")
def _onecycle(step, total_steps: int):
    """torch's ``OneCycleLR(max_lr=lr, total_steps=...)`` with its defaults (pct_start 0.3, cosine annealing,
    div_factor 25, final_div_factor 1e4), stepped every batch, with cycle_momentum=False: momentum stays the
    manifest's value."""
    initial = 1.0 / 25.0
    final = initial / 1e4
    phase1_end = float(0.3 * total_steps) - 1
    phase2_end = float(total_steps) - 1

    if isinstance(step, torch.Tensor):
        def cos_t(start: float, end: float, pct: torch.Tensor) -> torch.Tensor:
            return end + (start - end) / 2.0 * (torch.cos(math.pi * pct) + 1)

        return torch.where(step <= phase1_end, cos_t(initial, 1.0, step / phase1_end),
                           cos_t(1.0, final, (step - phase1_end) / (phase2_end - phase1_end)))

    def cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= phase1_end:
        return cos(initial, 1.0, step / phase1_end)
    return cos(1.0, final, (step - phase1_end) / (phase2_end - phase1_end))
