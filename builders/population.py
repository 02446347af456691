"""A population: K models of one architecture trained as one stacked computation.

Parameters and buffers carry a leading model axis; one step (``step.py``) runs
every model's forward and backward pass with ``torch.func.functional_call``
under ``vmap(grad(...))`` (which lowers convolutions to grouped convolutions):
each model's gradient is exactly its own. BatchNorm running statistics are
per-model buffers updated in place under vmap. Per-model values (seed, learning
rate, weight decay, momentum, init, dropout rate) are tensors or per-model
setup; everything else is shared structure, which is what makes the population
one computation. A population may hold several of the store's groups: it
belongs to the device, the group to the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from builders.data import ImageData, Split
from zoo.errors import StoreError, ZooError
from zoo.layout import Layout
from zoo.manifest import ModelSpec
from zoo.plan import PER_MODEL

from .devices import choose_mode
from .grouped import grouped_forward
from .initializers import initialize
from .optim import population_optimizer
from .step import StepKey, StepRunner, autocast, precision_context
from .streams import model_keys, replace_dropout

#: Images per evaluation forward, per device type: fixed, so a model's metrics do not depend on its population.
EVAL_CHUNK = {"cpu": 256, "cuda": 1024}
#: Activation bytes per evaluation forward (bounds memory): models are evaluated in slices sized from the
#: architecture's activations per image (at least 2 models: one alone takes other, ungrouped kernels).
EVAL_BYTES = {"cpu": 2**29, "cuda": 2**33}


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which model ``seed`` sees the training set in ``epoch`` (1-based). Pure function."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def init_model(spec: ModelSpec, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model's initial weights: torch's generator seeded with the model's seed, then its init method."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        module = spec.architecture.module()
        initialize(module, spec.training["init"], spec.training.get("init_std"))
    return module.to(dtype)


def _float32_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].float(), *args[1:])


@dataclass
class Metrics:
    """One split's evaluation of every model: mean loss and accuracy, one value per model."""

    loss: torch.Tensor  # (K,)
    acc: torch.Tensor  # (K,)


class Resumable:
    """What a population shares with ``orchestration``'s resume: divergence flags, and its state as CPU tensors with
    a leading model axis (params, buffers, optimizer), which ``orchestration.slice_state`` cuts into groups."""

    specs: list[ModelSpec]
    device: torch.device
    epoch: int
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: Any
    diverged_t: torch.Tensor
    wall_time: float

    @property
    def diverged(self) -> torch.Tensor:
        """(K,) bool on the host: loss or weights non-finite at some point (read once, at a checkpoint)."""
        return self.diverged_t.cpu()

    @diverged.setter
    def diverged(self, value: torch.Tensor) -> None:
        self.diverged_t = value.to(self.device)

    def state_dict(self) -> dict:
        """Everything training needs to go on from this epoch (or step)."""
        return {"epoch": self.epoch, "params": {k: v.detach().cpu() for k, v in self.params.items()},
                "buffers": {k: v.cpu() for k, v in self.buffers.items()},
                "optimizer": self.optimizer.state_dict(), "diverged": self.diverged,
                "wall_time": self.wall_time, "model_ids": [s.model_id for s in self.specs]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict`` output of exactly these models (else a StoreError), copied in place."""
        mine = [s.model_id for s in self.specs]
        if state["model_ids"] != mine:
            # the store's saved training state (.build/) does not match the plan: damaged or from another build
            raise StoreError(f"resume state holds models {_ids(state['model_ids'])}, this population trains models "
                             f"{_ids(mine)}; remove the store's .build/ folder to restart these groups")
        self.epoch = state["epoch"]
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v.to(self.device))
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v.to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.diverged = state["diverged"].clone()
        self.wall_time = state["wall_time"]


class Population(Resumable):
    """K models of one structure as one computation: stacked tensors, one step function (``step.py``)."""

    def __init__(self, specs: Sequence[ModelSpec], layout: Layout, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, compile: str = "off") -> None:
        self.specs = list(specs)
        keys = sorted({k for s in self.specs for k in s.hparams} - PER_MODEL)
        differ = [k for k in keys if len({repr(s.hparams.get(k)) for s in self.specs}) > 1]
        if differ:  # e.g. a group of a plan with population.grouping = "architecture" (an imported zoo)
            raise ZooError(f"models {[s.model_id for s in self.specs]} differ in {', '.join(differ)}: one population "
                           f"trains only models that share everything but {', '.join(sorted(PER_MODEL))} (build "
                           "with population.grouping = 'structure')")
        self.k = len(self.specs)
        self.layout = layout
        self.device = torch.device(device)
        self.dtype = dtype
        first = self.specs[0]
        self.training = dict(first.training)
        self.activation = first.activation
        self.compile = compile
        self.precision = self.training.get("precision", "fp32")
        modules = [init_model(s, dtype) for s in self.specs]
        # the template is a structure only (functional_call substitutes every tensor): the model with the highest
        # dropout rate has a dropout module wherever any model of the population has one
        rates = [float(s.architecture.options.get("dropout", 0.0)) for s in self.specs]
        self.template = modules[max(range(self.k), key=rates.__getitem__)].to(self.device)
        self.dropout = tuple(replace_dropout(self.template))
        self._grouped = grouped_forward(self.template)  # None: vmap over functional_call
        if self.precision == "bf16-mixed":  # normalization in float32, as mixed precision does (and as vmap's
            for m in self.template.modules():  # batch-norm rule needs: its statistics are float32)
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.register_forward_pre_hook(_float32_input)
        self.drop_p = torch.tensor(rates, device=self.device, dtype=dtype)
        self.keys = model_keys([s.seed for s in self.specs], [s.model_id for s in self.specs], self.device)
        self.params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in modules])
                       .to(self.device) for name, _ in self.template.named_parameters()}
        self.buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in modules]).to(self.device)
                        for name, _ in self.template.named_buffers() if name.rsplit(".", 1)[0] not in self.dropout}

        self.optimizer = population_optimizer(self.specs, list(self.params.values()), self.device, dtype=dtype)
        self.epoch = 0
        self.diverged_t = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        self.wall_time = 0.0
        self._runners: dict[int, StepRunner] = {}
        self._data_id: int | None = None
        self._orders: torch.Tensor | None = None
        self._start = torch.zeros((), dtype=torch.int64, device=self.device)
        self._losses = torch.zeros(self.k, device=self.device, dtype=dtype)
        self._activations: int | None = None

    @property
    def step_mode(self) -> str:
        """How the training step runs: eager, compiled or cuda-graph (after the first epoch: as it ran)."""
        if self._runners:
            return next(iter(self._runners.values())).mode
        return choose_mode(self.compile, self.device, self.total_steps(None))

    # --- the stacked forward ----------------------------------------------------------------
    def _forward(self, x: torch.Tensor, models: slice = slice(None)) -> torch.Tensor:
        """Logits (K, B, classes) of models ``models`` on one batch ``x`` (B, C, H, W) that every model sees."""
        # channels-last memory: a conv over models is one grouped conv on (B, K*C, H, W), which oneDNN runs 2-3x
        # faster in NHWC; the layout carries through the following layers
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        params = {k: v[models] for k, v in self.params.items()}
        with self._autocast():
            if self._grouped is not None:
                return self._grouped(params, x, self.drop_p[models], self.keys[models]).float()
            buffers = {k: v[models] for k, v in self.buffers.items()}
            for name in self.dropout:  # eval mode: dropout is the identity, but functional_call wants every buffer
                buffers[f"{name}.p"] = self.drop_p[models]
                buffers[f"{name}.key"] = self.keys[models]
            # eval-mode attention would take torch's fused fast path, which vmap has no batching rule for (it loops
            # over the models, 2.5x slower for a ViT zoo's evaluation): the plain path is batched
            fast = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                return vmap(lambda p, b, inputs: functional_call(self.template, (p, b), (inputs,)),
                            in_dims=(0, 0, None), randomness="different")(params, buffers, x).float()
            finally:
                torch.backends.mha.set_fastpath_enabled(fast)

    def _autocast(self):
        return autocast(self.precision, self.device.type)

    # --- training ---------------------------------------------------------------------------
    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps in an epoch of ``n_train`` images: a last, smaller batch is a step too."""
        return -(-n_train // self.training["batch_size"])

    def total_steps(self, n_train: int | None) -> int:
        """Steps of the whole training (the schedule's length); None takes ``plan_steps``' size; 0 if unknown."""
        n = n_train if n_train is not None else self._n_train
        return self.steps_per_epoch(n) * self.training["epochs"] if n else 0

    _n_train = 0

    def plan_steps(self, n_train: int) -> None:
        """Tell the population its training set size before the first epoch (``step_mode`` depends on it)."""
        self._n_train = n_train

    def _runner(self, train: Split, batch: int) -> StepRunner:
        """The step for batches of ``batch`` images (an epoch's last batch may be smaller), built once."""
        if self._data_id != id(train):  # new data: new static buffers for the step
            self._runners.clear()
            self._data_id = id(train)
            self._n_train = train.x.shape[0]
        if batch not in self._runners:
            arch = self.specs[0].architecture  # its structure: shapes and every option but the per-model rate
            structure = json.dumps([arch.shape_key, {k: v for k, v in arch.options.items() if k != "dropout"}],
                                   sort_keys=True)
            key = StepKey(structure, self.k, batch,
                          self.training["optimizer"], self.training["schedule"],
                          self.total_steps(None) if self.training["schedule"] != "constant" else 0,
                          self.training["augmentation"], self.dropout, self.precision, str(self.dtype),
                          str(self.device))
            args = (self.params, self.buffers, self.optimizer.state, self.optimizer.steps_t, self.optimizer.lr,
                    self.optimizer.weight_decay, self.optimizer.momentum, train.x, train.y, self._orders,
                    self._start, self.keys, self.drop_p, self._losses)
            mode = choose_mode(self.compile, self.device, self.total_steps(None))
            self._runners[batch] = StepRunner(self.template, key, mode, args)
        return self._runners[batch]

    def train_epoch(self, train: Split) -> torch.Tensor:
        """One epoch for every model; returns each model's mean training loss over the epoch (on the device)."""
        start = time.perf_counter()
        self.epoch += 1
        n = train.x.shape[0]
        b = self.training["batch_size"]
        orders = torch.stack([data_order(s.seed, self.epoch, n) for s in self.specs]).to(self.device)
        if self._orders is None or self._orders.shape != orders.shape:
            self._orders = orders
            self._runners.clear()
        else:
            self._orders.copy_(orders)  # in place: a captured step reads this very buffer
        self._start.zero_()
        self._losses.zero_()
        self.template.train()
        with precision_context(self.precision, self.device):
            full, last = divmod(n, b)
            if full:
                runner = self._runner(train, b)
                for _ in range(full):
                    runner.run()
            if last:
                self._runner(train, last).run()
        mean = self._losses / n
        self.diverged_t |= ~torch.isfinite(mean) | ~self.finite()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the wall time is the device's
        self.wall_time += time.perf_counter() - start
        return mean

    def finite(self) -> torch.Tensor:
        """(K,) bool on the device: every weight and statistic of the model is finite."""
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for t in (*self.params.values(), *self.buffers.values()):
            if t.is_floating_point():
                ok &= torch.isfinite(t.flatten(1)).all(1)
        return ok

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: Split) -> Metrics:
        """Loss and accuracy of every model on a whole split, in eval mode."""
        self.template.eval()
        n = split.x.shape[0]
        loss = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        chunk = EVAL_CHUNK.get(self.device.type, EVAL_CHUNK["cpu"])
        for models in self._eval_slices(chunk):
            k = models.stop - models.start
            for lo in range(0, n, chunk):
                x, y = split.x[lo:lo + chunk], split.y[lo:lo + chunk]
                logits = self._forward(x, models)
                # per-image losses summed in float64: the same total whatever the chunking
                loss[models] += F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(
                    k, -1).double().sum(1)
                correct[models] += (logits.argmax(-1) == y).sum(1).double()
        self.template.train()
        return Metrics(loss / n, correct / n)

    def _eval_slices(self, chunk: int) -> list[slice]:
        if self._activations is None:
            self._activations = self.specs[0].architecture.activation_numel
        budget = EVAL_BYTES.get(self.device.type, EVAL_BYTES["cpu"])
        size = max(2, budget // (4 * chunk * max(1, self._activations)))
        bounds = list(range(0, self.k, size)) + [self.k]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:  # no slice of one model (other kernels)
            bounds.pop(-2)
        return [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def checkpoint_records(self, data: ImageData, device_name: str) -> list[dict]:
        """Metrics and provenance of every model at the current epoch."""
        tr, te = self.evaluate(data.train), self.evaluate(data.test)
        va = self.evaluate(data.val) if data.val is not None else None
        self.diverged_t |= ~self.finite()
        # one read of every model's metrics: the only host synchronization of an epoch
        values = torch.stack([tr.loss, tr.acc, te.loss, te.acc, *((va.loss, va.acc) if va is not None else ())]
                             ).cpu().tolist()
        diverged = self.diverged.tolist()
        records = []
        for k in range(self.k):
            rec = {"train_loss": values[0][k], "train_acc": values[1][k], "test_loss": values[2][k],
                   "test_acc": values[3][k], "gen_gap": values[1][k] - values[3][k], "wall_time_s": self.wall_time,
                   "device": device_name, "status": "diverged" if diverged[k] else "ok"}
            if va is not None:
                rec.update(val_loss=values[4][k], val_acc=values[5][k])
            records.append(rec)
        return records

    # --- rows and resume state ----------------------------------------------------------------
    def rows(self) -> torch.Tensor:
        """(K, row_length) float32 rows in the layout's order (BatchNorm statistics included)."""
        state = {**{k: v.detach() for k, v in self.params.items()}, **self.buffers}
        return self.layout.flatten(state).to(torch.float32).cpu()

def _ids(ids: Sequence[int]) -> str:
    """Model ids for a message: all of a few, the ends of many."""
    ids = list(ids)
    return str(ids) if len(ids) <= 8 else f"[{ids[0]}, {ids[1]}, ..., {ids[-1]}] ({len(ids)} models)"
