"""zoo/symmetry.py's activation table: every property it lists holds, numerically, for the torch modules and
functions the derivation gives that name, and every property it leaves out fails (so a missing odd or
homogeneous activation is found, not only a wrong one)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from zoo.architectures import derive
from zoo.symmetry import ACTIVATION_PROPERTIES, ODD, POSITIVE_HOMOGENEOUS

Fn = Callable[[torch.Tensor], torch.Tensor]

#: Activations derive names itself rather than through its tables: nn.PReLU, and nn.Hardtanh with other bounds.
_SPECIAL: dict[str, list[Fn]] = {"prelu": [nn.PReLU().double()], "hardtanh_asymmetric": [nn.Hardtanh(-1.0, 2.0)]}
#: Properties that hold but the table does not claim, each with its reason (the table's comment).
_UNCLAIMED = {("prelu", "homogeneous")}  # its slopes are parameters on the group's axis: a rescale is not derived


def _torch_forms(name: str) -> list[Fn]:
    """Every torch module, function and tensor method that ``derive`` reads as the activation ``name``."""
    forms: list[Fn] = [cls() for cls, n in derive._MODULE_ACTIVATIONS.items() if n == name]
    forms += [fn for fn, n in derive._FUNCTION_ACTIVATIONS.items() if n == name]
    forms += [lambda x, m=m: getattr(x.clone(), m)() for m, n in derive._METHOD_ACTIVATIONS.items() if n == name]
    return forms + _SPECIAL.get(name, [])


def _holds(prop: str, f: Fn) -> bool:
    g = torch.Generator().manual_seed(0)
    x = 4 * torch.randn(4096, dtype=torch.float64, generator=g)
    with torch.no_grad():
        if prop == "odd":
            left, right = f(-x), -f(x)
        else:  # positively homogeneous: f(a x) = a f(x) for every a > 0
            a = torch.exp(torch.empty(4096, dtype=torch.float64).uniform_(-2.0, 2.0, generator=g))
            left, right = f(a * x), a * f(x)
    return bool(torch.allclose(left, right, rtol=1e-12, atol=1e-12))


def test_the_table_names_every_activation_the_derivation_knows():
    named = {*derive._MODULE_ACTIVATIONS.values(), *derive._FUNCTION_ACTIVATIONS.values(),
             *derive._METHOD_ACTIVATIONS.values(), *_SPECIAL}
    assert named == set(ACTIVATION_PROPERTIES)
    assert POSITIVE_HOMOGENEOUS == {"relu", "leaky_relu"}
    assert ODD == {"tanh", "sin", "softsign", "hardtanh", "tanhshrink", "softshrink", "hardshrink"}


@pytest.mark.parametrize("name", sorted(ACTIVATION_PROPERTIES))
def test_each_activation_has_exactly_the_properties_listed(name):
    forms = _torch_forms(name)
    assert forms, f"no torch form of {name!r}"
    for f in forms:
        for prop in ("homogeneous", "odd"):
            expected = prop in ACTIVATION_PROPERTIES[name] or (name, prop) in _UNCLAIMED
            assert _holds(prop, f) == expected, f"{name} ({f}): {prop} should {'' if expected else 'not '}hold"
