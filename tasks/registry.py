"""The weight-space tasks, declared once: what is predicted from a checkpoint's weights, on which checkpoints,
split how, and scored by which metrics.

Declarations are torch-free data, like ``zoo/recipes.py``: listing and checking a task (``zoo task --help``, a
result file's task name) imports no learner. ``TASKS`` holds the fixed tasks; ``hyperparameter:COLUMN`` is a
family, one task per categorical hyperparameter column, made by ``get_task``. Whether a task fits a given store
(its target column exists, a hyperparameter varies, an inr task meets an inr zoo) is ``check_task``'s question,
asked with the store's metadata in hand.

A task's ``version`` changes whenever anything that decides its numbers changes (target, checkpoints, split
protocol, metrics): results of two versions are never comparable (``tasks.results.comparable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.registry import Registry
from zoo.splits import DEFAULT_FRACTIONS

if TYPE_CHECKING:
    import pyarrow as pa

KINDS = ("regression", "classification")
#: Metric name -> what it measures (``tasks/metrics.py`` computes them).
METRIC_NAMES = {
    "r2": "coefficient of determination (sklearn.metrics.r2_score)",
    "kendall_tau": "Kendall's tau-b rank correlation of predictions and targets (scipy.stats.kendalltau)",
    "accuracy": "fraction of exact class predictions; a regression's predictions snap to the nearest class seen "
                "in training first",
    "macro_f1": "F1 averaged over classes with equal weight (sklearn.metrics.f1_score, average='macro')",
}
HYPERPARAMETER = "hyperparameter"


@dataclass(frozen=True)
class SplitProtocol:
    """How a task splits a store: by model (every checkpoint of a model in one split), from ``seed`` and
    ``fractions``; or frozen, from a weightzoo split file (``tasks/splits.py``) named by ``file``."""

    seed: int = 0
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what a result file records of it."""
        return {"by": "model", "seed": self.seed, "fractions": dict(self.fractions), "file": self.file}


@dataclass(frozen=True)
class Task:
    """One weight-space task.

    ``target`` is a metadata column (``test_acc``, ``epoch``, a hyperparameter column, an inr zoo's ``label``);
    ``epochs`` picks the checkpoints: "all", "last" (each model's highest planned epoch) or a tuple of epochs;
    only checkpoints with ``status`` are used, and rows whose target is null or NaN are left out. ``zoo_kind``
    restricts the task to zoos of that kind (None: any).
    """

    name: str
    version: int
    kind: str
    target: str
    metrics: tuple[str, ...]
    doc: str
    epochs: str | tuple[int, ...] = "all"
    status: str = "ok"
    split: SplitProtocol = field(default_factory=SplitProtocol)
    zoo_kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ZooError(f"task {self.name!r}: kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown or not self.metrics:
            raise ZooError(f"task {self.name!r}: metrics {list(self.metrics)}; allowed: {', '.join(METRIC_NAMES)}")
        if not (self.epochs in ("all", "last") or (isinstance(self.epochs, tuple) and self.epochs and all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.epochs))):
            raise ZooError(f"task {self.name!r}: epochs {self.epochs!r}; expected 'all', 'last' or epochs >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the declaration a result file records."""
        return {"name": self.name, "version": self.version, "kind": self.kind, "target": self.target,
                "metrics": list(self.metrics), "epochs": self.epochs if isinstance(self.epochs, str)
                else list(self.epochs), "status": self.status, "split": self.split.to_dict(),
                "zoo_kind": self.zoo_kind}


#: The fixed tasks, by name (``hyperparameter:COLUMN`` is made by ``get_task``).
TASKS: Registry[Task] = Registry("task")
for _task in (
    Task("accuracy", 1, "regression", "test_acc", ("r2", "kendall_tau"),
         "predict a checkpoint's test accuracy from its weights (Unterthiner et al. 2020)"),
    Task("generalization-gap", 1, "regression", "gen_gap", ("r2", "kendall_tau"),
         "predict a checkpoint's generalization gap (gen_gap) from its weights"),
    Task("epoch", 1, "regression", "epoch", ("r2", "accuracy"),
         "predict the epoch a checkpoint was saved at; accuracy counts predictions rounded to the nearest epoch"),
    Task("inr-class", 1, "classification", "label", ("accuracy",),
         "inr zoos: classify the image a neural field encodes (its label) from the field's weights",
         epochs="last", zoo_kind="inr"),
):
    TASKS.register(_task.name, _task)
del _task


def hyperparameter_task(column: str) -> Task:
    """``hyperparameter:COLUMN``: classify a checkpoint's value of the categorical hyperparameter ``column``."""
    if not isinstance(column, str) or not column:
        raise ZooError(f"task {HYPERPARAMETER}:COLUMN needs a column name, got {column!r}")
    return Task(f"{HYPERPARAMETER}:{column}", 1, "classification", column, ("accuracy", "macro_f1"),
                f"classify a checkpoint's {column} from its weights")


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a ``Task`` passes through); unknown names raise listing the known ones."""
    if isinstance(name, Task):
        return name
    if isinstance(name, str) and name.lower().startswith(HYPERPARAMETER + ":"):
        return hyperparameter_task(name.split(":", 1)[1])
    try:
        return TASKS.get(name)
    except ZooError as e:
        raise type(e)(f"{e}; or {HYPERPARAMETER}:COLUMN for a categorical hyperparameter column") from None


def task_names() -> list[str]:
    """Every task name, the family's pattern last."""
    return [*TASKS.names(), f"{HYPERPARAMETER}:COLUMN"]


def check_task(task: Task, metadata: pa.Table, zoo_kind: str = "classifier") -> None:
    """Refuse a task that does not fit a store (``metadata``: its metadata table; ``zoo_kind``: its manifest's
    kind) with one line naming what is wrong: a zoo of another kind, a missing target column, or (a
    hyperparameter task) a column that is not a categorical hyperparameter or does not vary."""
    if task.zoo_kind is not None and zoo_kind != task.zoo_kind:
        raise ZooError(f"task {task.name!r} is for {task.zoo_kind} zoos; this store is a {zoo_kind} zoo")
    if task.target not in metadata.column_names:
        raise ZooError(f"task {task.name!r}: the store has no column {task.target!r}")
    if not task.name.startswith(HYPERPARAMETER + ":"):
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    from zoo.store.format import ID_COLUMNS, KIND_COLUMNS, METRIC_COLUMNS, RUN_COLUMNS

    own = set(ID_COLUMNS) | set(METRIC_COLUMNS) | set(RUN_COLUMNS) | {c for k in KIND_COLUMNS.values() for c in k}
    column = task.target
    if column in own:
        raise ZooError(f"task {task.name!r}: {column!r} is a column of the store, not a hyperparameter")
    kind = metadata.schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind)):
        raise ZooError(f"task {task.name!r}: hyperparameter column {column!r} is of type {kind}, not categorical "
                       "(string, bool or integer); a continuous hyperparameter is not a class")
    rows = metadata.filter(pc.equal(metadata.column("status"), task.status))
    values = {v for v in rows.column(column).to_pylist() if v is not None}
    if len(values) < 2:
        shown = f"every checkpoint has {next(iter(values))!r}" if values else "no checkpoint has a value"
        raise ZooError(f"task {task.name!r}: hyperparameter column {column!r} does not vary in this zoo ({shown}); "
                       "a task needs at least two classes")
