"""Parsing beside storing: a worker process parses the next mails while intake writes the previous ones.

Parsing is pure and CPU-bound, storing waits on the database; on a 2-core machine the two overlap. A worker
that dies (a crash in a C library, memory) costs nothing but speed: the mail is parsed again in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from ingest.intake import Analysis, ClassifyOptions, analyse

log = logging.getLogger(__name__)


def _analyse(raw: bytes, received_at: datetime, max_mail_bytes: int, options: ClassifyOptions, digest: str) -> Analysis:
    return analyse(raw, received_at, max_mail_bytes=max_mail_bytes, options=options, digest=digest)


class AnalysePool:
    """One or more parse workers, started on first use and kept until `close()`."""

    def __init__(self, max_mail_bytes: int, options: ClassifyOptions, workers: int = 1) -> None:
        self._max_mail_bytes = max_mail_bytes
        self._options = options
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, raw: bytes, received_at: datetime, digest: str) -> Future[Analysis]:
        if self._executor is None:
            # forkserver: workers are forked from a clean single-threaded server, never from the service's threads
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["ingest.intake"])
            self._executor = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
        return self._executor.submit(_analyse, raw, received_at, self._max_mail_bytes, self._options, digest)

    def result(self, future: Future[Analysis], raw: bytes, received_at: datetime, digest: str) -> Analysis:
        """The worker's analysis, or this process's own when the worker died."""
        try:
            return future.result()
        except BrokenProcessPool:
            log.warning("a parse worker died; parsing this mail in the main process and starting a new worker")
            self.close()
            return _analyse(raw, received_at, self._max_mail_bytes, self._options, digest)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
