"""The training step of a population: one pure function of tensors, run eager, compiled or captured.

One call trains every model of a population for one batch: gather each model's batch from the device-resident
dataset by its own data order, augment it, forward and backward every model under ``vmap(grad(...))``, and
update every model with its own learning rate, weight decay and momentum. Everything it reads is a tensor on
the device (the step counters too), it branches on no value and reads nothing back to the host, so the same
function runs

- eagerly (``eager``),
- compiled by ``torch.compile(fullgraph=True)`` (``compiled``): one-time cost per population shape, cached
  across the groups of a build (see ``StepKey``), or
- on CUDA, compiled and then captured once per population as a CUDA graph (``cuda-graph``): one launch per
  step instead of hundreds, which is what a GPU needs for small CNNs (docs/design.md §5).

Mutated in place: parameters, buffers (BatchNorm statistics), optimizer state, the step counters and the
loss accumulator; the caller's tensors are the graph's static buffers.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .grouped import grouped_forward
from .image_augment import augment_from_uniforms
from .optim import apply_updates, lr_factor, optimizer_class
from .streams import combine, uniform

#: Salts of the per-model streams: augmentation draws and the per-step key.
AUG_SALT = 0xA06


@dataclass(frozen=True)
class StepKey:
    """Everything that shapes the traced step. Two populations with equal keys share one compiled function."""

    arch: str  # the architecture's shape key and options but the dropout rate: the template's structure
    models: int
    batch: int
    optimizer: str
    schedule: str
    total_steps: int
    augmentation: str
    dropout: tuple[str, ...]  # names of the stream-dropout modules
    precision: str
    dtype: str
    device: str


def make_step(template: nn.Module, key: StepKey) -> Callable:
    """The pure step for ``template`` (a structure only: its own tensors are never read)."""
    kind = optimizer_class(key.optimizer)
    b = key.batch
    device_type = torch.device(key.device).type

    def loss_one(params, buffers, x, y):
        with autocast(key.precision, device_type):
            logits = functional_call(template, (params, buffers), (x,))
        loss = F.cross_entropy(logits.float(), y)
        return loss, loss

    per_model_grad = vmap(grad(loss_one, has_aux=True), in_dims=(0, 0, 0, 0), randomness="different")
    grouped = grouped_forward(template)

    def loss_all(params, x, y, drop_p, step_key):
        """The grouped path: the sum of the models' mean losses; its gradient is each model's own."""
        with autocast(key.precision, device_type):
            logits = grouped(params, x, drop_p, step_key)
        k = logits.shape[0]
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
        return losses.sum(), losses

    grouped_grad = grad(loss_all, has_aux=True)

    def step(params: dict, buffers: dict, states: list, steps_t: torch.Tensor, lr: torch.Tensor,
             weight_decay: torch.Tensor, momentum: torch.Tensor, train_x: torch.Tensor, train_y: torch.Tensor,
             orders: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, drop_p: torch.Tensor,
             losses: torch.Tensor) -> None:
        cols = start + torch.arange(b, device=orders.device)
        idx = orders.index_select(1, cols)  # (K, b): each model's own batch
        x = train_x[idx]
        y = train_y[idx]
        step_key = combine(keys, steps_t.to(torch.int64))
        if key.augmentation != "none":
            u = uniform(step_key, (b, 3), salt=AUG_SALT).reshape(-1, 3)  # each model's own draws
            x = augment_from_uniforms(x, key.augmentation, u)
        if grouped is not None:
            grads, loss = grouped_grad(params, x, y, drop_p, step_key)
        else:
            if x.dim() == 5:  # channels-last: the grouped conv vmap lowers to runs 2-3x faster on CPU (oneDNN)
                x = x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)
            bufs = dict(buffers)
            for name in key.dropout:
                bufs[f"{name}.p"] = drop_p
                bufs[f"{name}.key"] = step_key
            grads, loss = per_model_grad(params, bufs, x, y)
        steps_t += 1
        factor = lr_factor(key.schedule, steps_t - 1, key.total_steps)
        names = list(params)
        apply_updates(kind, [params[n] for n in names], [grads[n] for n in names], states, steps_t, lr,
                      weight_decay, momentum, factor)
        losses += loss.detach().to(losses.dtype) * b
        start += b

    return step


# --- running it -------------------------------------------------------------------------------------------
_COMPILED: dict[StepKey, Callable] = {}


def compiled_step(template: nn.Module, key: StepKey) -> Callable:
    """``torch.compile(make_step(...), fullgraph=True)``, once per key for the life of the process."""
    if key not in _COMPILED:
        import torch._dynamo

        # every population shape of a build is its own compiled step; keep them all
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _COMPILED[key] = torch.compile(make_step(template, key), fullgraph=True, dynamic=False)
    return _COMPILED[key]


class StepRunner:
    """Runs one population's step in the chosen mode; falls back to eager, saying why, when it cannot.

    ``args`` are the population's tensors (the static buffers of a captured graph). ``run()`` is one step
    with ``start`` pointing at the batch; the last, smaller batch of an epoch uses its own runner.
    """

    def __init__(self, template: nn.Module, key: StepKey, mode: str, args: tuple) -> None:
        self.key, self.args, self.mode = key, args, mode
        self.eager = make_step(template, key)
        self.fn = self.eager
        self.graph: torch.cuda.CUDAGraph | None = None
        self._pending_capture = False
        if mode in ("compiled", "cuda-graph"):
            try:
                self.fn = compiled_step(template, key)
            except Exception as e:  # noqa: BLE001 - any failure to compile means: run (and capture) eagerly
                why = f"torch.compile is not available here ({type(e).__name__}: {e})"
                if mode == "compiled":
                    self._fallback(why)
                else:  # a captured eager step still saves every launch
                    warnings.warn(f"training step: {why}; capturing the eager step", RuntimeWarning, stacklevel=2)
        self._pending_capture = self.mode == "cuda-graph"

    def _fallback(self, why: str) -> None:
        warnings.warn(f"training step: {why}; training eagerly (same results, slower)", RuntimeWarning,
                      stacklevel=3)
        self.mode, self.fn, self.graph, self._pending_capture = "eager", self.eager, None, False

    def run(self) -> None:
        """One step on the batch ``start`` points at; if the compiled step fails, this and later steps run eagerly."""
        if self.graph is not None:
            self.graph.replay()
            return
        if self._pending_capture:
            self._capture()
            return
        try:
            self.fn(*self.args)
        except Exception as e:  # noqa: BLE001
            if self.fn is self.eager:
                raise
            self._fallback(f"the compiled step failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            self.eager(*self.args)  # compilation fails before the step changes anything

    def _capture(self) -> None:
        """Warm up (compiling) on a side stream, then capture one step; the warm-up *is* this step.

        The first call does the step's work; capturing records a second call without running it, so the
        population's state is unchanged by the capture itself."""
        self._pending_capture = False
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            try:
                self.fn(*self.args)  # this step's real work, and the compilation / autotuning
            except Exception as e:  # noqa: BLE001 - compilation fails before the step changes anything
                if self.fn is self.eager:
                    raise
                warnings.warn(f"training step: the compiled step failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); capturing the eager step", RuntimeWarning,
                              stacklevel=3)
                self.fn = self.eager
                self.fn(*self.args)
        torch.cuda.current_stream().wait_stream(stream)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records, runs nothing: the state stays as the warm-up left it
                self.fn(*self.args)
            self.graph = graph
        except Exception as e:  # noqa: BLE001
            torch.cuda.synchronize()
            self._fallback(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")


def autocast(precision: str, device_type: str):
    """The forward's autocast for ``precision``: bfloat16 for ``bf16-mixed``, none otherwise. No weight cache: a
    captured graph must not keep casts made during its capture (torch.cuda.graphs docs)."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(device: torch.device, precision: str):
    """fp32 builds on CUDA use deterministic algorithms (cuDNN, cuBLAS workspace), so the same command gives the
    same bytes; restored afterwards. Ops without a deterministic kernel warn instead of failing (max-pool's
    backward over non-overlapping windows adds each gradient once: order does not matter)."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """``tf32`` allows TensorFloat-32 matmuls and convolutions on CUDA for the duration; restored after."""
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
