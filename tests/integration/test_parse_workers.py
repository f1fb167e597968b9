"""Parse workers are real processes: one that dies (the OOM killer, a crash in a C library) costs no mail."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

from support.mails import customer_mail
from support.procfs import process_stats

from ingest.analysis import Analysis, ClassifyOptions, analyse_mails
from ingest.workers import ParsePool
from store.blobs import sha256_hex

RECEIVED = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)


def workers() -> set[int]:
    """Live children of this process's forkserver: the workers of every pool it has open (other tests' too)."""
    stats = dict(process_stats())
    forkservers = {pid for pid, fields in stats.items() if int(fields[1]) == os.getpid()}
    return {pid for pid, fields in stats.items() if int(fields[1]) in forkservers and fields[0] != "Z"}


def job(raw: bytes) -> tuple[list[tuple[bytes, datetime, str]], int, ClassifyOptions]:
    """What the poller hands a worker for a chunk of one mail (ingest.analysis.analyse_mails)."""
    return [(raw, RECEIVED, sha256_hex(raw))], 1_000_000, ClassifyOptions()


def subject_via(pool: ParsePool, subject: str) -> str:
    raw = customer_mail(subject)
    [analysis] = pool.result(pool.submit(analyse_mails, *job(raw)), analyse_mails, *job(raw))
    return subject_of(analysis)


def subject_of(analysis: Analysis) -> str:
    assert analysis.parsed is not None
    return analysis.parsed.subject


def test_a_killed_parse_worker_costs_no_mail_and_is_replaced() -> None:
    others = workers()
    pool = ParsePool(workers=1)
    try:
        assert subject_via(pool, "Voor de crash") == "Voor de crash"
        (worker,) = workers() - others
        in_flight = customer_mail("Onderweg tijdens de crash")
        future = pool.submit(analyse_mails, *job(in_flight))
        os.kill(worker, signal.SIGKILL)
        time.sleep(0.5)  # the executor notices the death and marks itself broken
        # The poller submits the next mails before it collects this one: they go to a fresh worker.
        assert subject_via(pool, "Na de crash") == "Na de crash"
        [analysis] = pool.result(future, analyse_mails, *job(in_flight))
        assert subject_of(analysis) == "Onderweg tijdens de crash"
        replacements = workers() - others
        assert worker not in replacements
        assert len(replacements) == 1, "a new worker took over"
    finally:
        pool.close()
