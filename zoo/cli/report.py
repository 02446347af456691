"""``zoo report``: a store's offline HTML report of figures."""

from __future__ import annotations

import argparse

from .common import print_json
from .table import command


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

    from ..report import ReportOptions, write_report

    opts = ReportOptions(weight_models=args.weight_models, pca_points=args.pca_points, curve_models=args.curve_models,
                         seed=args.seed, data_root=args.data_root)
    result = write_report(args.store, args.output, opts, images=load_images)
    if args.json:
        print_json(result)
    else:
        c = result["counts"]
        print(f"{result['index']}: {c['checkpoints']:,} checkpoints of {c['models_with_checkpoints']:,} models, "
              f"{len(result['figures'])} figures in {result['seconds']:.1f} s")
    return 0

