"""Weight initialization methods named in manifests.

Follows the Model Zoos generator: every conv/linear weight gets torch's init
function with its default arguments (``uniform`` is U(0, 1), ``normal`` is
N(0, 1) unless ``init_std`` is set) and every bias is filled with 0.01;
``default`` keeps PyTorch's own initialization. BatchNorm keeps (1, 0).
"""

from __future__ import annotations

from torch import nn

from zoo.errors import ZooError, allowed_text

BIAS_FILL = 0.01


def _weight_init(name: str, std: float | None):
    inits = {
        "uniform": nn.init.uniform_,
        "normal": lambda w: nn.init.normal_(w, 0.0, std if std is not None else 1.0),
        "truncated_normal": lambda w: nn.init.trunc_normal_(w, 0.0, s := (std if std is not None else 1.0),
                                                            -2 * s, 2 * s),
        "orthogonal": nn.init.orthogonal_,
        "kaiming_uniform": nn.init.kaiming_uniform_,
        "kaiming_normal": nn.init.kaiming_normal_,
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
    }
    if name not in inits:
        raise ZooError(f"init: {allowed_text(name, [*inits, 'default'])}")
    return inits[name]


def initialize(module: nn.Module, method: str, std: float | None = None) -> nn.Module:
    """Re-initialize ``module`` in place (draws from torch's global generator, seeded by the caller)."""
    if method == "default":
        return module
    init = _weight_init(method, std)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            init(m.weight.data)
            if m.bias is not None:
                nn.init.constant_(m.bias.data, BIAS_FILL)
    return module
