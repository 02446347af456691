"""Neural fields fitted as one population: K SIRENs, one image each, one computation.

An inr zoo's models share their coordinates (the pixel grid) and differ in their targets (each model's own
image), so a step is a few batched matrix products over stacked weights: the first layer multiplies the shared
(N, 2) grid by every model's (2, width) weight at once, later layers are ``baddbmm`` over the model axis, and
the loss is the sum of per-model mean squared errors, whose gradient for each model is its own (so a model
fitted in a population follows the same trajectory as fitted alone, tested). Optimizers and schedules are the
classifier builder's per-model ones (``optim.py``).

``InrPopulation`` has the interface ``orchestration`` drives (``train_epoch``, ``checkpoint_records``,
``rows``, and the resume state of ``population.Resumable``): an epoch of an inr zoo is one optimizer step, over
the whole image or, with ``training.batch_size`` below the pixel count, over a batch of pixels drawn per model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zoo.architectures.modules import coordinate_grid, from_unit, to_unit
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.manifest import ModelSpec

from .optim import lr_factor, population_optimizer
from .population import Resumable, data_order, init_model


def field_layers(layout: Layout) -> list[tuple[str, str]]:
    """(weight, bias) names of a field's linear layers in order, read off the layout (its modules' roles)."""
    layers = []
    for module, tensors in layout.modules():
        roles = {t.role: t.name for t in tensors}
        if set(roles) != {"weight", "bias"}:
            raise ZooError(f"module {module!r}: a neural field's layers hold a weight and a bias, got {sorted(roles)}")
        layers.append((roles["weight"], roles["bias"]))
    return layers


def field_forward(params: dict[str, torch.Tensor], coords: torch.Tensor, layers: Sequence[tuple[str, str]],
                  omegas: Sequence[float], offset: float) -> torch.Tensor:
    """Outputs (K, N, C) of K stacked fields at ``coords``: (N, 2) shared by every model, or (K, N, 2) each its
    own. ``layers``: (weight (K, out, in), bias (K, out)) names in order (``field_layers``); every layer but the
    last is ``sin(omega (W h + b))`` with its entry of ``omegas``, the last is linear, plus ``offset``."""
    h = coords
    for i, (weight, bias) in enumerate(layers):
        w, b = params[weight], params[bias]
        inputs = h.expand(w.shape[0], -1, -1) if h.dim() == 2 else h
        if i < len(layers) - 1:  # omega (W h + b) in the product itself (alpha, beta): no pass of its own
            h = torch.sin(torch.baddbmm(b.unsqueeze(1), inputs, w.transpose(1, 2), beta=omegas[i], alpha=omegas[i]))
        else:
            h = torch.baddbmm(b.unsqueeze(1), inputs, w.transpose(1, 2)) + offset
    return h


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (peak 1)."""
    return -10.0 * torch.log10(mse)


class InrPopulation(Resumable):
    """K neural fields of one structure, each fitting its own image (``images``: (K, C, H, W) in [0, 1])."""

    def __init__(self, specs: Sequence[ModelSpec], layout: Layout, images: torch.Tensor, labels: torch.Tensor,
                 *, device: torch.device | str = "cpu", compile: str = "off") -> None:
        self.specs = list(specs)
        self.k = len(self.specs)
        self.layout = layout
        self.device = torch.device(device)
        first = self.specs[0]
        self.options = dict(first.architecture.options)
        self.training = dict(first.training)
        self.precision, self.step_mode = "fp32", "eager"
        self.images = images.to(self.device, torch.float32)
        self.labels = labels.cpu()
        _, self.channels, self.height, self.width = self.images.shape
        self.coords = coordinate_grid(self.height, self.width, self.options["coords"]).to(self.device)
        self.layers = field_layers(layout)
        self.omegas = [self.options["first_w0"]] + [self.options["w0"]] * (len(self.layers) - 2)
        # the targets in the network's output space, pixel by pixel in the grid's (row-major) order
        targets = self.images.permute(0, 2, 3, 1).reshape(self.k, -1, self.channels)
        self.targets = from_unit(targets, self.options["pixels"])
        modules = [init_model(s) for s in self.specs]
        self.buffers: dict[str, torch.Tensor] = {}  # a field has none: the resume state's buffers are empty
        self.params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in modules])
                       .to(self.device).requires_grad_(True) for name, _ in modules[0].named_parameters()}

        self.optimizer = population_optimizer(self.specs, list(self.params.values()), self.device)
        self.epoch = 0
        self.diverged_t = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        self.wall_time = 0.0

    # --- the interface orchestration drives ------------------------------------------------------
    @property
    def pixels(self) -> int:
        """Pixels of one image (the grid's size)."""
        return self.height * self.width

    def _forward(self, coords: torch.Tensor) -> torch.Tensor:
        return field_forward(self.params, coords, self.layers, self.omegas, self.options["offset"])

    def plan_steps(self, n_train: int) -> None:
        """Nothing to plan: an inr step's size is the image's (kept for the classifier population's interface)."""

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's coordinates and targets: the whole grid, or per model its next pixel batch (a pass over
        the pixels in the model's own order, ``data_order(seed, pass)``)."""
        b = self.training["batch_size"]
        if b >= self.pixels:
            return self.coords, self.targets
        per_pass = -(-self.pixels // b)
        step = self.epoch - 1
        lo = (step % per_pass) * b
        order = torch.stack([data_order(s.seed, step // per_pass + 1, self.pixels)[lo:lo + b]
                             for s in self.specs]).to(self.device)
        coords = self.coords[order]  # (K, b, 2)
        return coords, self.targets.gather(1, order.unsqueeze(-1).expand(-1, -1, self.channels))

    def train_epoch(self, train=None) -> torch.Tensor:
        """One optimizer step for every model (an inr zoo's epoch); returns each model's loss before it."""
        start = time.perf_counter()
        self.epoch += 1
        coords, targets = self._batch()
        params = list(self.params.values())
        loss = (self._forward(coords) - targets).square().mean(dim=(1, 2))
        grads = torch.autograd.grad(loss.sum(), params)
        total = self.training["epochs"]
        self.optimizer.step(params, grads, lr_factor(self.training["schedule"], self.epoch - 1, total))
        with torch.no_grad():  # non-finite weights give a non-finite loss a step later; checkpoints check weights
            self.diverged_t |= ~torch.isfinite(loss)
        self.wall_time += time.perf_counter() - start
        return loss.detach()

    def finite(self) -> torch.Tensor:
        """(K,) bool: every weight of the model is finite."""
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for t in self.params.values():
            ok &= torch.isfinite(t.detach().flatten(1)).all(1)
        return ok

    @torch.no_grad()
    def render(self, height: int, width: int) -> torch.Tensor:
        """(K, C, height, width) images in [0, 1] units (not clamped) on a grid of that size."""
        grid = coordinate_grid(height, width, self.options["coords"]).to(self.device)
        out = to_unit(self._forward(grid), self.options["pixels"])
        return out.view(self.k, height, width, self.channels).permute(0, 3, 1, 2)

    @torch.no_grad()
    def checkpoint_records(self, data=None, device_name: str = "cpu") -> list[dict]:
        """Per model: its image's label, the fit's MSE and PSNR on the pixel grid, and PSNR on the 2x grid against
        the bilinearly upsampled image (how the field generalizes between pixels), at this step."""
        fitted = self.render(self.height, self.width)
        mse = (fitted - self.images).square().mean(dim=(1, 2, 3))
        fine = self.render(2 * self.height, 2 * self.width)
        # linspace(-1, 1) puts the corner pixels at the grid's corners: align_corners=True is that geometry
        reference = F.interpolate(self.images, size=(2 * self.height, 2 * self.width), mode="bilinear",
                                  align_corners=True)
        mse_2x = (fine - reference).square().mean(dim=(1, 2, 3))
        self.diverged_t |= ~self.finite()
        values = torch.stack([mse, psnr(mse), psnr(mse_2x)]).double().cpu().tolist()
        diverged = self.diverged.tolist()
        labels = self.labels.tolist()
        return [{"label": labels[k], "mse": _finite(values[0][k]), "psnr": _finite(values[1][k]),
                 "psnr_2x": _finite(values[2][k]), "step": self.epoch, "wall_time_s": self.wall_time,
                 "device": device_name, "status": "diverged" if diverged[k] else "ok"} for k in range(self.k)]

    # --- rows and resume state ----------------------------------------------------------------------
    def rows(self) -> torch.Tensor:
        """(K, row_length) float32 rows in the layout's order."""
        return self.layout.flatten({k: v.detach() for k, v in self.params.items()}).to(torch.float32).cpu()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
