"""``zoo report``: a zoo at a glance, as one offline HTML page with PNG figures beside it.

Before anyone trains on a zoo they ask: did the models learn, what do the hyperparameters do, did any
diverge, how do the weights move during training? The page answers with figures made from the store
alone (metadata and weights; no manifest file, no dataset, no network). An inr zoo (one neural field per
image) is judged by PSNR instead of test accuracy, and its page adds a grid of original images beside
the fields' reconstructions; only the originals of that grid are read from the zoo's dataset, through the
image reader the caller hands in (``zoo report`` passes ``builders.data.load_images``: ``zoo`` never imports
``builders`` itself), and where they cannot be, the grid shows the reconstructions alone and says why.

Cost is bounded whatever the zoo's size: every figure drawn from metadata uses all of it (a Parquet
table of one row per checkpoint is small), while weights are read only for a seeded sample of models
and final checkpoints, capped by ``ReportOptions.read_bytes`` per architecture. The page states every
sample size. Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so nothing global (the backend, open figures) changes in the caller's process.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import __version__
from .columns import varied_columns
from .datasets import DATASETS
from .errors import ZooError

try:  # the report's one heavy dependency, an extra: say how to get it rather than fail on import
    import matplotlib
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ModuleNotFoundError as e:  # pragma: no cover - the test extra installs matplotlib
    raise ZooError("zoo report draws with matplotlib, which is not installed: pip install -e \".[report]\" "
                   "(or \".[all]\")") from e
from .layout import TRAINABLE_ROLES, Layout
from .manifest import SECTIONS
from .store import open_zoo
from .store.reader import Zoo
from .text import byte_size, epochs_text

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: Hyperparameter columns never plotted as a panel: the seed only names a model.
NOT_PLOTTED = frozenset({"seed"})
#: Up to this many distinct values a hyperparameter is shown as a box per value; above, as a scatter.
MAX_CATEGORIES = 12
READ_BATCH_BYTES = 64 * 2**20
STYLE: dict[RcKeyType, Any] = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 9, "figure.titlesize": 13, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 110}
ACC_LABEL = "test accuracy (fraction correct)"
PSNR_LABEL = "PSNR (dB; pixel values in [0, 1])"
#: An inr zoo's per-checkpoint fit columns: (column, heading, what it measures).
INR_METRICS = (("mse", "MSE", "mean squared error of the pixels on the image's grid"),
               ("psnr", "PSNR (dB)", "-10 log10(MSE) on the image's grid"),
               ("psnr_2x", "PSNR 2× (dB)", "on a 2× grid, against the bilinearly upsampled image"))
#: Reads images ``indices`` of ``split`` of a manifest's dataset section: ((N, C, H, W) pixels in [0, 1], labels),
#: as ``builders.data.load_images`` does; how an inr report gets its originals without importing ``builders``.
ImageReader = Callable[[Mapping[str, Any], str, Sequence[int]], tuple[torch.Tensor, Any]]
#: Axis titles for hyperparameter columns whose names are abbreviations.
HPARAM_TITLES = {"lr": "learning rate", "weight_decay": "weight decay", "init_std": "init standard deviation",
                 "train_fraction": "fraction of training data", "batch_size": "batch size",
                 "hidden": "hidden layer widths", "image_index": "index of the image", "label": "class of the image"}


@dataclass(frozen=True)
class ReportOptions:
    """Sample sizes; figures from metadata use every row, these bound what is read from the weights."""

    curve_models: int = 40  # thin training curves drawn (the median and band use every model)
    weight_models: int = 48  # models per architecture whose checkpoints feed the weight statistics
    pca_points: int = 2000  # final checkpoints per architecture in the PCA
    strip_points: int = 1500  # points drawn per hyperparameter panel (the boxes use every model)
    read_bytes: int = 512 * 2**20  # weight bytes read per architecture per figure, at most
    grid_models: int = 12  # inr zoos: final checkpoints rendered beside their original images
    seed: int = 0
    #: inr zoos: where the original images' dataset files are (default: the library's data folder); never a root
    #: the store names
    data_root: str | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "data_root":
                continue
            low = 0 if name == "seed" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ZooError(f"report option {name!r}: got {value!r}; expected an integer >= {low}")


# --- metadata as numpy ---------------------------------------------------------------------------
def _floats(table: pa.Table, name: str) -> np.ndarray:
    return pc.fill_null(table.column(name), float("nan")).to_numpy().astype(np.float64)


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.int64)


def _strings(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)


def _sample(rng: np.random.Generator, items: np.ndarray, k: int) -> np.ndarray:
    """``k`` items (all when fewer), in their original order: reads stay sequential."""
    if len(items) <= k:
        return items
    return items[np.sort(rng.choice(len(items), size=k, replace=False))]


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _sort_key(value: Any) -> tuple:
    if value is None or (isinstance(value, float) and value != value):
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, _label(value))


class _Data:
    """The metadata columns every figure reads, once."""

    def __init__(self, z: Zoo) -> None:
        m = z.metadata
        self.table = m
        self.model, self.epoch, self.row = _ints(m, "model_id"), _ints(m, "epoch"), _ints(m, "row")
        self.arch = _strings(m, "arch")
        self.status = _strings(m, "status")
        self.test_acc = _floats(m, "test_acc")
        gap = _floats(m, "gen_gap")
        self.gap_source = "gen_gap"
        if np.isnan(gap).all():  # a store whose builder recorded no gap: derive it where both accuracies exist
            gap = _floats(m, "train_acc") - self.test_acc
            self.gap_source = "train_acc - test_acc"
        self.gap = gap
        self.inr = z.manifest.kind == "inr"
        self.mse, self.psnr, self.psnr_2x = (_floats(m, name) if name in m.column_names else np.full(m.num_rows, np.nan)
                                             for name, _, _ in INR_METRICS)
        # what every figure drawn from metadata plots: how well a field fits its image, or a classifier's accuracy
        self.score = self.psnr if self.inr else self.test_acc
        self.score_name = "PSNR" if self.inr else "test accuracy"
        self.score_label = PSNR_LABEL if self.inr else ACC_LABEL
        self.when = "step" if self.inr else "epoch"  # an inr zoo's epoch is one optimizer step
        self.final_epoch = int(self.epoch.max()) if m.num_rows else None
        self.final = self.epoch == self.final_epoch
        diverged_rows = self.status == "diverged"
        self.diverged_models = np.unique(self.model[diverged_rows])
        self.model_diverged = np.isin(self.model, self.diverged_models)
        self.n_diverged_checkpoints = int(diverged_rows.sum())


# --- figures ---------------------------------------------------------------------------------------
def _epoch_axis(ax, d: _Data) -> None:
    ax.set_xlabel("fitting step (the zoo's epoch; 0 = initialization)" if d.inr else "epoch (0 = initialization)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


class _PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """Labels the ticks matplotlib's log formatter would, written 0.2 or 40 rather than 2e-01 or 4×10¹."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _plain_log_ticks(ax) -> None:
    ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _save(fig: Figure, out: Path, name: str) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(out / name, format="png")
    return name


def _hist_panel(ax, values_by_arch: dict[str, np.ndarray], diverged_by_arch: dict[str, np.ndarray], xlabel: str,
                title: str, bins: np.ndarray, fmt: str = ".3f") -> None:
    """One histogram (diverged models stacked in red), or one outline per architecture."""
    ax.set(xlabel=xlabel, ylabel="models", title=title)
    if not values_by_arch:  # every final checkpoint without a finite value (e.g. all diverged)
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        return
    if len(values_by_arch) > 1:
        for arch, v in values_by_arch.items():
            v = v[np.isfinite(v)]
            ax.hist(v, bins=bins, histtype="step", linewidth=1.8, label=f"{arch} (n={len(v):,})")
    else:
        (v,), (div,) = values_by_arch.values(), diverged_by_arch.values()
        ok = np.isfinite(v)
        if (div & ok).any():
            ax.hist([v[ok & ~div], v[ok & div]], bins=bins, stacked=True, color=["#4C72B0", "#C44E52"],
                    edgecolor="white", linewidth=0.5, label=[f"ok ({int((ok & ~div).sum()):,})",
                                                             f"diverged ({int((div & ok).sum()):,})"])
        else:
            ax.hist(v[ok], bins=bins, color="#4C72B0", edgecolor="white", linewidth=0.5)
    allv = np.concatenate([v[np.isfinite(v)] for v in values_by_arch.values()])
    if allv.size:
        med = float(np.median(allv))
        ax.axvline(med, color="black", linestyle="--", linewidth=1.2, label=f"median {med:{fmt}}")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(loc="best", frameon=False)


def _accuracy_figure(d: _Data, out: Path, chance: float | None) -> tuple[str, str]:
    final = d.final & np.isfinite(d.test_acc)
    archs = sorted(set(d.arch[final]))
    acc = {a: d.test_acc[final & (d.arch == a)] for a in archs}
    gap = {a: d.gap[final & (d.arch == a)] for a in archs}
    div = {a: d.model_diverged[final & (d.arch == a)] for a in archs}
    has_gap = any(np.isfinite(v).any() for v in gap.values())
    fig = Figure(figsize=(12, 4.2) if has_gap else (6.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_gap else 1, squeeze=False)[0]
    _hist_panel(axes[0], acc, div, ACC_LABEL, f"Final test accuracy (epoch {d.final_epoch})", np.linspace(0, 1, 41))
    if chance is not None:
        axes[0].axvline(chance, color="#C44E52", linestyle=":", linewidth=1.5, label=f"chance ({chance:.2f})")
        axes[0].legend(loc="best", frameon=False)
    note = ""
    if has_gap:
        allg = np.concatenate([v[np.isfinite(v)] for v in gap.values()])
        lo, hi = float(allg.min()), float(allg.max())
        pad = max(0.01, 0.05 * (hi - lo))
        _hist_panel(axes[1], gap, div, "train accuracy − test accuracy", f"Generalization gap (epoch {d.final_epoch})",
                    np.linspace(lo - pad, hi + pad, 41))
    else:
        note = "The store records no train accuracy, so no generalization gap is shown."
    n_div = int((final & d.model_diverged).sum())
    n_out = int((d.final & d.model_diverged).sum()) - n_div
    caption = (f"Every model's checkpoint at the last committed epoch ({d.final_epoch}): {int(final.sum()):,} models "
               f"with a finite test accuracy. Gap = {d.gap_source}." +
               (f" {n_div:,} diverged model(s) with a finite accuracy are included." if n_div else "") +
               (f" {n_out:,} diverged model(s) without a finite accuracy are left out." if n_out else "") +
               (" " + note if note else ""))
    return _save(fig, out, "fig-accuracy.png"), caption


# --- inr zoos: PSNR and the images the fields represent ----------------------------------------------
def _bins(values: np.ndarray, pad: float = 0.5) -> np.ndarray:
    """41 edges over the finite ``values``, padded by ``pad`` or 5% of their range."""
    v = values[np.isfinite(values)]
    if not v.size:
        return np.linspace(0, 1, 41)
    lo, hi = float(v.min()), float(v.max())
    pad = max(pad, 0.05 * (hi - lo))
    return np.linspace(lo - pad, hi + pad, 41)


def _psnr_figure(d: _Data, out: Path) -> tuple[str, str]:
    final = d.final & np.isfinite(d.psnr)
    archs = sorted(set(d.arch[final]))
    psnr = {a: d.psnr[final & (d.arch == a)] for a in archs}
    div = {a: d.model_diverged[final & (d.arch == a)] for a in archs}
    final_2x = d.final & np.isfinite(d.psnr_2x)
    has_2x = bool(final_2x.any())
    bins = _bins(np.concatenate([d.psnr[final], d.psnr_2x[final_2x]]))
    fig = Figure(figsize=(12, 4.2) if has_2x else (6.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_2x else 1, squeeze=False)[0]
    _hist_panel(axes[0], psnr, div, PSNR_LABEL, f"Final PSNR (step {d.final_epoch})", bins, fmt=".1f")
    if has_2x:
        ax = axes[1]
        for values, where, color, filled in ((d.psnr[final], "pixel grid", "#4C72B0", True),
                                             (d.psnr_2x[final_2x], "2× grid", "#DD8452", False)):
            ax.hist(values, bins=bins, color=color, label=f"{where} (n={len(values):,})",
                    **({"alpha": 0.55, "edgecolor": "white", "linewidth": 0.5} if filled
                       else {"histtype": "step", "linewidth": 2.0}))
            if values.size:
                med = float(np.median(values))
                ax.axvline(med, color=color, linestyle="--", linewidth=1.2, label=f"median {med:.1f}")
        ax.set(xlabel=PSNR_LABEL, ylabel="models", title=f"Pixel grid and 2× grid (step {d.final_epoch})")
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(loc="best", frameon=False)
    n_out = int(d.final.sum() - final.sum())
    caption = (f"Every model's checkpoint at the last committed step ({d.final_epoch}): {int(final.sum()):,} fields "
               "with a finite PSNR (-10 log10 of the pixels' MSE, pixel values in [0, 1])"
               + (f"; {n_out:,} without one are left out" if n_out else "") + "."
               + (" Right: the same PSNR (filled) beside the PSNR on a 2× grid against the bilinearly upsampled image "
                  "(outline), which measures how the field generalizes between pixels." if has_2x else
                  " The store records no PSNR on a 2× grid."))
    return _save(fig, out, "fig-psnr.png"), caption


def _metrics_html(d: _Data) -> str:
    """Quantiles of the final checkpoints' fit columns (what the classifier page shows as accuracy)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in ("at the last step", "models", "min", "10%", "median", "mean", "90%",
                                                 "max", "measures"))
    body = []
    for col, heading, what in INR_METRICS:
        v = getattr(d, col)[d.final]
        v = v[np.isfinite(v)]
        fmt = ".3g" if col == "mse" else ".2f"
        stats = ([np.min(v), np.percentile(v, 10), np.median(v), np.mean(v), np.percentile(v, 90), np.max(v)]
                 if v.size else [])
        cells = "".join(f'<td class="num">{x:{fmt}}</td>' for x in stats) or '<td colspan="6">none finite</td>'
        body.append(f'<tr data-metric="{col}"><th>{_e(heading)}</th><td class="num">{v.size:,}</td>{cells}'
                    f"<td>{_e(what)}</td></tr>")
    return f'<table class="metrics"><tr>{head}</tr>{"".join(body)}</table>'


def _grid_rows(d: _Data, k: int) -> tuple[np.ndarray, int]:
    """Up to ``k`` metadata rows of healthy final checkpoints at evenly spaced ranks of PSNR, lowest first (so the
    worst, the median and the best are among them); and how many there were to choose from."""
    cand = np.flatnonzero(d.final & (d.status == "ok") & np.isfinite(d.psnr))
    order = cand[np.lexsort((d.model[cand], d.psnr[cand]))]  # ties broken by model id: deterministic
    if len(order) <= k:
        return order, len(cand)
    return order[np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(np.int64))], len(cand)


def _originals(z: Zoo, d: _Data, rows: np.ndarray, data_root: str | None, load_images: ImageReader | None
               ) -> tuple[dict[int, np.ndarray] | None, str]:
    """{row: (C, H, W) original image} for the rows' images, read from the zoo's dataset with ``load_images``; or
    (None, why not). The dataset's files are looked for under ``data_root`` (the user's; default the library's
    data folder), never under a root the store names, and nothing is downloaded: a store is data, and may not
    point a report at this machine's files or at the network."""
    splits = [d.table.column("image_split")[int(r)].as_py() for r in rows]
    indices = [d.table.column("image_index")[int(r)].as_py() for r in rows]
    if None in splits or None in indices:
        return None, "the store records no image index or split for some of these models"
    if load_images is None:
        return None, "no image reader was given (zoo report passes builders.data.load_images)"
    try:
        dataset = {**z.manifest.dataset, "root": data_root or SECTIONS["dataset"]["root"].default, "download": False}
        images: dict[int, np.ndarray] = {}
        for split in sorted(set(splits)):
            at = [i for i, s in enumerate(splits) if s == split]
            x, _ = load_images(dataset, split, [indices[i] for i in at])
            images.update({int(rows[i]): img for i, img in zip(at, x.cpu().numpy())})
    except (ZooError, OSError, RuntimeError, ImportError) as e:  # a dataset not on this machine: no originals
        return None, f"{type(e).__name__}: {e}"
    return images, ""


def _show(ax, image: np.ndarray, title: str) -> None:
    image = np.clip(image, 0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.moveaxis(image[:3], 0, -1), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _reconstruction_figure(z: Zoo, d: _Data, out: Path, opts: ReportOptions, images: ImageReader | None
                           ) -> tuple[str | None, str, dict, str, str]:
    """The grid of originals beside reconstructions: (figure, caption, sample info, HTML of a note when the
    originals are missing, HTML table of the models drawn)."""
    rows, n_cand = _grid_rows(d, opts.grid_models)
    info: dict[str, Any] = {"models": int(len(rows)), "of": n_cand, "originals": False}
    if not rows.size:
        return None, "No healthy final checkpoint with a finite PSNR to render.", info, "", ""
    originals, why = _originals(z, d, rows, opts.data_root, images)
    info["originals"] = originals is not None
    _, height, width = z.manifest.input_shape
    per = 2 if originals is not None else 1  # axes per model
    across = min(len(rows), 4 if per == 2 else 6)  # models per figure row
    down = -(-len(rows) // across)
    fig = Figure(figsize=(max(6.5, 1.75 * per * across), max(3.6, 2.0 * down + 0.7)), layout="constrained")
    axes = fig.subplots(down, per * across, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    picked = d.table.select(["label", "image_split", "image_index", "seed"]).take(pa.array(rows)).to_pylist()
    for k, r in enumerate(rows.tolist()):
        i, j = divmod(k, across)
        if originals is not None:
            _show(axes[i, per * j], originals[r], f"image {picked[k]['image_index']}\n"
                                                  f"class {_label(picked[k]['label'])}")
        image = z.render(int(d.model[r]), int(d.epoch[r])).numpy()
        _show(axes[i, per * j + per - 1], image, f"model {int(d.model[r])}\n{d.psnr[r]:.1f} dB")
    fig.suptitle(("Originals (left of each pair) and reconstructions" if originals is not None
                  else "Reconstructions (originals unavailable)") + f" at step {d.final_epoch}, lowest PSNR first")
    caption = (f"{len(rows):,} of {n_cand:,} healthy final checkpoints (step {d.final_epoch}), chosen at evenly spaced "
               "ranks of PSNR and drawn from the lowest (top left) to the highest: the first is the worst fit, the "
               "last the best, the middle ones near the median. "
               + (f"Each original (from the {z.manifest.dataset['name']} dataset as the zoo preprocesses it) is shown "
                  "beside its field's reconstruction" if originals is not None else "Each field's reconstruction")
               + f" (Zoo.render on the fitted {height}×{width} grid), labelled with the recorded PSNR.")
    note = ("" if originals is not None else
            f'<p class="note" data-originals="0">The original images could not be loaded ({_e(why)}), so the grid '
            "shows the reconstructions only.</p>")
    head = "".join(f"<th>{_e(h)}</th>" for h in ("model", "image", "split", "class", "seed", "MSE", "PSNR (dB)",
                                                 "PSNR 2× (dB)"))
    body = "".join(
        f'<tr data-model="{int(d.model[r])}">' + "".join(
            f"<td>{_e(c)}</td>" for c in (int(d.model[r]), *(_label(p[col]) for col in ("image_index", "image_split",
                                                                                         "label", "seed")),
                                          f"{d.mse[r]:.3g}", f"{d.psnr[r]:.2f}", f"{d.psnr_2x[r]:.2f}")) + "</tr>"
        for r, p in zip(rows.tolist(), picked))
    return (_save(fig, out, "fig-reconstructions.png"), caption, info, note,
            f'<table class="grid-models"><tr>{head}</tr>{body}</table>')


def varied_hparams(z: Zoo, table: pa.Table) -> tuple[list[str], dict[str, Any]]:
    """(hyperparameter columns that take more than one value, {column: value} of those that take one); the
    seed, which only names a model, is in neither."""
    return varied_columns(table, [n for n in z.manifest.hparam_columns() if n not in NOT_PLOTTED])


def _hparam_figure(d: _Data, names: list[str], out: Path, opts: ReportOptions) -> tuple[str, str]:
    final = np.flatnonzero(d.final)
    acc = d.score[final]
    div = d.model_diverged[final]
    rng = np.random.default_rng(opts.seed)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        values = np.asarray(d.table.column(name).take(pa.array(final)).to_pylist(), dtype=object)
        keys = sorted({_label(v): v for v in values}.items(), key=lambda kv: _sort_key(kv[1]))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in values)
        title = HPARAM_TITLES.get(name, name.replace("_", " "))
        ax.set_title(title if title == name else f"{title} ({name})")
        ax.set_ylabel(f"final {d.score_name}" + (" (dB)" if d.inr else ""))
        if numeric and len(keys) > MAX_CATEGORIES:
            x = values.astype(np.float64)
            ok = np.isfinite(acc)
            pick = _sample(rng, np.flatnonzero(ok), opts.strip_points)
            ax.scatter(x[pick], acc[pick], s=10, alpha=0.5, color="#4C72B0", linewidths=0)
            if x.min() > 0 and x.max() / x.min() >= 20:
                ax.set_xscale("log")
            ax.set_xlabel(f"{name} ({len(keys):,} distinct values)")
            continue
        labels = [k for k, _ in keys]
        index = {k: i for i, k in enumerate(labels)}
        pos = np.asarray([index[_label(v)] for v in values])
        groups = [acc[(pos == i) & np.isfinite(acc)] for i in range(len(labels))]
        filled = [i for i, g in enumerate(groups) if g.size]
        if filled:
            ax.boxplot([groups[i] for i in filled], positions=filled, widths=0.6, showfliers=False,
                       medianprops={"color": "black", "linewidth": 1.5}, boxprops={"color": "#4C72B0"})
        pick = _sample(rng, np.flatnonzero(np.isfinite(acc)), opts.strip_points)
        jitter = rng.uniform(-0.18, 0.18, size=pick.size)
        colors = np.where(div[pick], "#C44E52", "#4C72B0")
        small = pick.size < 300
        ax.scatter(pos[pick] + jitter, acc[pick], s=22 if small else 9, alpha=0.75 if small else 0.45, c=colors,
                   linewidths=0, zorder=3)
        ticks = []
        for i, lab in enumerate(labels):
            n, k = int((pos == i).sum()), int(((pos == i) & div).sum())
            ticks.append(f"{lab}\nn={n:,}" + (f"\n{k:,} diverged" if k else ""))
        ax.set_xticks(range(len(labels)), ticks, rotation=30 if len(labels) > 5 else 0)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xlabel(name)
    extra = " (and the class of each field's image)" if "label" in names else ""
    caption = (f"Final {d.score_name} ({d.when} {d.final_epoch}) per value of each hyperparameter that varies in this "
               f"zoo{extra}; boxes: quartiles and 1.5 IQR whiskers over every model; dots: up to "
               f"{opts.strip_points:,} models per panel (red: diverged). Hyperparameters with more than "
               f"{MAX_CATEGORIES} numeric values are shown as a scatter.")
    return _save(fig, out, "fig-hyperparameters.png"), caption


def _curves_figure(d: _Data, epochs: list[int], out: Path, opts: ReportOptions) -> tuple[str, str]:
    archs = sorted(set(d.arch))
    cols = min(3, len(archs))
    rows = -(-len(archs) // cols)
    fig = Figure(figsize=(6.5 * cols if cols > 1 else 7.5, 4.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(archs):]:
        ax.set_visible(False)
    rng = np.random.default_rng(opts.seed)
    ep = np.asarray(epochs)
    drawn = {}
    for ax, arch in zip(axes, archs):
        sel = d.arch == arch
        models, mi = np.unique(d.model[sel], return_inverse=True)
        mat = np.full((len(models), len(ep)), np.nan)
        mat[mi, np.searchsorted(ep, d.epoch[sel])] = d.score[sel]
        pick = _sample(rng, np.arange(len(models)), opts.curve_models)
        drawn[arch] = (len(pick), len(models))
        for i in pick:
            ax.plot(ep, mat[i], color="#4C72B0", alpha=0.25, linewidth=0.8)
        counted = np.isfinite(mat).sum(0) > 0
        if counted.any():
            q = np.full((3, len(ep)), np.nan)
            q[:, counted] = np.nanpercentile(mat[:, counted], [10, 50, 90], axis=0)
            ax.fill_between(ep, q[0], q[2], color="#DD8452", alpha=0.3, linewidth=0, label="10-90% of models")
            ax.plot(ep, q[1], color="#C44E52", linewidth=2.2, marker="o" if len(ep) <= 20 else None, markersize=4,
                    label="median")
        ax.plot([], [], color="#4C72B0", alpha=0.5, linewidth=0.8, label=f"{len(pick):,} sampled models")
        _epoch_axis(ax, d)
        ax.set(ylabel=d.score_label, title=("PSNR during fitting" if d.inr else "Test accuracy during training")
               + (f": {arch}" if len(archs) > 1 else ""))
        if not d.inr:
            ax.set_ylim(0, 1)
        ax.legend(loc="lower right", frameon=False)
    parts = ", ".join(f"{a}: {k:,} of {n:,} models drawn" for a, (k, n) in drawn.items())
    caption = (f"{d.score_name[0].upper() + d.score_name[1:]} at each checkpoint {d.when} ({parts}); the median and "
               f"10-90% band use every model's finite {'PSNRs' if d.inr else 'accuracies'}.")
    return _save(fig, out, "fig-curves.png"), caption


def _layer_stats(z: Zoo, arch: str, layout: Layout, rows: np.ndarray) -> np.ndarray:
    """(len(rows), tensors, 3): mean, std and L2 norm of each trainable tensor of each row."""
    tensors = [t for t in layout.tensors if t.role in TRAINABLE_ROLES]
    out = np.empty((len(rows), len(tensors), 3))
    batch = max(1, READ_BATCH_BYTES // (4 * layout.size))
    for lo in range(0, len(rows), batch):
        block = z.read_rows(arch, rows[lo:lo + batch])
        for j, t in enumerate(tensors):
            seg = block[:, t.offset:t.stop].astype(np.float64)
            out[lo:lo + len(seg), j, 0] = seg.mean(1)
            out[lo:lo + len(seg), j, 1] = seg.std(1)
            out[lo:lo + len(seg), j, 2] = np.sqrt((seg * seg).sum(1))
    out[~np.isfinite(out)] = np.nan
    return out


def _weight_stats_figure(z: Zoo, d: _Data, arch: str, epochs: list[int], out: Path, opts: ReportOptions,
                        name: str) -> tuple[str, str, dict]:
    layout = z.layout(arch)
    sel = d.arch == arch
    models = np.unique(d.model[sel])
    healthy = np.setdiff1d(models, d.diverged_models)
    pool = healthy if healthy.size else models
    cap = max(1, opts.read_bytes // (4 * layout.size * max(1, len(epochs))))
    pick = _sample(np.random.default_rng(opts.seed), pool, min(opts.weight_models, cap))
    rows_sel = np.flatnonzero(sel & np.isin(d.model, pick))
    order = rows_sel[np.argsort(d.row[rows_sel], kind="stable")]
    stats = _layer_stats(z, arch, layout, d.row[order])
    ep = np.asarray(epochs)
    tensors = [t for t in layout.tensors if t.role in TRAINABLE_ROLES]
    med = np.full((len(ep), len(tensors), 3), np.nan)
    row_epochs = d.epoch[order]
    for i, e in enumerate(ep):
        at = row_epochs == e
        if at.any() and np.isfinite(stats[at]).any():
            with np.errstate(all="ignore"):
                med[i] = np.nanmedian(stats[at], axis=0)
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, 3)
    cmap = matplotlib.colormaps["viridis"]
    colors = [cmap(j / max(1, len(tensors) - 1)) for j in range(len(tensors))]
    for k, (ax, what) in enumerate(zip(axes, ("mean", "standard deviation", "L2 norm"))):
        for j, t in enumerate(tensors):
            ax.plot(ep, med[:, j, k], color=colors[j], linewidth=1.6, marker="o" if len(ep) <= 20 else None,
                    markersize=3, linestyle="-" if t.role in ("weight", "bn_weight") else "--", label=t.name)
        vals = med[:, :, k][np.isfinite(med[:, :, k])]
        if k > 0 and vals.size and vals.min() > 0:
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        _epoch_axis(ax, d)
        ax.set(ylabel=f"{what} of the tensor's entries" if k < 2
               else "L2 norm of the tensor", title=f"Per-tensor {what}")
    if len(tensors) <= 12:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", frameon=False,
                   title="tensor (input → output)")
    else:
        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, len(tensors) - 1), cmap)
        fig.colorbar(mappable, ax=axes, label="tensor index (input → output; dashed: biases)", shrink=0.9)
    fig.suptitle(f"{arch}: weight statistics per tensor, median over {len(pick):,} models")
    caption = (f"Median over {len(pick):,} of {len(models):,} models of {arch} (seeded sample"
               + (", models that never diverged" if healthy.size and healthy.size < models.size else "")
               + f"), every committed checkpoint of each; {len(tensors)} trainable tensors of the layout "
               "(solid: weights, dashed: biases), coloured from input to output.")
    return _save(fig, out, name), caption, {"models": int(len(pick)), "of": int(len(models)),
                                            "checkpoints": int(len(order))}


def _pca_figure(z: Zoo, d: _Data, arch: str, out: Path, opts: ReportOptions, name: str) -> tuple[str | None, str, dict]:
    layout = z.layout(arch)
    cand = np.flatnonzero((d.arch == arch) & d.final & (d.status == "ok") & np.isfinite(d.score))
    cap = max(1, opts.read_bytes // (4 * layout.size))
    pick = _sample(np.random.default_rng(opts.seed), cand[np.argsort(d.row[cand], kind="stable")],
                   min(opts.pca_points, cap))
    x = z.read_rows(arch, d.row[pick]) if pick.size else np.empty((0, layout.size), np.float32)
    finite = np.isfinite(x).all(1)
    x, acc = x[finite], d.score[pick][finite]
    info = {"points": int(len(x)), "of": int(len(cand))}
    if len(x) < 3:
        return None, f"Too few healthy final checkpoints of {arch} for a PCA ({len(x)}).", info
    t = torch.from_numpy(x)
    t -= t.mean(0, keepdim=True)
    total = float(t.double().pow(2).sum())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        _, s, v = torch.pca_lowrank(t, q=min(6, *t.shape), center=False, niter=4)
    xy = (t @ v[:, :2]).numpy()
    share = (s[:2].double() ** 2 / total).numpy() if total > 0 else np.zeros(2)
    fig = Figure(figsize=(7.2, 5.6), layout="constrained")
    ax = fig.subplots()
    order = np.argsort(acc)  # best models drawn last, on top
    sc = ax.scatter(xy[order, 0], xy[order, 1], c=acc[order], cmap="viridis", s=16, alpha=0.85, linewidths=0)
    fig.colorbar(sc, ax=ax, label=f"final {d.score_label}")
    ax.set(xlabel=f"PC 1 ({100 * share[0]:.1f}% of variance)", ylabel=f"PC 2 ({100 * share[1]:.1f}% of variance)",
           title=f"{arch}: PCA of final checkpoints' flat weights (n={len(x):,})")
    caption = (f"{len(x):,} of {len(cand):,} final checkpoints ({d.when} {d.final_epoch}) of {arch} with status ok, "
               f"projected on the first two principal components of their {layout.size:,}-float rows "
               f"(randomized PCA, torch.pca_lowrank); colour: final {d.score_name}.")
    return _save(fig, out, name), caption, info


# --- the page -------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .7em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f5f5}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.92em;max-width:60em}.note{color:#555}nav a{margin-right:1em}
footer{margin-top:3em;color:#777;font-size:.85em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _figure_html(src: str | None, caption: str, alt: str) -> str:
    if src is None:
        return f'<p class="note">{_e(caption)}</p>'
    return (f'<figure><img src="{_e(src)}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "arch"


def counts(z: Zoo, d: _Data) -> dict[str, int]:
    """The numbers of the counts table (also returned by ``write_report``)."""
    status = z.status()
    return {"models": len(z.manifest.models), "models_with_checkpoints": int(np.unique(d.model).size),
            "checkpoints": int(d.table.num_rows), "checkpoints_planned": int(status["checkpoints_total"]),
            "diverged_models": int(d.diverged_models.size), "diverged_checkpoints": d.n_diverged_checkpoints,
            "units_done": int(status["units_done"]), "units_total": int(status["units_total"]),
            "missing_units": int(status["units_total"] - status["units_done"]), "store_bytes": z.nbytes()}


def _counts_html(c: dict[str, int], z: Zoo, d: _Data) -> str:
    rows = [("models", "models with checkpoints", c["models_with_checkpoints"], f"of {c['models']:,} planned"),
            ("checkpoints", "checkpoints", c["checkpoints"], f"of {c['checkpoints_planned']:,} planned"),
            ("diverged_models", "diverged models", c["diverged_models"],
             f"{c['diverged_checkpoints']:,} checkpoints with status 'diverged'"),
            ("missing_units", "missing units", c["missing_units"],
             f"{c['units_done']:,} of {c['units_total']:,} units of work committed"),
            ("store_bytes", "store size", c["store_bytes"], byte_size(c["store_bytes"]))]
    for arch, a in z.attrs["architectures"].items():
        n = int((d.arch == arch).sum())
        rows.append((f"arch:{arch}", f"architecture {arch}", n,
                     f"checkpoints of {a['architecture']['name']}, {a['layout']['num_params']:,} parameters"))
    body = "".join(f'<tr data-key="{_e(k)}"><th>{_e(label)}</th><td class="num" data-value="{v}">{v:,}</td>'
                   f"<td>{_e(note)}</td></tr>" for k, label, v, note in rows)
    return f'<table class="counts">{body}</table>'


def _diverged_html(z: Zoo, d: _Data, varied: list[str], limit: int = 50) -> str:
    if not d.diverged_models.size:
        return '<p class="note" data-diverged="0">No checkpoint of this zoo has status \'diverged\'.</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in ["model", "architecture", "first diverged epoch", *varied])
    body = []
    rows_div = d.status == "diverged"
    for mid in d.diverged_models[:limit].tolist():
        at = np.flatnonzero((d.model == mid) & rows_div)
        first = at[np.argmin(d.epoch[at])]
        vals = [_label(d.table.column(h)[int(first)].as_py()) for h in varied]
        cells = [str(mid), d.arch[first], str(int(d.epoch[first])), *vals]
        body.append(f'<tr data-model="{mid}">' + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    more = d.diverged_models.size - limit
    tail = f'<p class="note">… and {more:,} more.</p>' if more > 0 else ""
    return (f'<p data-diverged="{d.diverged_models.size}">{d.diverged_models.size:,} model(s) diverged (non-finite '
            f"loss or weights); their {d.n_diverged_checkpoints:,} checkpoints are kept in the store with status "
            f"'diverged'.</p><table><tr>{head}</tr>{''.join(body)}</table>{tail}")


def write_report(store: str | Path, output: str | Path, options: ReportOptions | None = None, *,
                 images: ImageReader | None = None) -> dict[str, Any]:
    """Write ``output/index.html`` and its PNG figures for the zoo at ``store``; returns a summary.

    ``images`` reads an inr zoo's original images (``builders.data.load_images``); without it the grid shows the
    reconstructions alone and says why.

    Raises ``StoreNotFoundError`` for a path without a store and ``ZooError`` when ``output`` is a file.
    """
    opts = options or ReportOptions()
    start = time.perf_counter()
    z = open_zoo(store)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ZooError(f"{out}: exists and is not a folder; the report needs a folder for index.html and its figures")
    out.mkdir(parents=True, exist_ok=True)
    d = _Data(z)
    c = counts(z, d)
    epochs = sorted(z.plan.epochs)
    varied, fixed = varied_hparams(z, d.table)
    chance = 1.0 / DATASETS.get(z.manifest.dataset["name"]).num_classes if z.manifest.dataset["name"] in DATASETS \
        else None
    sections, figures = [], []
    samples: dict[str, Any] = {}
    sections.append(("counts", "Counts", _counts_html(c, z, d)))

    score = "PSNR" if d.inr else "Accuracy"
    curves_title = "Fitting curves" if d.inr else "Training curves"
    with matplotlib.rc_context(STYLE):
        if d.table.num_rows == 0:
            empty = '<p class="note">No checkpoint is committed yet: nothing to plot.</p>'
            first = ([("psnr", "PSNR of the fits"), ("reconstructions", "Originals and reconstructions")] if d.inr
                     else [("accuracy", "Accuracy and generalization gap")])
            for key, title in (*first, ("hyperparameters", f"{score} per hyperparameter"), ("curves", curves_title)):
                sections.append((key, title, empty))
        else:
            if d.inr:
                src, cap = _psnr_figure(d, out)
                figures.append(src)
                sections.append(("psnr", "PSNR of the fits", _figure_html(src, cap, "histograms of final PSNR")
                                 + _metrics_html(d)))
                grid, cap, samples["reconstructions"], note, table = _reconstruction_figure(z, d, out, opts, images)
                figures += [grid] if grid else []
                sections.append(("reconstructions", "Originals and reconstructions", note + _figure_html(
                    grid, cap, "original images beside their fields' reconstructions") + table))
            else:
                src, cap = _accuracy_figure(d, out, chance)
                figures.append(src)
                sections.append(("accuracy", "Accuracy and generalization gap",
                                 _figure_html(src, cap, "histograms of final test accuracy and generalization gap")))
            fixed_html = ('<p>Shared by every model:</p><table>' + "".join(
                f"<tr><th>{_e(k)}</th><td>{_e(_label(v))}</td></tr>" for k, v in fixed.items()) + "</table>")
            panels = list(varied)
            if d.inr and len(set(d.table.column("label").filter(pa.array(d.final)).to_pylist())) > 1:
                panels.append("label")  # the image's class: are some digits harder to fit?
            if panels:
                src, cap = _hparam_figure(d, panels, out, opts)
                figures.append(src)
                body = _figure_html(src, cap, f"final {d.score_name} per hyperparameter value")
            else:
                body = '<p class="note">No hyperparameter but the seed varies in this zoo.</p>'
            sections.append(("hyperparameters", f"{score} per hyperparameter", body + fixed_html))
            src, cap = _curves_figure(d, epochs, out, opts)
            figures.append(src)
            samples["curves"] = opts.curve_models
            sections.append(("curves", curves_title, _figure_html(src, cap, f"{d.score_name} against {d.when}")))
        sections.append(("diverged", "Diverged models", _diverged_html(z, d, varied)))
        for arch in z.arch_ids:
            if not (d.arch == arch).any():
                sections.append((f"weights-{_slug(arch)}", f"Weights: {arch}",
                                 '<p class="note">No checkpoint of this architecture is committed yet.</p>'))
                continue
            slug = _slug(arch)
            a = z.attrs["architectures"][arch]
            src1, cap1, s1 = _weight_stats_figure(z, d, arch, epochs, out, opts, f"fig-weights-{slug}.png")
            src2, cap2, s2 = _pca_figure(z, d, arch, out, opts, f"fig-pca-{slug}.png")
            figures += [f for f in (src1, src2) if f]
            samples[arch] = {"weight_stats": s1, "pca": s2}
            kind = a["architecture"]["name"]
            sections.append((f"weights-{slug}", f"Weights: {arch} ({'' if kind == arch else kind + ', '}"
                                                f"{a['layout']['num_params']:,} parameters)",
                             "<h3>Per-tensor statistics during training</h3>"
                             + _figure_html(src1, cap1, f"weight statistics of {arch} per epoch")
                             + "<h3>Final checkpoints in weight space</h3>"
                             + _figure_html(src2, cap2, f"PCA of {arch} final checkpoints")))

    curves = curves_title.lower()
    sampling = [f"{score}, hyperparameter and {curves[:-1].replace(' ', '-')} statistics use all {c['checkpoints']:,} "
                f"committed checkpoints' metadata; {curves} draw at most {opts.curve_models:,} models "
                f"per architecture and hyperparameter panels at most {opts.strip_points:,} dots."]
    if "reconstructions" in samples:
        g = samples["reconstructions"]
        sampling.append(f"The reconstruction grid renders {g['models']:,} of {g['of']:,} healthy final checkpoints "
                        f"(at most {opts.grid_models:,}, at evenly spaced ranks of PSNR)"
                        + ("" if g["originals"] else "; the original images could not be loaded") + ".")
    for arch in z.arch_ids:
        if arch not in samples:
            continue
        w, p = samples[arch]["weight_stats"], samples[arch]["pca"]
        sampling.append(f"{arch}: weight statistics read {w['models']:,} of {w['of']:,} models "
                        f"({w['checkpoints']:,} checkpoints); PCA read {p['points']:,} of {p['of']:,} "
                        "final checkpoints.")
    sampling.append(f"Samples are drawn with seed {opts.seed}; weight reads are capped at "
                    f"{byte_size(opts.read_bytes)} per architecture and figure.")
    sections.insert(1, ("sampling", "Sampling", "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in sampling) + "</ul>"))

    seconds = time.perf_counter() - start
    nav = "".join(f'<a href="#{_e(k)}">{_e(t.split(" (")[0])}</a>' for k, t, _ in sections)
    desc = z.manifest.zoo.get("description") or ""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>zoo report: {_e(z.manifest.name)}'
            f"</title><style>{CSS}</style></head><body><h1>Zoo report: {_e(z.manifest.name)}</h1>"
            + (f"<p>{_e(desc)}</p>" if desc else "")
            + f"<p class=\"note\">Store {_e(z.url)}; dataset {_e(z.manifest.dataset['name'])}; checkpoint epochs "
              f"{_e(epochs_text(epochs))}.</p><nav>{nav}</nav>"
            + "".join(f'<section id="{_e(k)}"><h2>{_e(t)}</h2>{body}</section>' for k, t, body in sections)
            + f"<footer>Made by weightzoo {__version__} (zoo report) in {seconds:.1f} s.</footer></body></html>\n")
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return {"index": str(index), "figures": figures, "counts": c, "samples": samples, "varied": varied,
            "seconds": round(time.perf_counter() - start, 3)}
