"""Parsing beside storing: a worker process parses the next mails while intake writes the previous ones.

Parsing is pure and CPU-bound, storing waits on the database; on a 2-core machine the two overlap. A worker
that dies (a crash in a C library, memory) costs nothing but speed: the mail is parsed again in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from ingest.intake import Analysis, ClassifyOptions, analyse

log = logging.getLogger(__name__)


def _analyse(raw: bytes, received_at: datetime, max_mail_bytes: int, options: ClassifyOptions, digest: str) -> Analysis:
    return analyse(raw, received_at, max_mail_bytes=max_mail_bytes, options=options, digest=digest)


def leave_with(service: int) -> None:
    """Worker initializer: exit as soon as the process that started the pool is gone.

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


class AnalysePool:
    """One or more parse workers, started on first use and kept until `close()`.

    The poller submits from its own thread while its storing thread collects the results, so the executor is
    guarded by a lock. A worker that dies breaks the executor: every mail it still had is parsed in this process
    (`result`), and the next `submit` starts a fresh executor.
    """

    def __init__(self, max_mail_bytes: int, options: ClassifyOptions, workers: int = 1) -> None:
        self._max_mail_bytes = max_mail_bytes
        self._options = options
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, raw: bytes, received_at: datetime, digest: str) -> Future[Analysis]:
        arguments = (raw, received_at, self._max_mail_bytes, self._options, digest)
        with self._lock:
            if self._executor is None:
                self._executor = self._start()
            try:
                return self._executor.submit(_analyse, *arguments)
            except BrokenProcessPool:
                log.warning("a parse worker died; starting a new one")
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()
                return self._executor.submit(_analyse, *arguments)

    def _start(self) -> ProcessPoolExecutor:
        # forkserver: workers are forked from a clean single-threaded server, never from the service's threads
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["ingest.intake"])
        return ProcessPoolExecutor(
            max_workers=self._workers, mp_context=context, initializer=leave_with, initargs=(os.getpid(),)
        )

    def result(self, future: Future[Analysis], raw: bytes, received_at: datetime, digest: str) -> Analysis:
        """The worker's analysis, or this process's own when the worker died (or its executor was replaced)."""
        try:
            return future.result()
        except (BrokenProcessPool, CancelledError):
            log.warning("a parse worker died; parsing this mail in the main process")
            return _analyse(raw, received_at, self._max_mail_bytes, self._options, digest)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
