"""Benchmarks as code: weight-space tasks, frozen splits, baselines and result files (issue #23).

Why a package of its own, above both ``builders`` and ``loaders``: a task reads a store (through ``zoo`` and the
loaders' splits and datasets) and, later, scores generated weights by evaluating models (through ``builders``).
``builders`` and ``loaders`` never import each other (docs/design.md §1), so a layer that needs both cannot live
in either; nor in ``zoo``, which imports neither. ``tasks`` may import ``zoo``, ``builders`` and ``loaders``;
nothing imports it except the command line, lazily inside ``zoo task``'s functions.

Names load on first use (PEP 562), like ``zoo``: ``import tasks`` costs no numpy-heavy learner, scikit-learn or
torch until a name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.lazy import lazy_names

_LAZY = {"TASKS": "registry", "SplitProtocol": "registry", "Task": "registry", "check_task": "registry",
         "get_task": "registry", "task_names": "registry", "Split": "splits", "load_split": "splits",
         "make_split": "splits", "store_identity": "splits", "Result": "results", "comparable": "results",
         "incomparable": "results", "load_result": "results", "run": "runner"}

if TYPE_CHECKING:
    from .registry import TASKS, SplitProtocol, Task, check_task, get_task, task_names
    from .results import Result, comparable, incomparable, load_result
    from .runner import run
    from .splits import Split, load_split, make_split, store_identity

__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["TASKS", "Result", "Split", "SplitProtocol", "Task", "check_task", "comparable", "get_task",
           "incomparable", "load_result", "load_split", "make_split", "run", "store_identity",
           "task_names"]
