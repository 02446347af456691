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
                   cacheable=False, runs_named_code=True)


def _plain_json(value: Any) -> bool:
    """Whether ``value`` is a JSON scalar or a list of such (nested lists too): what a stored constructor argument
    may be. A table could stand for a configuration object that a constructor turns into code paths."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and all(_plain_json(v) for v in value)


def _torchvision(model: str, in_shape: Sequence[int], num_classes: int, kwargs: str = "{}") -> nn.Module:
    """torchvision's own builder or model class of that name: only names torchvision's registry lists, or an
    ``nn.Module`` class of ``torchvision.models``, so a stored name can reach nothing else."""
    import torchvision.models as tvm
    from torch import nn

    kw = json.loads(kwargs)
    if not isinstance(kw, dict):
        raise ZooError(f"torchvision:{model}: kwargs {kwargs!r}; expected a JSON object of keyword arguments")
    for key, value in kw.items():
        if not _plain_json(value):
            raise ZooError(f"torchvision:{model}: argument {key!r} = {value!r}; a torchvision model's arguments are "
                           "JSON scalars (numbers, strings, booleans, null) or lists of them")
    if kw.get("weights") is not None:
        raise ZooError(f"torchvision:{model}: weights={kw['weights']!r}; a zoo trains from scratch (weights=None), "
                       "and nothing is downloaded")
    kw.pop("weights", None)
    if model in tvm.list_models(module=tvm):
        fn: Any = tvm.get_model_builder(model)
        kw["weights"] = None
        takes_image_size = model.startswith(("vit_", "maxvit"))
    else:
        fn = getattr(tvm, model, None) if not model.startswith("_") else None
        if not (inspect.isclass(fn) and issubclass(fn, nn.Module)):
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
    """Import the factory ``package.module:function`` and call it (only for a trusted architecture:
    ``Architecture.module`` checks before this runs)."""
    return call_factory(_import_factory(path), path, in_shape, num_classes, kwargs)


def _import_factory(path: str) -> Any:
    """The function ``package.module:function`` names, imported."""
    module_name, _, fn_name = path.partition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ZooError(f"architecture factory {path!r}: cannot import {module_name!r} ({e}); it must be importable "
                       "where the zoo is built (loading a zoo needs no factory)") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ZooError(f"architecture factory {path!r}: {module_name} has no function {fn_name!r}")
    return fn


def call_factory(fn: Any, path: str, in_shape: Sequence[int], num_classes: int, kwargs: str = "{}") -> nn.Module:
    """``fn(**kwargs)``, with ``in_shape`` and ``num_classes`` filled in where it takes them; ``path`` names the
    architecture in errors."""
    from torch import nn

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
