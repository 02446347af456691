"""Other formats: ``zoo import`` with the importers' arguments (modelzoo, smallcnnzoo, inr, hf), ``zoo export``
and ``zoo push`` (Hugging Face)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ZooError
from ..text import epochs_text
from .common import print_json
from .table import IMPORTERS, command, importer


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
        print_json(s)
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
    from ..hf import import_hf
    from ..store import open_zoo

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
    from ..hf import export_hf

    result = export_hf(args.store, args.outdir, split_fractions=_fractions(args.fractions), seed=args.seed,
                       quiet=args.quiet or args.json)
    if args.json:
        print_json(result)
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
    from ..hf import push

    url = push(args.store, args.repo_id, private=args.private, split_fractions=_fractions(args.fractions),
               seed=args.seed, quiet=args.quiet)
    print(url)
    return 0

