"""``tasks.run``: one learner on one task of one store, over seeds, into a ``Result``.

The steps: check the task against the store (``check_task``); pick its checkpoints (status, epochs, a non-null
target); split by model (the task's protocol over every model of the store, so ``zoo task split`` writes the
same split, or a frozen split file); read each split's rows and, per seed, fit a fresh learner on train and
score every split with the task's metrics. The splits stay fixed across seeds: seeds vary the learner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError
from zoo.store import Zoo, open_zoo

from .learners import Learner, TaskData, make_learner
from .metrics import score
from .registry import Task, check_task, get_task
from .results import Result, mean_std
from .splits import Split, load_split, make_split, store_identity

#: Rows read from the store at a time.
READ_BATCH = 4096


def _selected(task: Task, store: Zoo) -> Any:
    """The metadata rows the task uses: its status and epochs, with a target."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = store.metadata
    m = m.filter(pc.equal(m.column("status"), task.status))
    if task.epochs == "last":
        m = m.filter(pc.equal(m.column("epoch"), max(store.plan.epochs)))
    elif isinstance(task.epochs, tuple):
        m = m.filter(pc.is_in(m.column("epoch"), value_set=pa.array(task.epochs, "int64")))
    target = m.column(task.target)
    keep = pc.is_valid(target)
    if task.kind == "regression":
        keep = pc.and_(keep, pc.invert(pc.is_nan(pc.cast(target, "float64"))))
    m = m.filter(pc.fill_null(keep, False))
    if m.num_rows == 0:
        raise ZooError(f"task {task.name!r}: no checkpoint of this store has status {task.status!r}, the task's "
                       f"epochs ({task.epochs}) and a value of {task.target!r}")
    return m


def _split_data(store: Zoo, table: Any, target: str) -> TaskData:
    arches = sorted(set(table.column("arch").to_pylist()))
    if len(arches) > 1:
        layouts = {store.layout(a) for a in arches}
        if len(layouts) > 1:
            raise ZooError(f"tasks: the selected checkpoints have {len(layouts)} layouts ({', '.join(arches)}); "
                           "this learner takes one layout (select one architecture)")
    layout = store.layout(arches[0]) if arches else None
    parts, order = [], []
    for a in arches:
        idx = [i for i, x in enumerate(table.column("arch").to_pylist()) if x == a]
        rows = table.column("row").to_numpy()[idx]
        for start in range(0, len(rows), READ_BATCH):
            parts.append(store.read_rows(a, rows[start:start + READ_BATCH]))
        order += idx
    perm = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")
    width = layout.size if layout is not None else 0
    weights = np.concatenate(parts)[perm] if parts else np.zeros((0, width), np.float32)
    return TaskData(weights, layout, np.asarray(table.column(target).to_pylist()),  # type: ignore[arg-type]
                    table.column("model_id").to_numpy(), table.column("epoch").to_numpy())


def run(task: str | Task, store: str | Path | Zoo, learner: str | Learner = "statnn", seeds: int | Sequence[int] = 3,
        split: str | Path | Split | None = None, **options: Any) -> Result:
    """Run ``learner`` (a name, made fresh per seed with ``options``, e.g. statnn's ``model="linear"``; or a
    ``Learner`` object, fitted once per seed) on ``task`` over ``store``; ``seeds``: a count (0..n-1) or the
    seeds; ``split``: a split file or ``Split`` (default: the task's protocol)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from zoo import __version__
    from zoo.versions import torch_version

    task = get_task(task)
    store = store if isinstance(store, Zoo) else open_zoo(store)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ZooError("tasks.run: no seeds")
    check_task(task, store.metadata, store.manifest.kind)
    identity = store_identity(store)
    split_file = None
    if split is None:
        split = make_split(task.name, store, task.split.seed, task.split.fractions)
    elif not isinstance(split, Split):
        split_file = str(split)
        split = load_split(split, store)
    else:
        split.check_store(identity)
    table = _selected(task, store)
    data = {}
    for name, ids in split.splits.items():
        part = table.filter(pc.is_in(table.column("model_id"), value_set=pa.array(ids, "int64")))
        data[name] = _split_data(store, part, task.target)
    if len(data["train"]) == 0:
        raise ZooError(f"task {task.name!r}: the train split has no checkpoint the task uses")
    values: dict[str, dict[str, list[float]]] = {n: {m: [] for m in task.metrics} for n in data}
    settings: dict[str, Any] = {}
    name = learner if isinstance(learner, str) else learner.name
    for seed in seed_list:
        fresh = make_learner(learner, task.kind, **options) if isinstance(learner, str) else learner
        settings = fresh.settings()
        fresh.fit(data["train"], data.get("val"), seed)
        classes = np.unique(data["train"].targets)
        for split_name, d in data.items():
            predictions = fresh.predict(d) if len(d) else np.zeros(0)
            for metric in task.metrics:
                values[split_name][metric].append(score(metric, d.targets, predictions,
                                                        regression=task.kind == "regression", classes=classes))
    metrics = {n: {m: mean_std(v) for m, v in per.items()} for n, per in values.items()}
    return Result(task=task.to_dict(), store=identity,
                  split={"hash": split.hash, "seed": split.seed, "fractions": split.fractions, "file": split_file},
                  seeds=tuple(seed_list), learner={"name": name, "settings": settings}, metrics=metrics,
                  rows={n: len(d) for n, d in data.items()},
                  versions={"weightzoo": __version__, "torch": torch_version()})


def result_table(result: Result) -> list[tuple[str, str]]:
    """(split / metric, "mean ± std") rows, as ``zoo task run`` prints them."""
    out = []
    for split_name, per in result.metrics.items():
        for metric, v in per.items():
            out.append((f"{split_name} {metric}", _pm(v)))
    return out


def _pm(v: Any) -> str:
    mean, std = v.get("mean"), v.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}"
