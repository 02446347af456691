"""``zoo task``: weight-space tasks (``tasks``): ``split`` writes a frozen split file, ``run`` runs a baseline
and writes its result file, ``compare`` sets result files side by side. ``tasks`` is imported only inside the
actions, so parsing stays light."""

from __future__ import annotations

import argparse

from .common import json_argument, print_json, rows_text
from .table import command

TASK_HELP = ("the task: accuracy, generalization-gap, epoch, inr-class, or hyperparameter:COLUMN (a categorical "
             "hyperparameter the zoo varies)")


def _task_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("split", help="write the task's split by model of STORE as a weightzoo split file",
                       description="write the task's split by model of STORE as a weightzoo split file")
    s.add_argument("task", help=TASK_HELP)
    s.add_argument("store", help="store path or fsspec URL")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="the split file to write (JSON)")
    s.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    json_argument(s)
    r = sub.add_parser("run", help="run a learner on the task over STORE; prints metric per split, mean ± std "
                                   "over seeds", description="run a learner on the task over STORE")
    r.add_argument("task", help=TASK_HELP)
    r.add_argument("store", help="store path or fsspec URL")
    r.add_argument("--learner", default="statnn", choices=["statnn"], help="the learner (default statnn)")
    r.add_argument("--model", default="gbt", choices=["gbt", "linear"],
                   help="statnn's model: gradient-boosted trees or a linear model (default gbt)")
    r.add_argument("--seeds", type=int, default=3, metavar="N", help="learner seeds 0..N-1 (default 3)")
    r.add_argument("--split", default=None, metavar="FILE", help="a weightzoo split file (default: the task's "
                                                                 "split by model, seed 0)")
    r.add_argument("-o", "--output", default=None, metavar="FILE", help="write the result file (JSON) here")
    json_argument(r)
    c = sub.add_parser("compare", help="result files side by side; says which are not comparable and why",
                       description="result files side by side; says which are not comparable and why")
    c.add_argument("results", nargs="+", metavar="RESULT", help="result files (JSON) of `zoo task run -o`")
    json_argument(c)


@command("task", "weight-space tasks: split (a frozen split file), run (a baseline's result file), compare "
                 "(result files side by side)", _task_arguments)
def _task(args: argparse.Namespace) -> int:
    return {"split": _split, "run": _run, "compare": _compare}[args.action](args)


def _split(args: argparse.Namespace) -> int:
    import tasks
    from zoo.store import open_zoo

    task = tasks.get_task(args.task)
    store = open_zoo(args.store)
    tasks.check_task(task, store.metadata, store.manifest.kind)
    split = tasks.make_split(task.name, store, seed=args.seed, fractions=task.split.fractions)
    split.save(args.output)
    if args.json:
        print_json({"file": args.output, "hash": split.hash, "task": task.name,
                    "models": {k: len(v) for k, v in split.splits.items()}})
    else:
        counts = ", ".join(f"{k} {len(v)}" for k, v in split.splits.items())
        print(f"{args.output}: split of {task.name} by model ({counts} models), hash {split.hash[:12]}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import tasks
    from tasks.runner import result_table

    result = tasks.run(args.task, args.store, args.learner, seeds=args.seeds, split=args.split, model=args.model)
    if args.output:
        result.save(args.output)
    if args.json:
        print_json(result.to_dict())
    else:
        head = [("task", f"{result.task['name']} v{result.task['version']}"), ("learner", result.label),
                ("seeds", ", ".join(map(str, result.seeds))), ("split", result.split["hash"][:12]),
                ("rows", ", ".join(f"{k} {v}" for k, v in result.rows.items()))]
        print(rows_text([*head, *result_table(result)]))
        if args.output:
            print(f"result written to {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import tasks
    from tasks.runner import result_table

    results = [tasks.load_result(p) for p in args.results]
    base = results[0]
    notes = {p: tasks.incomparable(base, r) for p, r in zip(args.results, results)}
    if args.json:
        print_json({"results": [{"file": p, "label": r.label, "comparable": not notes[p], "why_not": notes[p],
                                 "metrics": r.to_dict()["metrics"]} for p, r in zip(args.results, results)]})
        return 0
    tables = [dict(result_table(r)) for r in results]
    keys = list(dict.fromkeys(k for t in tables for k in t))
    labels = [f"[{i + 1}] {r.label}" for i, r in enumerate(results)]
    width = max(len(k) for k in [*keys, "metric"])
    cols = [max(len(label), *(len(t.get(k, "-")) for k in keys)) for label, t in zip(labels, tables)]
    print("  ".join(["metric".ljust(width), *(label.ljust(w) for label, w in zip(labels, cols))]).rstrip())
    for k in keys:
        print("  ".join([k.ljust(width), *(t.get(k, "-").ljust(w) for t, w in zip(tables, cols))]).rstrip())
    for i, p in enumerate(args.results):
        why = notes[p]
        state = "comparable with [1]" if not why else "NOT comparable with [1]: " + "; ".join(why)
        print(f"[{i + 1}] {p}: {state}")
    return 0
