"""The worker processes of an import: they scan the source, read units and commit them.

``Workers(n)`` stands for ``n`` processes (none for 0 or 1: everything runs in the importing process).
``map(fn, items)`` runs ``fn`` over many small items (trial folders to scan) a chunk at a time; ``run(units,
job_of)`` runs one job per unit (read its checkpoint files, commit it to the store) and yields (unit, result) as
each finishes, keeping ``2 * n`` jobs in flight; with one process, or a single unit, the jobs run here in order.
The first error a job raises is re-raised here; the jobs not started are then cancelled and those running are
waited for, so nothing is still writing when the caller cleans up (and what was committed stays committed).

How workers start: ``fork`` on Linux when this process runs no other thread (the command line: ``Workers`` is
entered before anything opens the store, whose zarr event loop is a thread), which costs milliseconds and needs
no ``if __name__ == "__main__"`` guard in a calling script; else ``forkserver`` (``spawn`` where there is none),
since forking copies whatever locks other threads hold at that instant. A forkserver or spawn child imports the
caller's main module again (up to Python 3.13, once per worker: seconds for a script that imports torch), so the
pool is kept for the next import in the same process (a notebook, a test session) rather than started anew; its
idle workers end with the process. Workers ignore Ctrl-C (the importing process stops handing out jobs, waits
for the running ones and leaves) and run torch, should a file need it, on one thread. A job is a picklable call:
a module-level function with its arguments, such as ``functools.partial(statedicts.read_rows, spec, files)``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import TypeVar

from zoo.errors import ZooError

U = TypeVar("U")
R = TypeVar("R")
T = TypeVar("T")
#: Modules a fork server imports once, so each worker starts with them.
PRELOAD = ("builders.importers.protocol", "builders.importers.statedicts")
#: Set in worker processes (``_init_worker``).
IN_WORKER = False


def worker_count(workers: int | None) -> int:
    """``workers`` as given (0 and 1 both mean this process), or by default one per CPU this process may use."""
    if workers is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ZooError(f"workers: expected an integer >= 0 (0 or 1: read in this process), got {workers!r}")
    return workers


def _init_worker() -> None:
    """Worker initializer: Ctrl-C is for the importing process, which stops the pool."""
    global IN_WORKER
    IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_method() -> str:
    """``fork`` on Linux while this process runs one thread; else ``forkserver`` or ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _warm() -> None:
    """Before workers fork: what each would pay on its first commit, paid once here. pyarrow imports pandas (about
    0.4 s) on its first ``pa.array`` of a Python list, which the metadata of every unit is built from, and this
    process builds some too (compaction)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - a dependency
        return
    pa.array([0])


#: The pool kept for the next import: (start method, workers, pid of its owner) -> the pool.
_POOLS: dict[tuple[str, int, int], ProcessPoolExecutor] = {}


def _pool(method: str, workers: int) -> ProcessPoolExecutor:
    """This process's pool of ``workers`` processes started with ``method`` (a new one replaces another size's)."""
    key = (method, workers, os.getpid())
    pool = _POOLS.get(key)
    if pool is None:
        for other in [k for k in _POOLS if k[2] == os.getpid()]:
            _POOLS.pop(other).shutdown(wait=False, cancel_futures=True)
        _POOLS.clear()  # a forked child's copy of its parent's pools is not its own
        ctx = multiprocessing.get_context(method)
        if method == "fork":
            _warm()
        if method == "forkserver":
            ctx.set_forkserver_preload(["__main__", *PRELOAD])  # the default ('__main__'), and ours
        pool = _POOLS[key] = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
        if method == "fork":  # every worker starts now, while this process is single-threaded
            pool.submit(int).result()
    return pool


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool (a worker died: killed, out of memory), so the next import starts a new one."""
    for key, known in list(_POOLS.items()):
        if known is pool:
            del _POOLS[key]
    pool.shutdown(wait=False, cancel_futures=True)


class Workers:
    """The processes of an import: a context manager (``with Workers(n) as workers``), entered first."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        kept = next((k[0] for k in _POOLS if k[1:] == (workers, os.getpid())), None)  # started safely before
        self.method = (kept or start_method()) if workers > 1 else ""

    def __enter__(self) -> Workers:
        if self.method == "fork":  # now, before the caller opens the store (and zarr starts its thread)
            _pool(self.method, self.workers)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:
        return None  # the pool stays for the next import; ``run`` already waited for its jobs

    def map(self, fn: Callable[[T], R], items: Sequence[T], chunk: int = 8) -> list[R]:
        """``[fn(x) for x in items]``, by the workers ``chunk`` items at a time when there are several chunks;
        the first error, in the order of ``items``, is raised."""
        if not self.parallel(-(-len(items) // chunk)):
            return [fn(x) for x in items]
        return list(_pool(self.method, self.workers).map(fn, items, chunksize=chunk))

    def parallel(self, units: int) -> bool:
        """Whether ``run`` will hand ``units`` units to worker processes (else it runs them here)."""
        return self.workers > 1 and units > 1

    def run(self, units: Sequence[U], job_of: Callable[[U], Callable[[], R]]) -> Iterator[tuple[U, R]]:
        """(unit, what its job returned) for every unit: from the workers in the order they finish (when
        ``parallel``), else run here in order. On an error, the jobs not started are cancelled and those running
        are waited for, so that nothing is still writing when the caller cleans up."""
        if not self.parallel(len(units)):
            for unit in units:
                yield unit, job_of(unit)()
            return
        pool = _pool(self.method, self.workers)
        queue = iter(units)
        running: dict[Future[R], U] = {}

        def submit() -> None:
            unit = next(queue, None)
            if unit is not None:
                running[pool.submit(job_of(unit))] = unit

        try:
            for _ in range(2 * self.workers):
                submit()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit = running.pop(future)
                    result = future.result()  # a worker's error is raised here
                    submit()  # keep the workers busy while the caller takes this one
                    yield unit, result
        except BrokenProcessPool:
            _discard(pool)
            raise
        finally:
            for future in running:
                future.cancel()
            wait(running)
