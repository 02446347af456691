"""``zoo architectures``: the registered architectures, and ``--check NAME``, which derives an architecture's
symmetry spec and tests that its transforms keep the outputs (docs/design.md §2)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ZooError
from .common import json_argument, print_json
from .table import command

#: The largest relative output error ``zoo architectures --check`` accepts after a symmetry transform (float64):
#: rounding of a correct spec is ~1e-15, a wrong axis gives errors of order 1.
CHECK_TOLERANCE = 1e-5


def _architectures_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", metavar="NAME",
                   help="derive NAME's symmetry spec (a registered architecture, torchvision:NAME or "
                        "package.module:function), print its groups and what it leaves unpermuted, and check that "
                        "random permutations, rescalings and sign flips keep its outputs (exit 1 if one does not)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--in-shape", metavar="C,H,W", help="input image shape for --check (default 3,32,32)")
    where.add_argument("--dataset", metavar="NAME", help="take --check's input shape and classes from a registered "
                                                         "dataset (its native size)")
    p.add_argument("--classes", type=int, metavar="N", help="classes for --check (default: the dataset's, else 10)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of a registered architecture, or a keyword argument of a torchvision/factory "
                        "constructor; VALUE is read as JSON (4, [16, 16], true), else as a string (repeatable)")
    p.add_argument("--kwargs", metavar="JSON", help="a torchvision/factory constructor's keyword arguments as one JSON "
                                                    "object (as [architecture.kwargs] in a manifest)")
    json_argument(p)


@command("architectures", "list registered architectures and their options; --check NAME derives an architecture's "
                          "symmetry spec and checks it", _architectures_arguments)
def _architectures(args: argparse.Namespace) -> int:
    from ..architectures import ARCHITECTURES

    if args.check is not None:
        return _check_architecture(args)
    given = [f"--{k.replace('_', '-')}" for k in ("in_shape", "dataset", "classes", "kwargs") if getattr(args, k)]
    if given or args.option:
        raise ZooError(f"{(given or ['--option'])[0]} goes with --check NAME (zoo architectures --check NAME ...)")
    out: dict[str, dict[str, Any]] = {
        name: {"doc": d.doc, "options": {k: {"default": o.default, "choices": o.choices} for k, o in d.options.items()}}
        for name, d in ((n, ARCHITECTURES.get(n)) for n in ARCHITECTURES.names())}
    if args.json:
        print_json(out)
    else:
        for name, v in out.items():
            opts = ", ".join(f"{k}={o['default']!r}" for k, o in v["options"].items()) or "no options"
            print(f"{name}: {v['doc']}\n    options: {opts}")
        print("also: torchvision:NAME (a torchvision classification model) and package.module:function (your own "
              "factory); zoo architectures --check NAME shows what their derived symmetry spec covers")
    return 0


def _check_options(args: argparse.Namespace) -> tuple[tuple[int, int, int], int, dict[str, Any]]:
    """--check's input shape, classes and options (a ``ZooError`` naming the argument for a bad one)."""
    from ..architectures import is_external
    from ..datasets import DATASETS, input_shape

    classes = 10
    shape: tuple[int, ...]
    if args.dataset is not None:
        shape = input_shape(DATASETS.get(args.dataset).name)
        classes = DATASETS.get(args.dataset).num_classes
    else:
        text = args.in_shape or "3,32,32"
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ZooError(f"--in-shape: got {text!r}; expected three positive integers C,H,W (e.g. 3,32,32)")
    if args.classes is not None:
        if args.classes < 1:
            raise ZooError(f"--classes: got {args.classes}; expected a positive integer")
        classes = args.classes
    options: dict[str, Any] = {}
    if args.kwargs is not None:
        if not is_external(args.check):
            raise ZooError(f"--kwargs: {args.check!r} is a registered architecture; give its options as --option "
                           "KEY=VALUE (--kwargs is for torchvision:NAME and package.module:function)")
        try:
            options = json.loads(args.kwargs)
        except json.JSONDecodeError as e:
            raise ZooError(f"--kwargs: not valid JSON ({e}): {args.kwargs!r}") from None
        if not isinstance(options, dict):
            raise ZooError(f"--kwargs: expected a JSON object of keyword arguments, got {args.kwargs!r}")
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ZooError(f"--option: got {item!r}; expected KEY=VALUE (e.g. --option width=32)")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value  # a bare word: activation=tanh
    return (shape[0], shape[1], shape[2]), classes, options


def _check_architecture(args: argparse.Namespace) -> int:
    """``zoo architectures --check NAME``: the derived spec, what it leaves out, and the exactness test of
    docs/design.md §2 run on NAME, so a user sees what a zoo of their own module will permute before building."""
    from ..architectures import get_architecture

    shape, classes, options = _check_options(args)
    arch = get_architecture(args.check, shape, classes, **options)  # an unknown name lists the registered ones
    import torch

    from ..architectures.check import describe, preservation_error
    from ..symmetry import SYMMETRIES

    derived = arch.derive()
    spec, activation = derived.spec, arch.activation
    module = arch.module()
    example = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(0))
    checks = {}
    for kind in SYMMETRIES:
        error = preservation_error(module, derived.layout, spec, example, activation=activation, symmetries=(kind,))
        drawn = any(kind in g.allowed(activation) for g in spec.groups.values())
        checks[kind] = {"error": error, "ok": error <= CHECK_TOLERANCE, "drawn": drawn}
    ok = all(c["ok"] for c in checks.values())
    if args.json:
        print_json({"architecture": arch.to_dict(), "params": derived.layout.num_params,
                     "groups": describe(spec, activation), "notes": derived.notes, "tolerance": CHECK_TOLERANCE,
                     "checks": checks, "ok": ok})
        return 0 if ok else 1
    print(f"{arch.name} on {'x'.join(map(str, shape))} inputs, {classes} classes: {derived.layout.num_params:,} "
          f"parameters in {len(derived.layout.tensors)} tensors" + (f"; activation {activation}" if activation else ""))
    print(f"permutation groups ({len(spec.groups)}):")
    for line in describe(spec, activation) or ["none: nothing is permuted"]:
        print(f"  {line}")
    print(f"not permuted ({len(derived.notes)} note(s)):" if derived.notes else
          "not permuted: nothing beyond the input and output axes")
    for note in derived.notes:
        print(f"  {note}")
    print(f"function preservation (relative output error after a random transform, float64, eval mode; "
          f"tolerance {CHECK_TOLERANCE:g}):")
    for kind, c in checks.items():
        extra = "" if c["drawn"] else "  (no group allows it: nothing to draw)"
        print(f"  {kind:<9} {c['error']:.2e}  {'PASS' if c['ok'] else 'FAIL'}{extra}")
    return 0 if ok else 1

