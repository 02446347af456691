"""What an architecture declares, and the resolved architecture a zoo stores.

An ``ArchDef`` is the declaration: its options (type, default, choices, and
whether they change tensor shapes) and a constructor. An ``Architecture`` is
that declaration resolved for one dataset (input shape, class count) and one
set of options; its layout and symmetry spec are derived from the constructed
module (``derive.py``), never written by hand.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..errors import UntrustedCodeError, ZooError, allowed_text
from ..fields import Field
from ..layout import Layout
from ..symmetry import SymmetrySpec
from . import cache

if TYPE_CHECKING:
    from torch import nn

    from .derive import Derived

#: Activation names an ``activation`` option offers, and the ``torch.nn`` class each stands for (by name: declaring
#: them must not import torch). A declaration without the option may fix another one (siren: "sin", built into its
#: module); ``zoo.symmetry`` says what each allows beyond permutation.
ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
}


def make_activation(name: str) -> nn.Module:
    """The activation module for a declared name."""
    from torch import nn

    if name not in ACTIVATIONS:
        raise ZooError(f"activation: {allowed_text(name, ACTIVATIONS)}")
    return getattr(nn, ACTIVATIONS[name])()


@dataclass(frozen=True)
class Option(Field):
    """One option an architecture accepts in a manifest: a ``Field`` (type, default, allowed values, range) that
    may change tensor shapes (``shape=True`` options enter ``Architecture.shape_key``, hence the layout)."""

    shape: bool = False

    def validate(self, value: Any) -> Any:
        """As ``Field.validate``; a ``list`` option holds positive integers (layer widths, block counts), and its
        range applies to each element."""
        if self.kind is list and isinstance(value, (list, tuple)):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ZooError(f"expected a list of positive integers, got {list(value)!r}")
            for v in value:
                self._in_range(v)
            return list(value)
        return super().validate(value)

    def check(self, value: Any, where: str) -> Any:
        """The value, normalized, or a ``ZooError`` naming the manifest field ``where``."""
        try:
            return self.validate(value)
        except ZooError as e:
            raise ZooError(f"field {where!r}: {e}") from None


ACTIVATION_OPTION = Option(str, "relu", tuple(sorted(ACTIVATIONS)), doc="hidden-unit activation")
DROPOUT_OPTION = Option(float, 0.0, minimum=0.0, maximum=1.0, doc="dropout probability after each activation")
#: Widest layer an option may declare: beyond it a model is a typo, not a zoo member (and fails its allocation).
MAX_WIDTH = 65_536


@dataclass(frozen=True)
class ArchDef:
    """The declaration of a registered architecture; it holds functions, not tensors, so declaring one imports no
    torch. ``resolve`` turns it into the ``Architecture`` a zoo stores."""

    name: str
    options: Mapping[str, Option]
    build: Callable[..., nn.Module]  # build(in_shape, num_classes, **options)
    doc: str = ""
    #: Smallest square input side (pixels) the network takes for given options: below it a conv or pool would get
    #: an empty input. Declared so that a manifest is refused with a message, not a conv error at plan time.
    min_side: Callable[[Mapping[str, Any]], int] = lambda options: 1
    #: The hidden-unit activation of an architecture without an ``activation`` option (ResNets: "relu", siren:
    #: "sin").
    activation: str | None = None
    #: The shape of one example the module reads, given the resolved ``in_shape`` (C, H, W) and options: the image
    #: itself for a classifier; one image's (H * W, 2) coordinate grid for a neural field. A batch is
    #: ``(N, *input_shape)``.
    input_shape: Callable[[tuple[int, int, int], Mapping[str, Any]], tuple[int, ...]] = (
        lambda in_shape, options: tuple(in_shape))
    #: The zoo kind the architecture serves (a manifest's ``zoo.kind``): "classifier" (images in, class logits
    #: out) or "inr" (a neural field: coordinates in, pixel values out; ``num_classes`` plays no part).
    kind: str = "classifier"
    #: Whether what is read off the module (layout, spec) may be kept in the on-disk cache: not for a user's
    #: factory, whose code the cache key cannot see.
    cacheable: bool = True
    #: Whether building the module imports and calls code that the architecture's *name* points at (a
    #: ``package.module:function`` factory). Such a module is built only for a trusted ``Architecture``: one the
    #: caller named (``get_architecture``, a manifest file given to ``zoo build``), never one read from a store or
    #: an export (docs/design.md §7).
    runs_named_code: bool = False

    def resolve(self, in_shape: tuple[int, int, int], num_classes: int, options: Mapping[str, Any] | None = None,
                where: str = "architecture", trusted: bool = False) -> Architecture:
        """Check the options against the declaration (unknown ones, types, choices) and the input side against
        ``min_side``, filling in defaults; a refusal is a ``ZooError`` naming the field under ``where``.
        ``trusted``: the caller named this architecture itself, so a factory it names may be called."""
        options = dict(options or {})
        unknown = set(options) - set(self.options)
        if unknown:
            bad = sorted(unknown)[0]
            raise ZooError(f"field '{where}.{bad}': unknown option of {self.name!r}; "
                           f"{allowed_text(bad, self.options) if self.options else 'it takes no options'}")
        full = {k: opt.check(options.get(k, opt.default), f"{where}.{k}") for k, opt in self.options.items()}
        side = self.min_side(full)
        if min(in_shape[1:]) < side:
            raise ZooError(f"field '{where}.name': {self.name!r} takes inputs of at least {side}x{side} pixels; the "
                           f"dataset gives {in_shape[1]}x{in_shape[2]} (see dataset.resize / dataset.center_crop)")
        return Architecture(self.name, (int(in_shape[0]), int(in_shape[1]), int(in_shape[2])), int(num_classes),
                            json.dumps(full, sort_keys=True), trusted=trusted)


@dataclass(frozen=True)
class Architecture:
    """One architecture resolved for an input shape, class count and options.

    ``trusted`` says where the value came from, not what it is (it takes no part in equality): True when the
    caller named the architecture (``get_architecture``, a manifest given to a build), False when it was read from
    data (a store's attributes, an export's descriptor). An untrusted factory is never imported or called:
    ``module`` refuses it, naming the factory and how to opt in."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    options_json: str = field(default="{}")
    trusted: bool = field(default=False, compare=False, repr=False)

    @property
    def options(self) -> dict[str, Any]:
        """Every option, defaults included; a fresh dict on each call (they are kept as JSON so that an
        ``Architecture`` stays hashable)."""
        return json.loads(self.options_json)

    @property
    def activation(self) -> str | None:
        """The hidden-unit activation: the ``activation`` option, else the one the declaration fixes. What it
        allows beyond permutation (rescaling, sign flips) is the symmetry spec's ``PermGroup.allowed``; None where
        the declaration cannot be found (a derived spec's "relu", "odd", "linear" and "fixed" groups need none)."""
        if "activation" in self.options:
            return self.options["activation"]
        try:
            return self.definition.activation
        except ZooError:
            return None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example the module reads (``ArchDef.input_shape``): ``module()(x)`` takes
        ``x`` of shape ``(N, *input_shape)``. The image shape (C, H, W) for a classifier; (H * W, 2) pixel
        coordinates for a neural field such as siren, whose ``in_shape`` is the image it represents."""
        return tuple(int(s) for s in self.definition.input_shape(self.in_shape, self.options))

    @property
    def definition(self) -> ArchDef:
        """The declaration, looked up by name (registered, ``torchvision:NAME`` or a factory's
        ``package.module:function``): an ``Architecture`` is a plain value, not a reference."""
        from . import definition

        return definition(self.name)

    @property
    def shape_key(self) -> str:
        """Identity of the layout: everything that changes a tensor shape."""
        shaping = {k: v for k, v in self.options.items() if self.definition.options[k].shape}
        return json.dumps([self.name, list(self.in_shape), self.num_classes, shaping], sort_keys=True)

    def module(self) -> nn.Module:
        """A freshly initialized module (torch's default init), in train mode. An untrusted factory is refused
        (``UntrustedCodeError``) before anything is imported."""
        definition = self.definition
        if definition.runs_named_code and not self.trusted:
            raise UntrustedCodeError(
                f"architecture factory {self.name!r}: refused to import and call it, because its name was read from "
                "data (a store, an export, or a manifest not marked as your own), and data never runs code; if you "
                "trust this zoo's code, opt in with Zoo.module(..., trust_code=True), or pass the function itself: "
                "Zoo.module(..., factory=fn) (a manifest you wrote: Manifest.from_dict(..., trust_code=True))")
        try:
            return definition.build(self.in_shape, self.num_classes, **self.options)
        except ZooError:
            raise
        except Exception as e:  # a torchvision model or a user's factory refusing its arguments
            raise ZooError(f"architecture {self.name!r} with {self.options} cannot be built for inputs "
                           f"{self.in_shape} and {self.num_classes} classes: {type(e).__name__}: {e}") from None

    def _remember(self, what: str, compute: Callable[[], Any]) -> Any:
        return cache.remember(self, what, compute) if self.definition.cacheable else compute()

    @cached_property
    def layout(self) -> Layout:
        """Read off the constructed module; memoized on disk (``cache.py``) so that plans and manifests need no
        torch."""
        return Layout.from_dict(self._remember("layout", lambda: Layout.from_module(self.module()).to_dict()))

    @cached_property
    def activation_numel(self) -> int:
        """Floats of every leaf module's output for one example of ``input_shape`` (an image; for a neural field,
        one image's whole coordinate grid): what a forward keeps per example (memoized)."""
        return int(self._remember("activation_numel", self._measure_activations))

    def _measure_activations(self) -> int:
        import torch

        module = self.module()
        outputs: list[int] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(
            out.numel() if isinstance(out, torch.Tensor) else 0)) for m in module.modules() if not list(m.children())]
        with torch.no_grad():  # two examples: a BatchNorm in train mode needs more than one value per channel
            module(torch.zeros(2, *self.input_shape))
        for h in hooks:
            h.remove()
        return sum(outputs) // 2

    @cached_property
    def symmetry(self) -> SymmetrySpec:
        """Which tensor axes permute together and what each hidden unit's nonlinearity allows: derived by tracing
        the module (``derive.py``), memoized like the layout."""
        return SymmetrySpec.from_dict(self._remember("symmetry", lambda: self.derive().spec.to_dict()))

    def derive(self) -> Derived:
        """The module traced (``derive.derive``): layout, symmetry spec and the notes on what it does not permute.
        An ``activation`` option is passed on, so that one spec serves every activation of a zoo."""
        import torch

        from .derive import derive

        example = torch.randn(2, *self.input_shape, generator=torch.Generator().manual_seed(0))
        return derive(self.module(), example, activation=self.options.get("activation"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in manifests and store attributes; ``from_dict`` reads it back."""
        return {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "options": self.options}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Architecture:
        """Inverse of ``to_dict``; its options are not checked again, and the result is untrusted (it came from
        data: a factory it names is never called)."""
        return cls(d["name"], tuple(d["in_shape"]), int(d["num_classes"]), json.dumps(d["options"], sort_keys=True))

    def trusting(self) -> Architecture:
        """This architecture, marked as named by the caller (a factory it names may be imported and called)."""
        return dataclasses.replace(self, trusted=True)

    def pin(self, layout: Layout, symmetry: SymmetrySpec) -> Architecture:
        """Take ``layout`` and ``symmetry`` as this architecture's (a store's or an export's stored ones), so that
        reading them never builds the module; returns self."""
        self.__dict__["layout"] = layout  # what cached_property would have stored
        self.__dict__["symmetry"] = symmetry
        return self
