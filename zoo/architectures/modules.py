"""The torch modules behind the registered architectures.

Kept apart from the declarations (``convnet.py``, ``mlp.py``, ``resnet.py``, ``siren.py``) so that reading a manifest, a
plan or a store's description never imports torch: a declaration's ``build`` imports this module when a module is
made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ZooError, allowed_text
from .base import make_activation


class ConvNet(nn.Module):
    """The network behind cnn-s, cnn-l and smallcnn; its module names (``conv{i}``, ``fc`` or ``fc1``/``fc2``) are
    the ones their symmetry tables name, so renaming one breaks the spec."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, channels: Sequence[int],
                 kernels: Sequence[int], pools: Sequence[bool], stride: int = 1, padding: int = 0,
                 hidden: int | None, global_pool: bool, activation: str, dropout: float) -> None:
        super().__init__()
        self.pools = list(pools)
        self.global_pool = global_pool
        self.act = make_activation(activation)
        self.convs = []
        c_in = in_shape[0]
        for i, (c, k) in enumerate(zip(channels, kernels), start=1):
            layer = nn.Conv2d(c_in, c, k, stride=stride, padding=padding)
            setattr(self, f"conv{i}", layer)
            self.convs.append(f"conv{i}")
            c_in = c
        # one dropout module per application (after each conv, and after the hidden dense), so a population
        # trainer can give each its own random stream
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity()
                                      for _ in range(len(self.convs) + (1 if hidden else 0)))
        with torch.no_grad():
            features = self._features(torch.zeros(1, *in_shape)).shape[1]
        if hidden:
            self.fc1 = nn.Linear(features, hidden)
            self.fc2 = nn.Linear(hidden, num_classes)
        else:
            self.fc = nn.Linear(features, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        for i, (name, pool) in enumerate(zip(self.convs, self.pools)):
            x = getattr(self, name)(x)
            if pool:
                x = nn.functional.max_pool2d(x, 2, 2)
            x = self.dropouts[i](self.act(x))
        return x.mean(dim=(2, 3)) if self.global_pool else x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images (N, C, H, W) of the shape the net was built for."""
        x = self._features(x)
        if hasattr(self, "fc1"):
            return self.fc2(self.dropouts[-1](self.act(self.fc1(x))))
        return self.fc(x)


class MLP(nn.Module):
    """Dense layers ``fc1``..``fc{depth}`` on the flattened input; the names are the ones its symmetry table uses."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int],
                 activation: str, dropout: float) -> None:
        super().__init__()
        self.act = make_activation(activation)
        sizes = [math.prod(in_shape), *hidden, num_classes]
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        # one module per application, so a population trainer can give each its own random stream
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) if dropout > 0 else nn.Identity()
                                      for _ in range(self.depth - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for inputs (N, *in_shape); it flattens, so only the values per example count."""
        x = x.flatten(1)
        for i in range(1, self.depth):
            x = self.dropouts[i - 1](self.act(getattr(self, f"fc{i}")(x)))
        return getattr(self, f"fc{self.depth}")(x)


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: the same numbers, and vmap has a batching rule for it (for
    channels-last inputs ``adaptive_avg_pool2d`` falls back to a per-model loop under vmap)."""

    def forward(self, x):
        """(N, C, H, W) -> (N, C, 1, 1)."""
        return x.mean(dim=(2, 3), keepdim=True)


def build_resnet18(in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a CIFAR stem (3x3 conv, no max-pool), so small images keep their resolution."""
    from torchvision.models import resnet18  # imported here: torchvision costs seconds at start-up

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.avgpool = GlobalAvgPool()
    return model


class ResNet(nn.Module):
    """CIFAR-stem ResNet of BasicBlocks with torchvision's module names (conv1, bn1, layerN.M..., fc)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: int, blocks: Sequence[int]) -> None:
        from torchvision.models.resnet import BasicBlock  # torchvision costs seconds: only when a ResNet is made

        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes_in = width
        for stage, n in enumerate(blocks, start=1):
            planes = width * 2 ** (stage - 1)
            stride = 1 if stage == 1 else 2
            layers = []
            for i in range(n):
                down = None
                if i == 0 and (stride != 1 or planes_in != planes):
                    down = nn.Sequential(nn.Conv2d(planes_in, planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes))
                layers.append(BasicBlock(planes_in, planes, stride if i == 0 else 1, down))
                planes_in = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        """Logits (N, classes) for images (N, C, H, W)."""
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(self.avgpool(x).flatten(1))


# --- neural fields --------------------------------------------------------------------------------------------


def coordinate_grid(height: int, width: int, order: str = "ij", dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(height * width, 2) coordinates of the pixels in row-major order (pixel (r, c) is row ``r * width + c``),
    each axis over ``linspace(-1, 1, side)``: ``order`` "ij" gives (row, column), as torch.meshgrid's 'ij'
    (NFN); "xy" gives (column, row), as numpy.meshgrid's default 'xy' (DWSNets)."""
    if order not in ("ij", "xy"):
        raise ZooError(f"coords: {allowed_text(order, ('ij', 'xy'))}")
    rows = torch.linspace(-1, 1, height, dtype=dtype, device=device)
    cols = torch.linspace(-1, 1, width, dtype=dtype, device=device)
    r, c = torch.meshgrid(rows, cols, indexing="ij")  # (H, W) each: the row-major pixel grid
    pair = (r, c) if order == "ij" else (c, r)
    return torch.stack(pair, dim=-1).reshape(height * width, 2)


def to_unit(values: torch.Tensor, pixels: str) -> torch.Tensor:
    """A field's output values -> pixel values in [0, 1] (not clipped): the inverse of ``from_unit``."""
    if pixels == "unit":
        return values
    if pixels == "signed":
        return (values + 1) / 2
    raise ZooError(f"pixels: {allowed_text(pixels, ('unit', 'signed'))}")


def from_unit(images: torch.Tensor, pixels: str) -> torch.Tensor:
    """Pixel values in [0, 1] -> the values a field with option ``pixels`` fits: "unit" keeps them, "signed" maps
    them to [-1, 1] (2 v - 1, i.e. Normalize(0.5, 0.5))."""
    if pixels == "unit":
        return images
    if pixels == "signed":
        return images * 2 - 1
    raise ZooError(f"pixels: {allowed_text(pixels, ('unit', 'signed'))}")


class Sine(nn.Module):
    """``sin(omega * x)``: a SIREN layer's nonlinearity, its omega a constant of the architecture (not stored)."""

    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = float(omega)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise ``sin(omega * x)``."""
        return torch.sin(self.omega * x)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"omega={self.omega}"


class Siren(nn.Module):
    """Sine layers ``net.0``..``net.{n-1}`` (``sin(w (W x + b))``, ``first_w0`` for the first, ``w0`` after), a
    linear ``net.{n}`` to the channels, plus ``offset``; the names are the ones its symmetry table uses.

    Init (drawn layer by layer in construction order from torch's global generator): ``sitzmann``: first layer
    weights U(+-1/in), later sine layers and the output layer U(+-sqrt(6/in)/w0), biases nn.Linear's default;
    ``dwsnets``: each sine layer U(+-sqrt(6/in)/its w0) with zero bias, the output layer nn.Linear's default."""

    def __init__(self, channels: int, *, hidden: Sequence[int] = (32, 32), w0: float = 30.0, first_w0: float = 30.0,
                 offset: float = 0.0, init_scheme: str = "sitzmann", coords: str = "ij", pixels: str = "unit") -> None:
        super().__init__()
        if init_scheme not in ("sitzmann", "dwsnets"):
            raise ZooError(f"init_scheme: {allowed_text(init_scheme, ('sitzmann', 'dwsnets'))}")
        self.omegas = [float(first_w0)] + [float(w0)] * (len(hidden) - 1) if hidden else []  # one per sine layer
        self.offset = float(offset)
        self.coords, self.pixels = coords, pixels
        sizes = [2, *hidden, channels]
        layers = []
        for i in range(len(sizes) - 1):
            layer = nn.Linear(sizes[i], sizes[i + 1])
            self._init(layer, i, init_scheme, float(w0))
            layers.append(layer)
        self.net = nn.ModuleList(layers)
        # sin as modules (no tensors, so the layout is the Linear layers'): activation sizes count their outputs
        self.sines = nn.ModuleList(Sine(omega) for omega in self.omegas)

    def _init(self, layer: nn.Linear, i: int, scheme: str, w0: float) -> None:
        fan_in = layer.in_features
        sine = i < len(self.omegas)
        with torch.no_grad():
            if scheme == "sitzmann":
                bound = 1 / fan_in if i == 0 and sine else math.sqrt(6 / fan_in) / w0
                layer.weight.uniform_(-bound, bound)
            elif sine:  # dwsnets: the output layer keeps nn.Linear's init
                layer.weight.uniform_(-math.sqrt(6 / fan_in) / self.omegas[i], math.sqrt(6 / fan_in) / self.omegas[i])
                layer.bias.zero_()

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Values (..., C) at coordinates (..., 2), in the output space the ``pixels`` option names."""
        h = coords
        for layer, sine in zip(self.net, self.sines):
            h = sine(layer(h))
        return self.net[-1](h) + self.offset

    def image(self, height: int, width: int) -> torch.Tensor:
        """The (C, height, width) image the field represents on a height x width grid of ``coordinate_grid`` (its
        ``coords`` order), in the output space (``to_unit(values, self.pixels)`` gives pixel values in [0, 1])."""
        weight = next(self.parameters())
        grid = coordinate_grid(height, width, self.coords, dtype=weight.dtype, device=weight.device)
        return self(grid).T.reshape(-1, height, width)


# --- transformers ---------------------------------------------------------------------------------------------
def build_vit(in_shape: Sequence[int], num_classes: int, *, patch: int, layers: int, heads: int, width: int,
              mlp: int) -> nn.Module:
    """torchvision's VisionTransformer for (C, S, S) images; ``patch`` 0 takes S // 4."""
    from torchvision.models import VisionTransformer

    from .external import first_conv_for

    channels, side, other = (int(s) for s in in_shape)
    if side != other:
        raise ZooError(f"vit: takes square images; the dataset gives {side}x{other} (see dataset.resize)")
    patch = patch or max(1, side // 4)
    if side % patch:
        raise ZooError(f"vit: patch {patch} does not divide the image side {side}")
    if width % heads:
        raise ZooError(f"vit: {heads} heads do not divide width {width}")
    model = VisionTransformer(image_size=side, patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=width,
                              mlp_dim=mlp, num_classes=num_classes)
    if channels != 3:
        first_conv_for(model, channels)
    return model
