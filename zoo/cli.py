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


@command("build")
def _build(args: argparse.Namespace) -> int:
    from builders.build import build, parse_shard

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
        report = ray_build(args.manifest, args.output, address=args.address, device=args.device,
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
    elif not args.quiet or report.diverged:
        print(f"{report.store}: wrote {report.units_written} unit(s), skipped {report.units_skipped} already "
              f"committed; {report.model_epochs:,} model-epochs in {report.seconds:.1f} s "
              f"({report.model_epochs_per_s:,.1f}/s)")
        if args.backend == "ray":
            print(f"ray: {report.tasks} task(s), {report.retries} retried after a worker died, "
                  f"{report.gpus_per_group:g} GPU per task")
        if report.diverged:
            print(f"diverged (recorded with status 'diverged'): models {sorted(report.diverged)}")
    return 0


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    from builders.build import check_population, resolve_device
    from builders.sizing import population_plan

    from .manifest import load_manifest
    from .plan import Plan

    check_population(args.population)
    plan = Plan(load_manifest(args.manifest), args.group_size)
    s = plan.summary()
    s["populations"] = population_plan(plan, resolve_device(args.device), args.population)
    if args.json:
        _print_json(s)
        return 0
    rows = [("zoo", s["zoo"]), ("models", f"{s['models']:,}"), ("checkpoint epochs", _epochs(s["checkpoint_epochs"])),
            ("checkpoints", f"{s['checkpoints']:,}"),
            ("units of work", f"{s['units']:,} ({s['groups']:,} groups of up to {s['group_size']} models)")]
    rows += [(f"  {a}", f"{n:,} parameters, row of {s['row_lengths'][a]:,} floats")
             for a, n in s["architectures"].items()]
    rows.append(("store size", _bytes(s["store_bytes"])))
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


def _epochs(epochs: list[int]) -> str:
    if len(epochs) > 3 and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}..{epochs[-1]}"
    return ", ".join(map(str, epochs))


@command("info")
def _info(args: argparse.Namespace) -> int:
    from .store import open_zoo

    info = open_zoo(args.store, storage_options=parse_storage_options(args.storage_option)).info()
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


@command("verify")
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


@command("compact")
def _compact(args: argparse.Namespace) -> int:
    from .store import ZooWriter

    writer = ZooWriter(args.store, storage_options=parse_storage_options(args.storage_option))
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


@command("report")
def _report(args: argparse.Namespace) -> int:
    from .report import ReportOptions, write_report

    opts = ReportOptions(weight_models=args.weight_models, pca_points=args.pca_points, curve_models=args.curve_models,
                         seed=args.seed)
    result = write_report(args.store, args.output, opts)
    if args.json:
        _print_json(result)
    else:
        c = result["counts"]
        print(f"{result['index']}: {c['checkpoints']:,} checkpoints of {c['models_with_checkpoints']:,} models, "
              f"{len(result['figures'])} figures in {result['seconds']:.1f} s")
    return 0


#: ``zoo import SOURCE SRC STORE``: one handler per source format, returning a report (``to_dict``) or a dict.
IMPORT_SOURCES: dict[str, Callable[[argparse.Namespace], Any]] = {}


def import_source(name: str) -> Callable:
    def wrap(fn: Callable[[argparse.Namespace], Any]) -> Callable:
        IMPORT_SOURCES[name] = fn
        return fn

    return wrap


@command("import")
def _import(args: argparse.Namespace) -> int:
    report = IMPORT_SOURCES[args.source](args)
    s = report if isinstance(report, dict) else report.to_dict()
    if args.json:
        _print_json(s)
        return 0
    if not args.quiet:
        line = f"{s.get('store')}: imported {s.get('models', 0):,} models"
        if "checkpoints" in s:
            line += f", {s['checkpoints']:,} checkpoints"
        if s.get("checkpoint_epochs"):
            line += f" (epochs {_epochs(s['checkpoint_epochs'])})"
        line += f" from {s.get('source')} as zoo {s.get('zoo')!r}"
        if "units_written" in s:
            line += f"; wrote {s['units_written']:,} unit(s), skipped {s.get('units_skipped', 0):,} already committed"
        print(line)
        if s.get("manifest") == "published":
            print("the zoo's published manifest describes exactly these models: the store keeps it")
        if s.get("skipped_models"):
            print(f"left out {len(s['skipped_models'])} incomplete model(s): {', '.join(s['skipped_models'][:5])}"
                  + (", ..." if len(s["skipped_models"]) > 5 else ""))
        if s.get("diverged_checkpoints"):
            print(f"{s['diverged_checkpoints']:,} checkpoint(s) with non-finite weights or loss "
                  "(recorded with status 'diverged')")
    return 0


@import_source("modelzoo")
def _import_modelzoo(args: argparse.Namespace) -> Any:
    from builders.importers import import_modelzoo

    return import_modelzoo(args.src, args.store, manifest=args.manifest, dataset=args.dataset, name=args.name,
                           group_size=args.group_size, skip_incomplete=args.skip_incomplete,
                           quiet=args.quiet or args.json)


@import_source("smallcnnzoo")
def _import_smallcnnzoo(args: argparse.Namespace) -> Any:
    from builders.importers import import_smallcnnzoo

    return import_smallcnnzoo(args.src, args.store, manifest=args.manifest, name=args.name,
                              group_size=args.group_size, skip_incomplete=args.skip_incomplete,
                              quiet=args.quiet or args.json)


@import_source("hf")
def _import_hf(args: argparse.Namespace) -> Any:
    from .hub import import_hf

    from .store import open_zoo

    result = import_hf(args.src, args.store, revision=args.revision, quiet=args.quiet or args.json)
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


@command("export")
def _export(args: argparse.Namespace) -> int:
    from .hub import export_hf

    result = export_hf(args.store, args.outdir, split_fractions=_fractions(args.fractions), seed=args.seed,
                       quiet=args.quiet or args.json)
    if args.json:
        _print_json(result)
    elif not args.quiet:
        rows = ", ".join(f"{a}: " + ", ".join(f"{s} {n:,}" for s, n in c.items()) for a, c in result["rows"].items())
        print(f"{result['outdir']}: {result['checkpoints']:,} checkpoints in {result['files']} Parquet file(s) "
              f"({rows}); load with datasets.load_dataset({result['outdir']!r})")
    return 0


@command("push")
def _push(args: argparse.Namespace) -> int:
    from .hub import push

    url = push(args.store, args.repo_id, private=args.private, split_fractions=_fractions(args.fractions),
               seed=args.seed, quiet=args.quiet)
    print(url)
    return 0


def _import_parser(sources: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    """The subparser of ``zoo import NAME SRC STORE``, with the arguments every source shares."""
    p = sources.add_parser(name, help=text, description=text)
    p.add_argument("src", metavar="SRC", help="what to import")
    p.add_argument("store", metavar="STORE", help="store to create (path or fsspec URL); rerun to resume")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the import summary as one JSON object")
    return p


def _add_import_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="read a zoo published in another format into a new store")
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = _import_parser(sources, "modelzoo", "Model Zoos (Schürholt et al. 2022): SRC is a folder of Ray Tune trial "
                                            "folders (params.json, result.json, checkpoint_NNNNNN/checkpoints)")
    p.add_argument("--manifest", default=None, help="the zoo's published manifest (manifests/modelzoo/*.toml): "
                                                    "dataset preprocessing, license, recipe fields the trials omit")
    p.add_argument("--dataset", default=None, help="the image dataset, when no --manifest is given")
    p = _import_parser(sources, "smallcnnzoo", "Small CNN Zoo (Unterthiner et al. 2020): SRC holds weights.npy, "
                                               "metrics.csv.gz and layout.csv")
    p.add_argument("--manifest", default=None, help="the zoo's published manifest (manifests/smallcnnzoo/*.toml); "
                                                    "default: the published preprocessing facts")
    p = _import_parser(sources, "hf", "a Hugging Face export (zoo export hf / zoo push): SRC is its folder or a Hub "
                                      "dataset id (user/name)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    for p in (sources.choices["modelzoo"], sources.choices["smallcnnzoo"]):
        p.add_argument("--name", default=None, help="zoo name (default: the manifest's, else from SRC)")
        p.add_argument("--group-size", type=int, default=None, help="models per unit of work (default: by row size)")
        p.add_argument("--skip-incomplete", action="store_true",
                       help="leave out models lacking some of the zoo's checkpoint epochs (else an error)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Build, store and load model zoos.")
    parser.add_argument("--version", action="version", version=f"weightzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="train every model of MANIFEST into STORE (resumes where it stopped)")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the build summary as one JSON object")

    p = sub.add_parser("plan", help="show what a build of MANIFEST would make, without training")
    p.add_argument("manifest")
    p.add_argument("--group-size", type=int, default=None, help="models per unit of storage (default: by row size)")
    p.add_argument("--population", type=int, default=None, metavar="K",
                   help="models trained as one computation (default: what fits the device)")
    p.add_argument("--device", default="auto", help="the device whose population size to show: auto, cpu, cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    for name, text in (("info", "summarize a store: models, checkpoints, architectures, accuracy, size"),
                       ("status", "units of work done / total"),
                       ("verify", "check every committed checkpoint against its checksum (exit 1 on damage)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("store", help="store path or fsspec URL")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        _add_storage_option(p)

    p = sub.add_parser("compact", help="merge metadata fragments into one Parquet file")
    p.add_argument("store", help="store path or fsspec URL")
    _add_storage_option(p)

    p = sub.add_parser("architectures", help="list registered architectures and their options")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="write DIR/index.html: figures of accuracy, hyperparameters, training curves "
                                      "and weights (opens offline)")
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
    p.add_argument("--json", action="store_true", help="print the report summary as one JSON object")

    p = sub.add_parser("export", help="write a store in another format (hf: a Hugging Face dataset folder)")
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    p = targets.add_parser("hf", help="a Hugging Face dataset repository folder: dataset card + Parquet per split")
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("outdir", help="output folder (new or empty)")
    p = sub.add_parser("push", help="export STORE and upload it as the Hugging Face dataset REPO_ID")
    p.add_argument("store", help="store path or fsspec URL")
    p.add_argument("repo_id", help="user/name on the Hub (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    for p in (targets.choices["hf"], sub.choices["push"]):
        p.add_argument("--fractions", default=None, metavar="TRAIN,VAL,TEST",
                       help="split fractions by model (default 0.7,0.15,0.15)")
        p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    targets.choices["hf"].add_argument("--json", action="store_true", help="print the summary as one JSON object")

    _add_import_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ZooError as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to continue" if args.command in ("build", "import") else ""
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
