"""Architectures by name or by factory: any torchvision classification model, or a user's own module.

``"torchvision:NAME"`` builds ``torchvision.models.NAME``: a registered model builder (``resnet50``, ``vit_b_16``,
any name of ``torchvision.models.list_models()``) with ``weights=None``, or a model class (``VisionTransformer``,
``ResNet``) called with the keyword arguments given. ``"package.module:function"`` calls a user's factory. Either
way the keyword arguments come from the manifest's ``[architecture.kwargs]`` (or ``get_architecture``'s), and the
dataset gives what they leave out: ``num_classes``, ``image_size`` where the constructor takes one, and the input
channels (torchvision's models read 3: a first convolution over 3 channels is rebuilt for the dataset's).

Nothing is declared about such a module: its layout and symmetry spec are derived from it (``derive.py``) and
stored with the zoo, so loaders never import it again. A factory's results are not kept in the on-disk cache
(its code is not part of the cache key); torchvision's are, keyed by torchvision's version.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UnknownNameError, ZooError
from .base import ArchDef, Option

if TYPE_CHECKING:
    from torch import nn

TORCHVISION = "torchvision:"
#: ``package.module:function``: what a factory's name looks like.
FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
#: The one option of an external architecture: its constructor's keyword arguments, as sorted JSON (a metadata
#: column like any option; every argument may change shapes).
KWARGS = Option(str, "{}", shape=True, doc="keyword arguments of the constructor, as JSON")


def is_external(name: object) -> bool:
    """Whether ``name`` names a torchvision model or a factory rather than a registered architecture."""
    return isinstance(name, str) and (name.startswith(TORCHVISION) or bool(FACTORY.match(name)))


def kwargs_json(kwargs: dict[str, Any], where: str = "architecture.kwargs") -> str:
    """The kwargs option's value: sorted JSON; a value JSON cannot hold is refused naming the field."""
    try:
        return json.dumps(kwargs, sort_keys=True)
    except TypeError as e:
        raise ZooError(f"field {where!r}: {e}") from None


@functools.cache
def external_definition(name: str) -> ArchDef:
    """The declaration of ``torchvision:NAME`` or ``package.module:function``."""
    if name.startswith(TORCHVISION):
        model = name[len(TORCHVISION):]
        return ArchDef(name, {"kwargs": KWARGS}, functools.partial(_torchvision, model),
                       f"torchvision.models.{model} (weights=None)")
    if not FACTORY.match(name):
        raise UnknownNameError(f"architecture factory {name!r}: expected 'package.module:function'")
    return ArchDef(name, {"kwargs": KWARGS}, functools.partial(_factory, name), f"the factory {name}",
                   cacheable=False)


def _torchvision(model: str, in_shape: Sequence[int], num_classes: int, kwargs: str = "{}") -> nn.Module:
    import torchvision.models as tvm

    kw = json.loads(kwargs)
    if kw.get("weights") is not None:
        raise ZooError(f"torchvision:{model}: weights={kw['weights']!r}; a zoo trains from scratch (weights=None), "
                       "and nothing is downloaded")
    kw.pop("weights", None)
    if model in tvm.list_models(module=tvm):
        fn: Any = tvm.get_model_builder(model)
        kw["weights"] = None
        takes_image_size = model.startswith(("vit_", "maxvit"))
    else:
        fn = getattr(tvm, model, None)
        if not inspect.isclass(fn):
            names = tvm.list_models(module=tvm)
            raise UnknownNameError(f"torchvision:{model}: not a classification model of torchvision.models "
                                   f"({len(names)} names, e.g. {', '.join(names[:4])}; or a model class such as "
                                   "VisionTransformer)")
        takes_image_size = "image_size" in inspect.signature(fn).parameters
    kw.setdefault("num_classes", num_classes)
    if takes_image_size:
        kw.setdefault("image_size", int(in_shape[1]))
    module = fn(**kw)
    if in_shape[0] != 3:
        first_conv_for(module, int(in_shape[0]))
    return module


def first_conv_for(module: nn.Module, channels: int) -> None:
    """Rebuild the module's first Conv2d over 3 channels (in definition order) for ``channels`` inputs."""
    from torch import nn

    for name, conv in module.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 and conv.groups == 1:
            new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                            conv.dilation, 1, conv.bias is not None, conv.padding_mode)  # type: ignore[arg-type]
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, new)
            return


def _factory(path: str, in_shape: Sequence[int], num_classes: int, kwargs: str = "{}") -> nn.Module:
    from torch import nn

    module_name, _, fn_name = path.partition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ZooError(f"architecture factory {path!r}: cannot import {module_name!r} ({e}); it must be importable "
                       "where the zoo is built (loading a zoo needs no factory)") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ZooError(f"architecture factory {path!r}: {module_name} has no function {fn_name!r}")
    kw = json.loads(kwargs)
    params = inspect.signature(fn).parameters
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("in_shape", tuple(int(s) for s in in_shape)), ("num_classes", num_classes)):
        if key in params or open_kw:
            kw.setdefault(key, value)
    module = fn(**kw)
    if not isinstance(module, nn.Module):
        raise ZooError(f"architecture factory {path!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module
