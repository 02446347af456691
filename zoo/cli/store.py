"""The commands that read or tidy a store: ``zoo info``, ``zoo status``, ``zoo verify``, ``zoo compact``."""

from __future__ import annotations

import argparse
from typing import Any

from ..text import byte_size, epochs_text
from .common import add_storage_option, parse_storage_options, print_json, rows_text
from .table import command


def _store_arguments(p: argparse.ArgumentParser) -> None:
    """STORE, --json and --storage-option: what the commands that read a store take."""
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_storage_option(p)


@command("info", "summarize a store: models, checkpoints, architectures, accuracy, size", _store_arguments)
def _info(args: argparse.Namespace) -> int:
    from ..store import open_zoo

    z = open_zoo(args.store, storage_options=parse_storage_options(args.storage_option))
    info = z.info()
    _explain_rows(z, info)
    if args.json:
        print_json(info)
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
    print(rows_text(rows))
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
    from ..store import open_zoo

    s = open_zoo(args.store, storage_options=parse_storage_options(args.storage_option)).status()
    if args.json:
        print_json(s)
        return 0
    pct = 100.0 * s["units_done"] / max(s["units_total"], 1)
    rows = [("store", s["store"]), ("zoo", s["zoo"]),
            ("units", f"{s['units_done']:,} / {s['units_total']:,} done ({pct:.1f}%)"),
            ("checkpoints", f"{s['checkpoints_done']:,} / {s['checkpoints_total']:,}")]
    rows += [(f"  {a}", f"{v['units_done']:,} / {v['units_total']:,} units") for a, v in s["architectures"].items()]
    rows.append(("complete", "yes" if s["complete"] else "no"))
    print(rows_text(rows))
    return 0


@command("verify", "check every committed checkpoint against its checksum (exit 1 on damage)", _store_arguments)
def _verify(args: argparse.Namespace) -> int:
    from ..store import open_zoo, verify

    report = verify(open_zoo(args.store, storage_options=parse_storage_options(args.storage_option)))
    if args.json:
        print_json(report.to_dict())
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
    add_storage_option(p)


@command("compact", "merge metadata fragments into one Parquet file", _compact_arguments)
def _compact(args: argparse.Namespace) -> int:
    from ..store import ZooWriter

    writer = ZooWriter(args.store, storage_options=parse_storage_options(args.storage_option))
    cleaned = writer.clean_temporary()
    merged = writer.compact()
    print(f"{args.store}: merged {merged} metadata fragment(s); removed {cleaned} temporary file(s)")
    return 0

