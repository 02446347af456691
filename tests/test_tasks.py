"""Weight-space tasks (issue #23): declarations, frozen splits, result files, the statnn baseline, tasks.run."""

from __future__ import annotations

import json
import re
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


# --- splits -----------------------------------------------------------------------------------------------------
def test_a_split_keeps_each_models_checkpoints_together_and_its_hash_is_stable(filled, tmp_path):
    from tasks.splits import load_split, make_split, split_hash, store_identity

    writer, _ = filled
    store = zoo.open(writer.url)
    split = make_split("accuracy", store, seed=3)
    ids = sorted(set(store.metadata.column("model_id").to_pylist()))
    assert sorted(m for part in split.splits.values() for m in part) == ids  # every model once
    assert [len(split.splits[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    assert split.hash == make_split("accuracy", store, seed=3).hash != make_split("accuracy", store, seed=4).hash
    assert split.hash == split_hash({k: list(reversed(v)) for k, v in reversed(list(split.splits.items()))})
    identity = store_identity(store)
    assert identity == store_identity(zoo.open(writer.url)) and identity["rows"] == 60
    assert len(identity["rows_sha256"]) == 64
    path = split.save(tmp_path / "split.json")
    data = json.loads(path.read_text())
    assert data["format"] == "weightzoo-split" and data["version"] == 1 and data["hash"] == split.hash
    again = load_split(path, store)
    assert again.splits == split.splits and again.hash == split.hash and again.seed == 3


def _split_file(tmp_path, filled, **edit):
    from tasks.splits import make_split

    writer, _ = filled
    data = make_split("accuracy", zoo.open(writer.url)).to_dict()
    data.pop("hash")
    for key, value in edit.items():
        target = data
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    ({"format": "other"}, "field 'format'"),
    ({"version": True}, "field 'version'"),
    ({"task": 7}, "field 'task'"),
    ({"store": []}, "field 'store'"),
    ({"store__rows_sha256": "xyz"}, "field 'store.rows_sha256'"),
    ({"store__rows": -1}, "field 'store.rows'"),
    ({"seed": "0"}, "field 'seed'"),
    ({"fractions": {"train": float("inf")}}, "field 'fractions'"),
    ({"fractions": {"holdout": 1.0}}, "field 'fractions'"),
    ({"splits": [1, 2]}, "field 'splits'"),
    ({"splits__holdout": [1]}, "unknown split 'holdout'"),
    ({"splits__train": "0,1"}, "field 'splits.train'"),
    ({"splits__train": [0, "1"]}, "model id '1'"),
    ({"splits__train": [0, 1.0]}, "model id 1.0"),
    ({"splits__train": [0, True]}, "model id True"),
    ({"splits__train": [-1]}, "model id -1"),
    ({"splits__train": [2**60]}, f"model id {2**60}"),
    ({"splits__train": [0, 0]}, "model 0 is twice in 'train'"),
    ({"splits__train": [0], "splits__test": [0]}, "model 0 is in both 'train' and 'test'"),
    ({"hash": "0" * 64}, "field 'hash'"),
])
def test_a_hostile_split_file_is_refused_by_field(tmp_path, filled, edit, message):
    from tasks.splits import load_split

    with pytest.raises(ZooError, match=re.escape(message)):
        load_split(_split_file(tmp_path, filled, **edit))


@pytest.mark.parametrize("raw", ["", "[", '{"a": ' * 100000, "9" * 5000, '"\udcff"', "[1, 2]", "null"])
def test_a_split_file_that_is_not_a_split_is_refused(tmp_path, raw):
    from tasks.splits import load_split

    path = tmp_path / "raw.json"
    path.write_bytes(raw.encode("utf-8", "surrogatepass"))
    with pytest.raises(ZooError, match="split file"):
        load_split(path)
    with pytest.raises(ZooError, match="split file"):
        load_split(tmp_path / "absent.json")


def test_a_split_or_result_file_that_is_a_fifo_is_refused_unopened(tmp_path):
    import os

    from tasks.results import load_result
    from tasks.splits import load_split

    fifo = tmp_path / "split.json"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(ZooError, match=r"split file .*split.json: not a regular file"):
        load_split(fifo)
    with pytest.raises(ZooError, match=r"result file .*split.json: not a regular file"):
        load_result(fifo)


def test_a_split_of_another_store_or_unknown_models_is_refused(tmp_path, filled):
    from tasks.splits import load_split

    writer, _ = filled
    store = zoo.open(writer.url)
    with pytest.raises(ZooError, match="made for a store with rows_sha256"):
        load_split(_split_file(tmp_path, filled, store__rows_sha256="a" * 64), store)
    with pytest.raises(ZooError, match=r"model ids not in the store: \[999\]"):
        load_split(_split_file(tmp_path, filled, splits__val=[999]), store)


# --- results ----------------------------------------------------------------------------------------------------
def _result(**changes):
    from tasks.results import Result, mean_std

    base = {"task": {"name": "accuracy", "version": 1}, "store": {"name": "tiny", "rows_sha256": "a" * 64},
            "split": {"hash": "b" * 64}, "seeds": (0, 1), "learner": {"name": "statnn", "settings": {}},
            "metrics": {"test": {"r2": mean_std([0.5, 0.7])}}}
    for key, value in changes.items():
        base[key] = value
    return Result(**base)


def test_results_are_comparable_exactly_when_task_store_and_split_agree(tmp_path):
    from tasks.results import comparable, incomparable, load_result, mean_std

    a = _result()
    assert comparable(a, _result(learner={"name": "other"}, seeds=(5,)))
    assert incomparable(a, _result(task={"name": "accuracy", "version": 2})) == ["task accuracy v1 vs accuracy v2"]
    assert not comparable(a, _result(task={"name": "epoch", "version": 1}))
    assert incomparable(a, _result(store={"name": "tiny", "rows_sha256": "c" * 64}))[0].startswith("store tiny")
    assert len(incomparable(a, _result(split={"hash": "d" * 64}, store={"name": "x", "rows_sha256": "e"}))) == 2
    assert mean_std([0.5, 0.7]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1), "values": [0.5, 0.7]}
    assert mean_std([1.0, float("nan")])["mean"] is None
    back = load_result(a.save(tmp_path / "r.json"))
    assert back.to_dict() == json.loads(json.dumps(a.to_dict())) and comparable(a, back)
    (tmp_path / "bad.json").write_text(json.dumps({**a.to_dict(), "seeds": ["0"]}))
    with pytest.raises(ZooError, match="field 'seeds'"):
        load_result(tmp_path / "bad.json")


# --- statnn -----------------------------------------------------------------------------------------------------
def test_statnn_features_equal_a_hand_computation(filled):
    from tasks.features import statnn_feature_names, statnn_features

    writer, _ = filled
    store = zoo.open(writer.url)
    layout = store.layout("mlp")
    rows = store.read_rows("mlp", [0, 3, 7])
    features = statnn_features(rows, layout)
    assert features.shape == (3, 6 * 7) and len(statnn_feature_names(layout)) == 42
    row = rows[1].astype(np.float64)
    expected = []
    for t in layout.tensors:  # mlp: fc1.weight, fc1.bias, ..., all weight or bias
        v = np.sort(row[t.offset:t.offset + int(np.prod(t.shape))])
        n = len(v)

        def q(p, v=v, n=n):  # linear interpolation between order statistics, by hand
            h = (n - 1) * p
            lo = int(np.floor(h))
            return v[lo] + (h - lo) * (v[min(lo + 1, n - 1)] - v[lo])

        mean = sum(v) / n
        expected += [mean, sum((x - mean) ** 2 for x in v) / n, v[0], q(0.25), q(0.5), q(0.75), v[-1]]
    np.testing.assert_allclose(features[1], expected, rtol=1e-12, atol=1e-12)
    assert statnn_feature_names(layout)[:2] == ["0.weight.mean", "0.weight.var"]
    with pytest.raises(ZooError, match="rows of shape"):
        statnn_features(rows[:, :-1], layout)


def test_statnn_learners_state_every_setting_and_are_seeded():
    from tasks.features import STATNN_STATS
    from tasks.learners import Learner, TaskData, make_learner
    from zoo.layout import Layout, TensorSpec

    layout = Layout((TensorSpec("w", (4, 5), 0, "weight"), TensorSpec("b", (4,), 20, "bias")))
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((80, 24)).astype(np.float32)
    data = TaskData(rows, layout, rows[:, :20].mean(axis=1) * 3, np.arange(80), np.zeros(80, int))
    for model in ("gbt", "linear"):
        a, b = make_learner("statnn", "regression", model=model), make_learner("statnn", "regression", model=model)
        assert isinstance(a, Learner) and a.settings()["model"] == model
        assert a.settings()["features"]["stats"] == list(STATNN_STATS)
        a.fit(data, None, 1)
        b.fit(data, None, 1)
        assert np.array_equal(a.predict(data), b.predict(data))
    assert make_learner("statnn", "regression").settings()["max_iter"] == 200
    labels = np.where(rows[:, 0] > 0, "pos", "neg")
    c = make_learner("statnn", "classification", model="linear")
    c.fit(TaskData(rows, layout, labels, np.arange(80), np.zeros(80, int)), None, 0)
    assert set(c.predict(data)) <= {"pos", "neg"}
    with pytest.raises(ZooError, match="unknown learner"):
        make_learner("flat", "regression")
    with pytest.raises(ZooError, match="model 'svm'"):
        make_learner("statnn", "regression", model="svm")


# --- tasks.run and the command line ----------------------------------------------------------------------------
def test_run_accuracy_end_to_end_is_deterministic(filled, tmp_path):
    import tasks

    writer, _ = filled
    store = zoo.open(writer.url)
    a = tasks.run("accuracy", store, "statnn", seeds=2)
    b = tasks.run("accuracy", writer.url, "statnn", seeds=2)
    assert a.to_dict() == b.to_dict() and tasks.comparable(a, b)
    d = a.to_dict()
    assert d["task"]["name"] == "accuracy" and d["task"]["version"] == 1 and d["seeds"] == [0, 1]
    assert d["store"] == tasks.store_identity(store) and d["rows"] == {"train": 42, "val": 9, "test": 9}
    assert set(d["metrics"]) == {"train", "val", "test"}
    assert all(set(m) == {"r2", "kendall_tau"} for m in d["metrics"].values())
    r2 = d["metrics"]["test"]["r2"]
    assert set(r2) == {"mean", "std", "values"} and len(r2["values"]) == 2
    assert d["learner"]["name"] == "statnn" and d["learner"]["settings"]["max_iter"] == 200
    assert set(d["versions"]) == {"weightzoo", "torch"}
    split = tasks.make_split("accuracy", store)
    assert d["split"]["hash"] == split.hash
    frozen = tasks.run("accuracy", store, "statnn", seeds=2, split=split.save(tmp_path / "s.json"))
    assert frozen.metrics == a.metrics and tasks.comparable(a, frozen)
    other = tasks.run("accuracy", store, "statnn", seeds=1, split=tasks.make_split("accuracy", store, seed=9))
    assert tasks.incomparable(a, other)[0].startswith("split ")
    linear = tasks.run("hyperparameter:activation", store, "statnn", seeds=1, model="linear")
    assert set(linear.metrics["test"]) == {"accuracy", "macro_f1"} and linear.learner["settings"]["model"] == "linear"


def test_zoo_task_split_run_compare(capsys, filled, tmp_path):
    from zoo.cli import main

    writer, _ = filled
    split, r1, r2 = tmp_path / "split.json", tmp_path / "r1.json", tmp_path / "r2.json"
    assert main(["task", "split", "accuracy", writer.url, "-o", str(split)]) == 0
    assert "split of accuracy by model (train 14, val 3, test 3 models)" in capsys.readouterr().out
    assert main(["task", "run", "accuracy", writer.url, "--seeds", "1", "--split", str(split), "-o", str(r1)]) == 0
    out = capsys.readouterr().out
    assert "test r2" in out and "±" in out and "result written to" in out
    assert main(["task", "run", "epoch", writer.url, "--model", "linear", "--seeds", "1", "-o", str(r2),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"]["name"] == "epoch"
    assert main(["task", "compare", str(r1), str(r1), str(r2)]) == 0
    out = capsys.readouterr().out
    assert "[1] statnn/gbt" in out and "[3] statnn/linear" in out
    assert f"[2] {r1}: comparable with [1]" in out and f"[3] {r2}: NOT comparable with [1]: task accuracy v1" in out
    assert main(["task", "run", "hyperparameter:optimizer", writer.url]) == 2
    assert "'optimizer' does not vary" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["task", "compare", str(bad)]) == 2
    assert "field 'format'" in capsys.readouterr().err
