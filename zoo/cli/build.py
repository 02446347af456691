"""``zoo build`` and ``zoo plan``: training a manifest's models into a store, and what a build would make."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ZooError
from ..text import byte_size, epochs_text
from .common import add_storage_option, parse_storage_options, print_json, rows_text
from .table import command


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest")
    p.add_argument("-o", "--output", required=True, metavar="STORE",
                   help="store path or URL such as s3://bucket/zoo (created or resumed)")
    add_storage_option(p)
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
        print_json(summary)
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

    from ..manifest import load_manifest
    from ..plan import Plan

    check_population(args.population)
    plan = Plan(load_manifest(args.manifest), args.group_size)
    s = plan.summary()
    s["populations"] = population_plan(plan, plan_device(args.device), args.population)
    if args.json:
        print_json(s)
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
    print(rows_text(rows))
    return 0

