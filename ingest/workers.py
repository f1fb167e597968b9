"""Parse workers: processes that parse mail beside the process that stores it, for intake, reprocess and import.

Parsing is pure and CPU-bound, storing waits on the database; on a 2-core machine the two overlap. One kind of
pool serves every caller: per mail (`ParsePool.submit`, the poller) or per chunk of mails (`run_chunks`, batch
work). A worker that dies (a crash in a C library, memory) costs nothing but speed: its work is done again in
this process, and the next submit starts a fresh executor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
S = TypeVar("S")

PRELOAD = ["__main__", "ingest.analysis", "ingest.reevaluate", "ingest.sources.files"]
"""Imported once by the forkserver, so a new worker starts with the parser loaded (and __main__'s functions)."""
INTAKE_PRELOAD = ["ingest.analysis", "ingest.parse", "ingest.classify"]
"""What intake's workers need: the parser and classifier without SQLAlchemy or the tables, a tenth of PRELOAD's
import time. The forkserver starts when a backlog is found, and the first mails of it wait for this import."""
IN_FLIGHT_PER_WORKER = 8
"""Chunks queued per worker in `run_chunks`: enough to keep every core busy, few enough to bound memory."""
BATCH_NICENESS = 10
"""Batch workers yield the CPU to the main process (the database writer), never to other programs' fair share."""


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def picklable(value: object) -> bool:
    """Can `value` travel to a worker? A parser defined inside a test function cannot."""
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def leave_with(service: int) -> None:
    """Exit as soon as the process that started the pool is gone.

    A service killed with SIGKILL (or by the OOM killer) cannot shut its pool down, and an idle worker waits on its
    task queue for ever, keeping the forkserver and the resource tracker alive with it: every crash would leave
    processes behind. Linux tells a pidfd's reader when that process exits; elsewhere, look twice a second.
    """

    def watch() -> None:
        try:
            pidfd = os.pidfd_open(service)
        except (AttributeError, OSError):  # no pidfd here, or the process is gone already
            while _alive(service):
                time.sleep(0.5)
        else:
            select.select([pidfd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="watch-service", daemon=True).start()


def _alive(pid: int) -> bool:
    """Is `pid` alive? A zombie (killed, not yet reaped) is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _start_worker(parent: int, niceness: int) -> None:
    """Ctrl-C is for the main process (it stops feeding the workers, which finish their work and exit); a worker
    may run at a lower priority; and it watches its parent, since a killed parent tells nobody."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    leave_with(parent)


def _context(preload: list[str]) -> BaseContext:
    """A forkserver: workers start from a clean, single-threaded process (no locks copied from our threads)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(preload)
        return context
    return multiprocessing.get_context("spawn")


class ParsePool:
    """`workers` parse processes, started on first use and kept until `close()`.

    Submitting may happen from one thread while another collects results, so the executor is guarded by a lock.
    A worker that dies breaks the executor: `result` then does the work in this process, and the next `submit`
    starts a fresh executor.
    """

    def __init__(self, workers: int, *, niceness: int = 0, preload: list[str] = PRELOAD) -> None:
        self._workers = workers
        self._niceness = niceness
        self._preload = preload
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, work: Callable[..., R], *arguments: Any) -> Future[R]:
        with self._lock:
            if self._executor is None:
                self._executor = self._start()
            try:
                return self._executor.submit(work, *arguments)
            except BrokenProcessPool:
                log.warning("a parse worker died; starting a new one")
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()
                return self._executor.submit(work, *arguments)

    def result(self, future: Future[R], work: Callable[..., R], *arguments: Any) -> R:
        """The worker's result, or `work(*arguments)` done here when the worker died (or its executor was replaced)."""
        try:
            return future.result()
        except (BrokenProcessPool, CancelledError):
            log.warning("a parse worker died; doing its work in the main process")
        except Exception as exc:  # a result that could not travel back: the work itself is pure, do it again
            log.warning("a parse worker failed (%s); doing its work in the main process", type(exc).__name__)
        return work(*arguments)

    def close(self, *, wait: bool = False) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=wait, cancel_futures=not wait)
                self._executor = None

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers, mp_context=_context(self._preload), initializer=_start_worker,
            initargs=(os.getpid(), self._niceness),
        )


def run_chunks(
    work: Callable[[list[J], S], list[R]], chunks: Iterable[list[J]], settings: S, *, workers: int
) -> Iterator[tuple[list[J], list[R]]]:
    """Apply `work` to each chunk, in order: in this process, or in a ParsePool of `workers`, bounded.

    `chunks` is consumed lazily, at most `workers * IN_FLIGHT_PER_WORKER` ahead of the caller. A worker that dies
    costs only speed: its chunk is done in this process.
    """
    if workers <= 1:
        for chunk in chunks:
            yield chunk, work(chunk, settings)
        return
    pool = ParsePool(workers, niceness=BATCH_NICENESS)
    pending: deque[tuple[list[J], Future[list[R]]]] = deque()
    finished = False
    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(work, chunk, settings)))
            while len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield _collect(pool, pending.popleft(), work, settings)
        while pending:
            yield _collect(pool, pending.popleft(), work, settings)
        finished = True
    finally:
        pool.close(wait=finished)


def _collect(
    pool: ParsePool, item: tuple[list[J], Future[list[R]]], work: Callable[[list[J], S], list[R]], settings: S
) -> tuple[list[J], list[R]]:
    chunk, future = item
    return chunk, pool.result(future, work, chunk, settings)
