"""The ``zoo`` command.

Exit codes: 0 success; 1 a check failed (``verify`` found damage); 2 bad input
(a manifest, store or argument error, printed as one line naming what is wrong).
Commands that a program reads take ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .errors import ZooError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return wrap


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@command("build")
def _build(args: argparse.Namespace) -> int:
    from builders.build import build, parse_shard

    report = build(args.manifest, args.output, device=args.device, shard=parse_shard(args.shard),
                   group_size=args.group_size, quiet=args.quiet)
    summary = {"store": report.store, "units_written": report.units_written, "units_skipped": report.units_skipped,
               "groups_trained": report.groups, "model_epochs": report.model_epochs, "seconds": report.seconds,
               "model_epochs_per_s": report.model_epochs_per_s, "diverged_models": sorted(report.diverged)}
    if args.json:
        _print_json(summary)
    elif not args.quiet or report.diverged:
        print(f"{report.store}: wrote {report.units_written} unit(s), skipped {report.units_skipped} already "
              f"committed; {report.model_epochs:,} model-epochs in {report.seconds:.1f} s "
              f"({report.model_epochs_per_s:,.1f}/s)")
        if report.diverged:
            print(f"diverged (recorded with status 'diverged'): models {sorted(report.diverged)}")
    return 0


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    from .manifest import load_manifest
    from .plan import Plan

    plan = Plan(load_manifest(args.manifest), args.group_size)
    s = plan.summary()
    if args.json:
        _print_json(s)
        return 0
    rows = [("zoo", s["zoo"]), ("models", f"{s['models']:,}"), ("checkpoint epochs", _epochs(s["checkpoint_epochs"])),
            ("checkpoints", f"{s['checkpoints']:,}"),
            ("units of work", f"{s['units']:,} ({s['groups']:,} groups of up to {s['group_size']} models)")]
    rows += [(f"  {a}", f"{n:,} parameters, row of {s['row_lengths'][a]:,} floats")
             for a, n in s["architectures"].items()]
    rows.append(("store size", _bytes(s["store_bytes"])))
    print(_table(rows))
    return 0


def _epochs(epochs: list[int]) -> str:
    if len(epochs) > 3 and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}..{epochs[-1]}"
    return ", ".join(map(str, epochs))


@command("info")
def _info(args: argparse.Namespace) -> int:
    from .store import open_zoo

    info = open_zoo(args.store).info()
    if args.json:
        _print_json(info)
        return 0
    rows = [("store", info["store"]), ("zoo", info["zoo"])]
    if info["description"]:
        rows.append(("description", info["description"]))
    rows += [("models", f"{info['models_with_checkpoints']:,} with checkpoints of {info['models']:,} planned"),
             ("checkpoints", f"{info['checkpoints']:,} of {info['checkpoints_planned']:,} "
                             f"(epochs {_epochs(info['checkpoint_epochs'])})")]
    for arch_id, a in info["architectures"].items():
        rows.append((f"  {arch_id}", f"{a['name']}: {a['params']:,} parameters, rows of {a['row_length']:,} floats"))
    rows.append(("status", ", ".join(f"{k} {v:,}" for k, v in info["status"].items()) or "no checkpoints yet"))
    if info["final_test_acc"]:
        f = info["final_test_acc"]
        rows.append((f"test acc (epoch {f['epoch']})", f"{f['min']:.4f} .. {f['max']:.4f} (median {f['median']:.4f})"))
    elif info["test_acc"]:
        rows.append(("test acc", f"{info['test_acc']['min']:.4f} .. {info['test_acc']['max']:.4f}"))
    rows.append(("size on disk", _bytes(info["bytes"])))
    print(_table(rows))
    return 0


@command("status")
def _status(args: argparse.Namespace) -> int:
    from .store import open_zoo

    s = open_zoo(args.store).status()
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


@command("verify")
def _verify(args: argparse.Namespace) -> int:
    from .store import verify

    report = verify(args.store)
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


@command("compact")
def _compact(args: argparse.Namespace) -> int:
    from .store import ZooWriter

    writer = ZooWriter(args.store)
    cleaned = writer.clean_temporary()
    merged = writer.compact()
    print(f"{args.store}: merged {merged} metadata fragment(s); removed {cleaned} temporary file(s)")
    return 0


@command("architectures")
def _architectures(args: argparse.Namespace) -> int:
    from .architectures import ARCHITECTURES

    out = {name: {"doc": d.doc, "options": {k: {"default": o.default, "choices": o.choices} for k, o in
                                             d.options.items()}} for name, d in
           ((n, ARCHITECTURES.get(n)) for n in ARCHITECTURES.names())}
    if args.json:
        _print_json(out)
    else:
        for name, v in out.items():
            opts = ", ".join(f"{k}={o['default']!r}" for k, o in v["options"].items()) or "no options"
            print(f"{name}: {v['doc']}\n    options: {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Build, store and load model zoos.")
    parser.add_argument("--version", action="version", version=f"weightzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="train every model of MANIFEST into STORE (resumes where it stopped)")
    p.add_argument("manifest")
    p.add_argument("-o", "--output", required=True, metavar="STORE", help="store path (created or resumed)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="build only groups I, I+N, ... (job arrays)")
    p.add_argument("--group-size", type=int, default=None, help="models trained together (default: by row size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the build summary as one JSON object")

    p = sub.add_parser("plan", help="show what a build of MANIFEST would make, without training")
    p.add_argument("manifest")
    p.add_argument("--group-size", type=int, default=None, help="models trained together (default: by row size)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    for name, text in (("info", "summarize a store: models, checkpoints, architectures, accuracy, size"),
                       ("status", "units of work done / total"),
                       ("verify", "check every committed checkpoint against its checksum (exit 1 on damage)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("store", help="store path or fsspec URL")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("compact", help="merge metadata fragments into one Parquet file")
    p.add_argument("store")

    p = sub.add_parser("architectures", help="list registered architectures and their options")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ZooError as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to continue" if args.command == "build" else ""
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
