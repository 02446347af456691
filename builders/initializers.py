"""Weight initialization methods named in manifests (declared in ``zoo.recipes.INITS``).

Follows the Model Zoos generator: every conv/linear weight gets torch's init
function with its default arguments (``uniform`` is U(0, 1), ``normal`` is
N(0, 1) unless ``init_std`` is set) and every bias is filled with 0.01;
``default`` keeps PyTorch's own initialization. BatchNorm keeps (1, 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from zoo.recipes import INITS

BIAS_FILL = 0.01

#: An init's implementation: re-initialize a module in place, given ``training.init_std``.
Init = Callable[[nn.Module, "float | None"], None]


def initialize(module: nn.Module, method: str, std: float | None = None) -> nn.Module:
    """Re-initialize ``module`` in place (draws from torch's global generator, seeded by the caller)."""
    INITS.implementation(method)(module, std)
    return module


def _layers(weight: Callable[[torch.Tensor, float], object]) -> Init:
    """An init that draws every conv/linear weight with ``weight(w, std)`` and fills every bias with 0.01."""

    def init(module: nn.Module, std: float | None) -> None:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                weight(m.weight.data, std if std is not None else 1.0)
                if m.bias is not None:
                    nn.init.constant_(m.bias.data, BIAS_FILL)

    return init


@INITS.implement("default")
def _default(module: nn.Module, std: float | None) -> None:
    """PyTorch's initialization, as the module was constructed."""


INITS.implement("uniform")(_layers(lambda w, std: nn.init.uniform_(w)))
INITS.implement("normal")(_layers(lambda w, std: nn.init.normal_(w, 0.0, std)))
INITS.implement("truncated_normal")(_layers(lambda w, std: nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)))
INITS.implement("orthogonal")(_layers(lambda w, std: nn.init.orthogonal_(w)))
INITS.implement("kaiming_uniform")(_layers(lambda w, std: nn.init.kaiming_uniform_(w)))
INITS.implement("kaiming_normal")(_layers(lambda w, std: nn.init.kaiming_normal_(w)))
INITS.implement("xavier_uniform")(_layers(lambda w, std: nn.init.xavier_uniform_(w)))
INITS.implement("xavier_normal")(_layers(lambda w, std: nn.init.xavier_normal_(w)))
