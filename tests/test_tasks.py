"""Weight-space tasks (issue #23): declarations, frozen splits, result files, the statnn baseline, tasks.run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]


def test_import_tasks_is_light():
    code = "import sys, tasks\nprint(sorted(m for m in ('torch', 'sklearn', 'zarr', 'pyarrow', 'builders', " \
           "'loaders') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


# --- declarations -----------------------------------------------------------------------------------------------
def test_the_shipped_tasks_are_declared_once():
    import tasks

    assert tasks.task_names() == ["accuracy", "epoch", "generalization-gap", "inr-class", "hyperparameter:COLUMN"]
    acc = tasks.get_task("accuracy")
    assert (acc.kind, acc.target, acc.metrics, acc.version) == ("regression", "test_acc", ("r2", "kendall_tau"), 1)
    assert tasks.get_task("epoch").metrics == ("r2", "accuracy")
    assert tasks.get_task("inr-class").zoo_kind == "inr"
    hp = tasks.get_task("hyperparameter:activation")
    assert (hp.kind, hp.target, hp.metrics) == ("classification", "activation", ("accuracy", "macro_f1"))
    assert tasks.get_task(acc) is acc
    with pytest.raises(ZooError, match="unknown task.*hyperparameter:COLUMN"):
        tasks.get_task("acuracy")
    with pytest.raises(ZooError, match="kind 'ranking'"):
        tasks.Task("x", 1, "ranking", "test_acc", ("r2",), "")
    with pytest.raises(ZooError, match="metrics"):
        tasks.Task("x", 1, "regression", "test_acc", ("mse",), "")


def test_a_task_is_checked_against_the_store(filled):
    import tasks

    writer, _ = filled
    metadata = zoo.open(writer.url).metadata
    tasks.check_task(tasks.get_task("accuracy"), metadata)
    tasks.check_task(tasks.get_task("hyperparameter:activation"), metadata)  # relu and tanh
    with pytest.raises(ZooError, match="hyperparameter column 'optimizer' does not vary in this zoo "
                                       r"\(every checkpoint has 'adam'\)"):
        tasks.check_task(tasks.get_task("hyperparameter:optimizer"), metadata)
    with pytest.raises(ZooError, match="'lr' is of type double, not categorical"):
        tasks.check_task(tasks.get_task("hyperparameter:lr"), metadata)
    with pytest.raises(ZooError, match="no column 'nope'"):
        tasks.check_task(tasks.get_task("hyperparameter:nope"), metadata)
    with pytest.raises(ZooError, match="'test_acc' is a column of the store"):
        tasks.check_task(tasks.get_task("hyperparameter:test_acc"), metadata)
    with pytest.raises(ZooError, match="for inr zoos; this store is a classifier zoo"):
        tasks.check_task(tasks.get_task("inr-class"), metadata)


def test_metrics():
    from tasks.metrics import score, snap

    y = np.array([1.0, 2.0, 3.0])
    assert score("r2", y, y) == 1.0 and score("kendall_tau", y, y[::-1]) == pytest.approx(-1.0)
    assert np.isnan(score("r2", np.ones(3), y)) and np.isnan(score("kendall_tau", y[:1], y[:1]))
    assert snap(np.array([0.4, 0.6, 2.9]), [0, 1, 3]).tolist() == [0, 1, 3]
    assert score("accuracy", np.array([0, 1, 3]), np.array([0.2, 2.4, 2.6]), regression=True,
                 classes=[0, 1, 3]) == pytest.approx(2 / 3)
    assert score("macro_f1", np.array(["a", "b"]), np.array(["a", "a"])) == pytest.approx(1 / 3)
