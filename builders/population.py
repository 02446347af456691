"""A population: K models of one architecture trained as one stacked computation.

Parameters and buffers carry a leading model axis; one step runs every model's
forward pass with ``torch.func.functional_call`` under ``vmap`` (which lowers
convolutions to grouped convolutions), sums the K per-model mean losses and
back-propagates once: the models are independent, so each model's gradient is
exactly its own. BatchNorm running statistics are per-model buffers updated in
place under vmap. Per-model values (seed, learning rate, weight decay,
momentum, init) are tensors or per-model setup; everything else is shared
structure, which is what makes the group one computation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from zoo.data import ImageData, Split
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.manifest import ModelSpec
from zoo.plan import PER_MODEL

from .augment import augment
from .init import initialize
from .optim import lr_factor, make_optimizer

#: Images per evaluation call, summed over the models (bounds activation memory).
EVAL_IMAGES = 8192


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which model ``seed`` sees the training set in ``epoch`` (1-based). Pure function."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def epoch_seed(seeds: Sequence[int], epoch: int) -> int:
    """Seed of the shared randomness (dropout masks, augmentation) of a group in one epoch."""
    h = epoch
    for s in seeds:
        h = (h * 6_364_136_223_846_793_005 + s + 1_442_695_040_888_963_407) % 2**63
    return h


def init_model(spec: ModelSpec, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model's initial weights: torch's generator seeded with the model's seed, then its init method."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        module = spec.architecture.module()
        initialize(module, spec.training["init"], spec.training.get("init_std"))
    return module.to(dtype)


@dataclass
class Metrics:
    loss: torch.Tensor  # (K,)
    acc: torch.Tensor  # (K,)


class Population:
    def __init__(self, specs: Sequence[ModelSpec], layout: Layout, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
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
        modules = [init_model(s, dtype) for s in self.specs]
        self.template = modules[0].to(self.device)
        self.params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in modules])
                       .to(self.device).requires_grad_() for name, _ in self.template.named_parameters()}
        self.buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in modules]).to(self.device)
                        for name, _ in self.template.named_buffers()}

        def per_model(key: str) -> torch.Tensor:
            return torch.tensor([float(s.training[key]) for s in self.specs], device=self.device, dtype=dtype)

        self.optimizer = make_optimizer(self.training["optimizer"], list(self.params.values()), per_model("lr"),
                                        per_model("weight_decay"), per_model("momentum"))
        self.epoch = 0
        self.diverged = torch.zeros(self.k, dtype=torch.bool)
        self.wall_time = 0.0

    # --- the stacked forward ----------------------------------------------------------------
    def _forward(self, x: torch.Tensor, shared_input: bool) -> torch.Tensor:
        def one(params, buffers, inputs):
            return functional_call(self.template, (params, buffers), (inputs,))

        if x.dim() == (4 if shared_input else 5):
            # channels-last memory: vmap lowers a conv over models to one grouped conv on (B, K*C, H, W), which
            # oneDNN runs 2-3x faster in NHWC; the layout carries through the following layers
            x = (x.contiguous(memory_format=torch.channels_last) if shared_input
                 else x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2))

        return vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="different")(
            self.params, self.buffers, x)

    # --- training ---------------------------------------------------------------------------
    def steps_per_epoch(self, n_train: int) -> int:
        return -(-n_train // self.training["batch_size"])

    def train_epoch(self, train: Split) -> torch.Tensor:
        """One epoch for every model; returns each model's mean training loss over the epoch."""
        start = time.perf_counter()
        self.epoch += 1
        n = train.x.shape[0]
        b = self.training["batch_size"]
        steps = self.steps_per_epoch(n)
        total = steps * self.training["epochs"]
        orders = torch.stack([data_order(s.seed, self.epoch, n) for s in self.specs]).to(self.device)
        seed = epoch_seed([s.seed for s in self.specs], self.epoch)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        losses = torch.zeros(self.k, device=self.device, dtype=self.dtype)
        params = list(self.params.values())
        self.template.train()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)  # dropout masks: different per model, reproducible per epoch
            for i in range(steps):
                idx = orders[:, i * b:(i + 1) * b]
                x = train.x[idx]
                if self.training["augmentation"] != "none":
                    x = augment(x, self.training["augmentation"], gen)
                y = train.y[idx]
                logits = self._forward(x, shared_input=False)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
                grads = torch.autograd.grad(loss.sum(), params)
                step = (self.epoch - 1) * steps + i
                self.optimizer.step(params, grads, lr_factor(self.training["schedule"], step, total))
                losses += loss.detach() * idx.shape[1]
        self.wall_time += time.perf_counter() - start
        mean = losses / n
        self.diverged |= ~torch.isfinite(mean).cpu() | ~self.finite().cpu()
        return mean

    def finite(self) -> torch.Tensor:
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for t in (*self.params.values(), *self.buffers.values()):
            if t.is_floating_point():
                ok &= torch.isfinite(t.detach().flatten(1)).all(1)
        return ok

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: Split) -> Metrics:
        """Loss and accuracy of every model on a whole split, in eval mode."""
        self.template.eval()
        chunk = max(1, EVAL_IMAGES // self.k)
        n = split.x.shape[0]
        loss = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        for lo in range(0, n, chunk):
            x, y = split.x[lo:lo + chunk], split.y[lo:lo + chunk]
            logits = self._forward(x, shared_input=True)
            loss += F.cross_entropy(logits.flatten(0, 1), y.repeat(self.k), reduction="none").view(
                self.k, -1).sum(1).double()
            correct += (logits.argmax(-1) == y).sum(1).double()
        self.template.train()
        return Metrics(loss / n, correct / n)

    def checkpoint_records(self, data: ImageData, device_name: str) -> list[dict]:
        """Metrics and provenance of every model at the current epoch."""
        tr, te = self.evaluate(data.train), self.evaluate(data.test)
        va = self.evaluate(data.val) if data.val is not None else None
        self.diverged |= ~self.finite().cpu()
        records = []
        for k in range(self.k):
            rec = {"train_loss": float(tr.loss[k]), "train_acc": float(tr.acc[k]),
                   "test_loss": float(te.loss[k]), "test_acc": float(te.acc[k]),
                   "gen_gap": float(tr.acc[k] - te.acc[k]), "wall_time_s": self.wall_time, "device": device_name,
                   "status": "diverged" if self.diverged[k] else "ok"}
            if va is not None:
                rec.update(val_loss=float(va.loss[k]), val_acc=float(va.acc[k]))
            records.append(rec)
        return records

    # --- rows and resume state ----------------------------------------------------------------
    def rows(self) -> torch.Tensor:
        """(K, row_length) float32 rows in the layout's order (BatchNorm statistics included)."""
        state = {**{k: v.detach() for k, v in self.params.items()}, **self.buffers}
        return self.layout.flatten(state).to(torch.float32).cpu()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "params": {k: v.detach().cpu() for k, v in self.params.items()},
                "buffers": {k: v.cpu() for k, v in self.buffers.items()},
                "optimizer": self.optimizer.state_dict(), "diverged": self.diverged.clone(),
                "wall_time": self.wall_time, "model_ids": [s.model_id for s in self.specs]}

    def load_state_dict(self, state: dict) -> None:
        if state["model_ids"] != [s.model_id for s in self.specs]:
            raise ValueError("resume state belongs to another group")
        self.epoch = state["epoch"]
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v.to(self.device))
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v.to(self.device))
        opt = state["optimizer"]
        self.optimizer.load_state_dict({"steps": opt["steps"], "state": [
            {k: v.to(self.device) for k, v in s.items()} for s in opt["state"]]})
        self.diverged = state["diverged"].clone()
        self.wall_time = state["wall_time"]
