"""The ``zoo`` command.

Exit codes: 0 success; 1 a check failed (``verify`` found damage); 2 bad input
(a manifest, store or argument error, printed as one line naming what is wrong);
141 the reader of the output went away (``zoo ... | head``). Commands that a
program reads take ``--json``; ``--quiet`` hides progress bars, never the summary.

One table drives the parser and the dispatch: ``COMMANDS`` (name, help, how the
command adds its arguments, what it runs), and ``zoo import`` reads its sources
from one importer registry, ``IMPORTERS``, under one protocol (``Importer``).
Parsing imports nothing heavy: a command reaches ``builders``, ``loaders`` and
torch only inside its ``run``, so ``zoo --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from . import __version__
from .errors import ZooError
from .registry import Registry
from .text import byte_size, epochs_text

Arguments = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], Mapping[str, Any]]


@dataclass(frozen=True)
class Command:
    """One ``zoo`` subcommand: what ``zoo --help`` says of it, the arguments it adds, what it runs (exit code)."""

    name: str
    help: str
    arguments: Arguments
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, in the order ``zoo --help`` lists them.
COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, arguments: Arguments) -> Callable:  # noqa: A002 - argparse's word
    """Decorator: register the function as the ``run`` of command ``name``."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.register(name, Command(name, help, arguments, fn))
        return fn

    return wrap


@runtime_checkable
class Importer(Protocol):
    """A source format of ``zoo import NAME SRC STORE``.

    ``SRC``, ``STORE``, ``--quiet`` and ``--json`` are every importer's; ``add_arguments`` adds its own options.
    ``run`` imports ``args.src`` into ``args.store`` and returns the report ``zoo import`` prints: the keys of
    ``builders.importers.ImportReport.to_dict()`` (at least ``store``, ``zoo``, ``source`` and ``models``).
    """

    @property
    def name(self) -> str:
        """The word after ``zoo import``; the key it is registered under."""

    @property
    def help(self) -> str:
        """The line ``zoo import --help`` shows for it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's own options; the shared ones are already on ``parser``."""

    def run(self, args: argparse.Namespace) -> Mapping[str, Any]:
        """Import ``args.src`` into ``args.store``; the report described above, or a ``ZooError``."""


@dataclass(frozen=True)
class LazyImporter:
    """An ``Importer`` whose implementation is imported inside ``run`` (so parsing needs no torch)."""

    name: str
    help: str
    arguments: Arguments
    runner: Runner

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """See ``Importer.add_arguments``; must import nothing heavy (it runs for every ``zoo`` call)."""
        self.arguments(parser)

    def run(self, args: argparse.Namespace) -> Mapping[str, Any]:
        """See ``Importer.run``; the heavy imports happen here."""
        return self.runner(args)


#: ``zoo import``'s source formats: the one registry of importers.
IMPORTERS: Registry[Importer] = Registry("importer")


def importer(name: str, help: str, arguments: Arguments) -> Callable:  # noqa: A002 - argparse's word
    """Decorator: register the function as the ``run`` of import source ``name``."""

    def wrap(fn: Runner) -> Runner:
        IMPORTERS.register(name, LazyImporter(name, help, arguments, fn))
        return fn

    return wrap


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def parse_storage_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``--storage-option``) as fsspec storage options: a value that reads as JSON
    (true, 3, {...}) is that value, anything else a string; a dotted key nests
    (``client_kwargs.region_name=eu-west-1``)."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ZooError(f"--storage-option {item!r}: expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.split(".")
        target = options
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ZooError(f"--storage-option {item!r}: {part!r} is already set to a value, not options")
        target[leaf] = value
    return options


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="fsspec option for a store URL, repeatable (e.g. endpoint_url=http://127.0.0.1:9000, "
                        "anon=true); credentials usually come from the environment (AWS_ACCESS_KEY_ID, ...)")


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest")
    p.add_argument("-o", "--output", required=True, metavar="STORE",
                   help="store path or URL such as s3://bucket/zoo (created or resumed)")
    _add_storage_option(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="build only groups I, I+N, ... (job arrays)")
    p.add_argument("--group-size", type=int, default=None,
                   help="models per unit of storage: rows per shard (default: by row size; fixed at creation)")
    p.add_argument("--population", type=int, default=None, metavar="K",
                   help="models trained as one computation, in whole groups (default: what fits the device; "
                        "see zoo plan). Changes no byte of the store")
    compile_flags = p.add_mutually_exclusive_group()
    compile_flags.add_argument("--compile", dest="compile", action="store_const", const="on", default=None,
                               help="compile the training step (CUDA graph on a GPU), whatever the manifest says")
    compile_flags.add_argument("--no-compile", dest="compile", action="store_const", const="off",
                               help="run the training step eagerly (overrides training.compile)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process; ray: one Ray task per population (pip install weightzoo[ray])")
    p.add_argument("--address", default=None, help="ray: cluster address (auto, HOST:PORT); default: a local "
                                                    "Ray instance")
    p.add_argument("--gpus-per-group", type=float, default=None, metavar="F",
                   help="ray: GPUs per population task, 0..1 (default: 1 for ResNet-18-sized models, 0.25 below 1M "
                        "parameters; CPU tasks when the cluster has no GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    p.add_argument("--json", action="store_true", help="print the build summary as one JSON object")


@command("build", "train every model of MANIFEST into STORE (resumes where it stopped)", _build_arguments)
def _build(args: argparse.Namespace) -> int:
    from builders.orchestration import build, parse_shard

    if args.backend == "ray":
        if args.shard != "0/1":
            raise ZooError("--shard splits a build across job-array processes; with --backend ray, Ray spreads "
                           "the groups itself: drop --shard")
        from builders.ray_backend import ray_build

        if args.storage_option:
            raise ZooError("--storage-option is an option of local builds; Ray workers read the store's credentials "
                           "and endpoint from their environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)")

        if args.compile is not None:
            raise ZooError("--compile/--no-compile are options of local builds; with --backend ray, set "
                           "training.compile in the manifest")
        report: Any = ray_build(args.manifest, args.output, address=args.address, device=args.device,
                           gpus_per_group=args.gpus_per_group, group_size=args.group_size,
                           population=args.population, quiet=args.quiet)
    else:
        for flag, value in (("--address", args.address), ("--gpus-per-group", args.gpus_per_group)):
            if value is not None:
                raise ZooError(f"{flag} is an option of --backend ray (this build runs locally)")
        report = build(args.manifest, args.output, device=args.device, shard=parse_shard(args.shard),
                       group_size=args.group_size, population=args.population, compile=args.compile,
                       quiet=args.quiet,
                       storage_options=parse_storage_options(args.storage_option))
    summary = {"store": report.store, "units_written": report.units_written, "units_skipped": report.units_skipped,
               "groups_trained": report.groups, "model_epochs": report.model_epochs, "seconds": report.seconds,
               "model_epochs_per_s": report.model_epochs_per_s, "diverged_models": sorted(report.diverged)}
    if args.backend != "ray":
        summary.update(populations=report.populations, step_modes=sorted(report.step_modes))
    if args.backend == "ray":
        summary.update(backend="ray", tasks=report.tasks, retries=report.retries,
                       gpus_per_group=report.gpus_per_group)
    if args.json:
        _print_json(summary)
    else:  # --quiet hides the progress bar, never this summary
        print(f"{report.store}: wrote {report.units_written} unit(s), skipped {report.units_skipped} already "
              f"committed; {report.model_epochs:,} model-epochs in {report.seconds:.1f} s "
              f"({report.model_epochs_per_s:,.1f}/s)")
        if args.backend == "ray":
            print(f"ray: {report.tasks} task(s), {report.retries} retried after a worker died, "
                  f"{report.gpus_per_group:g} GPU per task")
        if report.diverged:
            print(f"diverged (recorded with status 'diverged'): models {sorted(report.diverged)}")
    return 0


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest")
    p.add_argument("--group-size", type=int, default=None, help="models per unit of storage (default: by row size)")
    p.add_argument("--population", type=int, default=None, metavar="K",
                   help="models trained as one computation (default: what fits the device)")
    p.add_argument("--device", default="auto", help="the device whose population size to show: auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("plan", "show what a build of MANIFEST would make, without training", _plan_arguments)
def _plan(args: argparse.Namespace) -> int:
    from builders.devices import plan_device
    from builders.sizing import check_population, population_plan

    from .manifest import load_manifest
    from .plan import Plan

    check_population(args.population)
    plan = Plan(load_manifest(args.manifest), args.group_size)
    s = plan.summary()
    s["populations"] = population_plan(plan, plan_device(args.device), args.population)
    if args.json:
        _print_json(s)
        return 0
    rows = [("zoo", s["zoo"]), ("models", f"{s['models']:,}"),
            ("checkpoint epochs", epochs_text(s["checkpoint_epochs"])),
            ("checkpoints", f"{s['checkpoints']:,}"),
            ("units of work", f"{s['units']:,} ({s['groups']:,} groups of up to {s['group_size']} models)")]
    rows += [(f"  {a}", f"{n:,} parameters, row of {s['row_lengths'][a]:,} floats")
             for a, n in s["architectures"].items()]
    rows.append(("store size", byte_size(s["store_bytes"])))
    pops = s["populations"]
    rows.append(("training", f"{pops['count']:,} population(s) on {pops['device']}, step {pops['step_mode']}"))
    shown: dict[tuple, int] = {}
    for k in pops["structures"]:  # structures with the same figures on one line
        key = (k["arch"], k["models"], k["why"])
        shown[key] = shown.get(key, 0) + 1
    rows += [(f"  {arch}", f"{models:,} models per population{f' ({n} structures)' if n > 1 else ''}: {why}")
             for (arch, models, why), n in shown.items()]
    print(_table(rows))
    return 0


def _store_arguments(p: argparse.ArgumentParser) -> None:
    """STORE, --json and --storage-option: what the commands that read a store take."""
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_storage_option(p)


@command("info", "summarize a store: models, checkpoints, architectures, accuracy, size", _store_arguments)
def _info(args: argparse.Namespace) -> int:
    from .store import open_zoo

    z = open_zoo(args.store, storage_options=parse_storage_options(args.storage_option))
    info = z.info()
    _explain_rows(z, info)
    if args.json:
        _print_json(info)
        return 0
    rows = [("store", info["store"]), ("zoo", info["zoo"])]
    if info["description"]:
        rows.append(("description", info["description"]))
    rows += [("models", f"{info['models_with_checkpoints']:,} with checkpoints of {info['models']:,} planned"),
             ("checkpoints", f"{info['checkpoints']:,} of {info['checkpoints_planned']:,} "
                             f"(epochs {epochs_text(info['checkpoint_epochs'])})")]
    for arch_id, a in info["architectures"].items():
        rows.append((f"  {arch_id}", f"{a['name']}: {a['params']:,} parameters, {a['rows']:,} rows of "
                                     f"{a['row_length']:,} floats ({a['rows_planned']:,} for checkpoints, "
                                     f"{a['rows_padding']:,} padding)"))
    rows.append(("status", ", ".join(f"{k} {v:,}" for k, v in info["status"].items()) or "no checkpoints yet"))
    if info["final_test_acc"]:
        f = info["final_test_acc"]
        rows.append((f"test acc (epoch {f['epoch']})", f"{f['min']:.4f} .. {f['max']:.4f} (median {f['median']:.4f})"))
    elif info["test_acc"]:
        rows.append(("test acc", f"{info['test_acc']['min']:.4f} .. {info['test_acc']['max']:.4f}"))
    rows.append(("size on disk", byte_size(info["bytes"])))
    print(_table(rows))
    return 0


def _explain_rows(z: Any, info: dict[str, Any]) -> None:
    """Say why an architecture's weights array has more rows than checkpoints: per architecture, the rows
    planned checkpoints own (committed or not yet written) and the padding of partial groups."""
    plan = z.plan
    for arch_id, a in info["architectures"].items():
        planned = sum(len(g.model_ids) for g in plan.groups if g.arch_id == arch_id) * len(plan.epochs)
        a["rows_planned"] = planned
        a["rows_padding"] = a["rows"] - planned
    info["rows_note"] = (f"an architecture's weights array has one row per planned checkpoint (rows_planned: "
                         f"committed or not yet written) plus padding (rows_padding): a unit of work owns "
                         f"whole shards of group_size = {plan.group_size} rows, so the unused slots of a group "
                         "with fewer models are zero rows that no checkpoint uses; rows = groups x checkpoint "
                         "epochs x group_size")


@command("status", "units of work done / total", _store_arguments)
def _status(args: argparse.Namespace) -> int:
    from .store import open_zoo

    s = open_zoo(args.store, storage_options=parse_storage_options(args.storage_option)).status()
    if args.json:
        _print_json(s)
        return 0
    pct = 100.0 * s["units_done"] / max(s["units_total"], 1)
    rows = [("store", s["store"]), ("zoo", s["zoo"]),
            ("units", f"{s['units_done']:,} / {s['units_total']:,} done ({pct:.1f}%)"),
            ("checkpoints", f"{s['checkpoints_done']:,} / {s['checkpoints_total']:,}")]
    rows += [(f"  {a}", f"{v['units_done']:,} / {v['units_total']:,} units") for a, v in s["architectures"].items()]
    rows.append(("complete", "yes" if s["complete"] else "no"))
    print(_table(rows))
    return 0


@command("verify", "check every committed checkpoint against its checksum (exit 1 on damage)", _store_arguments)
def _verify(args: argparse.Namespace) -> int:
    from .store import open_zoo, verify

    report = verify(open_zoo(args.store, storage_options=parse_storage_options(args.storage_option)))
    if args.json:
        _print_json(report.to_dict())
    else:
        for d in report.damaged:
            print(f"damaged: {d}")
        for p in report.problems:
            print(f"problem: {p}")
        for n in report.notes:
            print(f"note: {n}")
        verdict = "ok" if report.ok else f"FAILED: {len(report.damaged)} damaged checkpoint(s)"
        print(f"{report.store}: {report.checked:,} checkpoints checked, {verdict}")
    return 0 if report.ok else 1


def _compact_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="store path or fsspec URL")
    _add_storage_option(p)


@command("compact", "merge metadata fragments into one Parquet file", _compact_arguments)
def _compact(args: argparse.Namespace) -> int:
    from .store import ZooWriter

    writer = ZooWriter(args.store, storage_options=parse_storage_options(args.storage_option))
    cleaned = writer.clean_temporary()
    merged = writer.compact()
    print(f"{args.store}: merged {merged} metadata fragment(s); removed {cleaned} temporary file(s)")
    return 0


def _json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


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
    _json_argument(p)


@command("architectures", "list registered architectures and their options; --check NAME derives an architecture's "
                          "symmetry spec and checks it", _architectures_arguments)
def _architectures(args: argparse.Namespace) -> int:
    from .architectures import ARCHITECTURES

    if args.check is not None:
        return _check_architecture(args)
    given = [f"--{k.replace('_', '-')}" for k in ("in_shape", "dataset", "classes", "kwargs") if getattr(args, k)]
    if given or args.option:
        raise ZooError(f"{(given or ['--option'])[0]} goes with --check NAME (zoo architectures --check NAME ...)")
    out: dict[str, dict[str, Any]] = {
        name: {"doc": d.doc, "options": {k: {"default": o.default, "choices": o.choices} for k, o in d.options.items()}}
        for name, d in ((n, ARCHITECTURES.get(n)) for n in ARCHITECTURES.names())}
    if args.json:
        _print_json(out)
    else:
        for name, v in out.items():
            opts = ", ".join(f"{k}={o['default']!r}" for k, o in v["options"].items()) or "no options"
            print(f"{name}: {v['doc']}\n    options: {opts}")
        print("also: torchvision:NAME (a torchvision classification model) and package.module:function (your own "
              "factory); zoo architectures --check NAME shows what their derived symmetry spec covers")
    return 0


def _check_options(args: argparse.Namespace) -> tuple[tuple[int, int, int], int, dict[str, Any]]:
    """--check's input shape, classes and options (a ``ZooError`` naming the argument for a bad one)."""
    from .architectures import is_external
    from .datasets import DATASETS, input_shape

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
    from .architectures import get_architecture

    shape, classes, options = _check_options(args)
    arch = get_architecture(args.check, shape, classes, **options)  # an unknown name lists the registered ones
    import torch

    from .architectures.check import describe, preservation_error
    from .symmetry import SYMMETRIES

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
        _print_json({"architecture": arch.to_dict(), "params": derived.layout.num_params,
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


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for index.html and its PNG figures "
                                                                         "(created)")
    p.add_argument("--weight-models", type=int, default=48, metavar="N",
                   help="models per architecture whose checkpoints feed the weight statistics (default 48)")
    p.add_argument("--pca-points", type=int, default=2000, metavar="N",
                   help="final checkpoints per architecture in the PCA (default 2000)")
    p.add_argument("--curve-models", type=int, default=40, metavar="N",
                   help="training curves drawn per architecture (default 40; median and band use every model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--data-root", default=None, help="inr zoos: where the dataset's files are, for the original "
                                                     "images (default ~/.cache/weightzoo/data; nothing is downloaded, "
                                                     "and the root a store names is never used)")
    p.add_argument("--json", action="store_true", help="print the report summary as one JSON object")


@command("report", "write DIR/index.html: figures of accuracy (inr zoos: PSNR, originals beside reconstructions), "
                   "hyperparameters, training curves and weights (opens offline)", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from builders.data import load_images  # the report's inr originals: zoo itself never imports builders

    from .report import ReportOptions, write_report

    opts = ReportOptions(weight_models=args.weight_models, pca_points=args.pca_points, curve_models=args.curve_models,
                         seed=args.seed, data_root=args.data_root)
    result = write_report(args.store, args.output, opts, images=load_images)
    if args.json:
        _print_json(result)
    else:
        c = result["counts"]
        print(f"{result['index']}: {c['checkpoints']:,} checkpoints of {c['models_with_checkpoints']:,} models, "
              f"{len(result['figures'])} figures in {result['seconds']:.1f} s")
    return 0


def _import_arguments(p: argparse.ArgumentParser) -> None:
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for source in IMPORTERS.values():
        sp = sources.add_parser(source.name, help=source.help, description=source.help)
        sp.add_argument("src", metavar="SRC", help="what to import")
        sp.add_argument("store", metavar="STORE", help="store to create (path or fsspec URL); rerun to resume")
        sp.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
        sp.add_argument("--json", action="store_true", help="print the import summary as one JSON object")
        source.add_arguments(sp)


@command("import", "read a zoo published in another format into a new store", _import_arguments)
def _import(args: argparse.Namespace) -> int:
    s = dict(IMPORTERS.get(args.source).run(args))
    if args.json:
        _print_json(s)
        return 0
    line = f"{s.get('store')}: imported {s.get('models', 0):,} models"
    if "checkpoints" in s:
        line += f", {s['checkpoints']:,} checkpoints"
    if s.get("checkpoint_epochs"):
        line += f" (epochs {epochs_text(s['checkpoint_epochs'])})"
    line += f" from {s.get('source')} as zoo {s.get('zoo')!r}"
    if "units_written" in s:
        line += f"; wrote {s['units_written']:,} unit(s), skipped {s.get('units_skipped', 0):,} already committed"
    print(line)
    if s.get("manifest") == "published":
        print("the zoo's published manifest describes exactly these models: the store keeps it")
    if s.get("skipped_models"):
        reasons = s.get("skipped_reasons") or {}
        print(f"left out {len(s['skipped_models'])} incomplete model(s):")
        for name in s["skipped_models"]:  # each with its file and what is wrong, so a re-download can be aimed
            print(f"  {name}" + (f": {reasons[name]}" if name in reasons else ""))
    if s.get("diverged_checkpoints"):
        print(f"{s['diverged_checkpoints']:,} checkpoint(s) with non-finite weights or loss "
              "(recorded with status 'diverged')")
    return 0


def _published_zoo_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the importers of published zoo folders (modelzoo, smallcnnzoo)."""
    p.add_argument("--name", default=None, help="zoo name (default: the manifest's, else from SRC)")
    p.add_argument("--group-size", type=int, default=None, help="models per unit of work (default: by row size)")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out models lacking some of the zoo's checkpoint epochs (else an error)")


def _modelzoo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", default=None, help="the zoo's published manifest (manifests/modelzoo/*.toml): "
                                                    "dataset preprocessing, license, recipe fields the trials omit")
    p.add_argument("--dataset", default=None, help="the image dataset, when no --manifest is given")
    _published_zoo_arguments(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that read and commit the checkpoint files (default: one per CPU; 0 or 1: "
                        "this process alone)")


@importer("modelzoo", "Model Zoos (Schürholt et al. 2022): SRC is a folder of Ray Tune trial folders (params.json, "
                      "result.json, checkpoint_NNNNNN/checkpoints), or a folder above one such zoo (the root of a "
                      "wsl-modelzoo download: every tune_zoo_* folder below it is a zoo)", _modelzoo_arguments)
def _import_modelzoo(args: argparse.Namespace) -> Any:
    from builders.importers import import_modelzoo

    return import_modelzoo(args.src, args.store, manifest=args.manifest, dataset=args.dataset, name=args.name,
                           group_size=args.group_size, skip_incomplete=args.skip_incomplete,
                           quiet=args.quiet or args.json, workers=args.workers).to_dict()


def _smallcnnzoo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", default=None, help="the zoo's published manifest (manifests/smallcnnzoo/*.toml); "
                                                    "default: the published preprocessing facts")
    _published_zoo_arguments(p)


@importer("smallcnnzoo", "Small CNN Zoo (Unterthiner et al. 2020): SRC holds weights.npy, metrics.csv.gz and "
                         "layout.csv", _smallcnnzoo_arguments)
def _import_smallcnnzoo(args: argparse.Namespace) -> Any:
    from builders.importers import import_smallcnnzoo

    return import_smallcnnzoo(args.src, args.store, manifest=args.manifest, name=args.name,
                              group_size=args.group_size, skip_incomplete=args.skip_incomplete,
                              quiet=args.quiet or args.json).to_dict()


def _inr_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convention", required=True, metavar="NAME",
                   help="the set's layout and SIREN conventions: dwsnets or nfn (see 'Importing published zoos')")
    p.add_argument("--dataset", default=None, help="the image dataset (default: read from the folder names)")
    p.add_argument("--name", default=None, help="zoo name (default: DATASET-inr-CONVENTION)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="the optimizer steps of every fit, when known (the checkpoint's epoch and step; default: "
                        "unknown, epoch 1 with a null step)")
    p.add_argument("--evaluate", action="store_true",
                   help="record mse, psnr and psnr_2x against the dataset's images (its files must be under "
                        "--data-root: nothing is downloaded) and check each file's class against its image's")
    p.add_argument("--data-root", default=None, help="where the dataset's files are (default ~/.cache/weightzoo/data)")
    p.add_argument("--group-size", type=int, default=None, help="models per unit of work (default 1024)")


@importer("inr", "published INR sets (DWSNets, NFN): SRC is a folder of per-INR state-dict files in the published "
                 "layout, whose paths give each image's split, index and class", _inr_arguments)
def _import_inr(args: argparse.Namespace) -> Any:
    from builders.importers import import_inr

    return import_inr(args.src, args.store, convention=args.convention, dataset=args.dataset, name=args.name,
                      steps=args.steps, evaluate=args.evaluate, data_root=args.data_root,
                      group_size=args.group_size, quiet=args.quiet or args.json).to_dict()


def _hf_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub", action="store_true", help="SRC is a Hub dataset id user/name, never a local path")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")


@importer("hf", "a Hugging Face export (zoo export hf / zoo push): SRC is its folder, or a Hub dataset as "
                "hf://user/name[@revision] (or user/name with --hub)", _hf_arguments)
def _import_hf(args: argparse.Namespace) -> Any:
    from .hf import import_hf
    from .store import open_zoo

    result = import_hf(args.src, args.store, hub=args.hub, revision=args.revision, quiet=args.quiet or args.json)
    z = open_zoo(result["store"])
    return {**result, "source": args.src, "zoo": z.manifest.name,
            "models": len(set(z.metadata.column("model_id").to_pylist())), "checkpoint_epochs": list(z.plan.epochs)}


def _fractions(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ZooError(f"--fractions {text!r}: expected train,val,test fractions, e.g. 0.8,0.1,0.1") from None
    if len(values) != 3:
        raise ZooError(f"--fractions {text!r}: expected three fractions (train,val,test)")
    return dict(zip(("train", "val", "test"), values))


def _split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fractions", default=None, metavar="TRAIN,VAL,TEST",
                   help="split fractions by model (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    p = targets.add_parser("hf", help="a Hugging Face dataset repository folder: dataset card + Parquet per split")
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("outdir", help="output folder (new or empty)")
    _split_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@command("export", "write a store in another format (hf: a Hugging Face dataset folder)", _export_arguments)
def _export(args: argparse.Namespace) -> int:
    from .hf import export_hf

    result = export_hf(args.store, args.outdir, split_fractions=_fractions(args.fractions), seed=args.seed,
                       quiet=args.quiet or args.json)
    if args.json:
        _print_json(result)
    else:  # --quiet hides the progress bar, never this summary
        rows = ", ".join(f"{a}: " + ", ".join(f"{s} {n:,}" for s, n in c.items()) for a, c in result["rows"].items())
        print(f"{result['outdir']}: {result['checkpoints']:,} checkpoints in {result['files']} Parquet file(s) "
              f"({rows}); load with datasets.load_dataset({result['outdir']!r})")
    return 0


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("repo_id", help="user/name on the Hub (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    _split_arguments(p)


@command("push", "export STORE and upload it as the Hugging Face dataset REPO_ID", _push_arguments)
def _push(args: argparse.Namespace) -> int:
    from .hf import push

    url = push(args.store, args.repo_id, private=args.private, split_fractions=_fractions(args.fractions),
               seed=args.seed, quiet=args.quiet)
    print(url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="zoo", description="Build, store and load model zoos.")
    parser.add_argument("--version", action="version", version=f"weightzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        cmd.arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``zoo``; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `zoo ... | head`: the reader left; say nothing more, and never again (at exit)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS.get(args.command).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except ZooError as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to continue" if args.command in ("build", "import") else ""
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
