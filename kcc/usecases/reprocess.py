"""Reprocess stored mails: parse the stored raw bytes again with today's parser and classifier.

Why this exists: the parser gets better (or a bug in it is fixed) after mails were stored; quarantined mails
must then come back into the review queue, and the review queue must show what the current parser sees. The
raw bytes in the database are the source of truth, so nothing is ever fetched from the mailbox again.

How it stays safe and fast:

* Parsing is pure and CPU-bound, so large selections are parsed in a process pool (`run_chunks`), fed in
  bounded chunks of raw bytes; the worker also compares the result with what is stored, so a mail that comes
  out the same costs the main process nothing but a read.
* Every change is one transaction per mail in the main process, applied only while the mail is still in the
  state it was read in (else it is read again, locked, and decided anew): an interrupted run leaves every mail
  either done or untouched, and running again finishes the job.
* A registered or dismissed mail is a record: its klantcontact and bijlagen are never touched, and its derived
  fields only with `include_decided` (`--include-registered`).
* A mail under review that no longer parses is left as it is and reported: a parser regression must not empty
  the review queue into quarantine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ingest.analysis import AnalyseSettings
from ingest.reevaluate import Evaluation, Job, evaluate_chunk
from ingest.workers import default_workers, picklable, run_chunks
from kcc.usecases.reprocess_rows import (
    DECIDED_STATES,
    Outcome,
    ReprocessRefused,
    Selection,
    apply,
    check_selection,
    count,
    pages,
    read_jobs,
)
from store.states import MailState
from store.uow import UnitOfWork

__all__ = [
    "DECIDED_STATES",
    "MAX_ERRORS_IN_A_ROW",
    "POOL_THRESHOLD",
    "Outcome",
    "ReprocessInterrupted",
    "ReprocessRefused",
    "ReprocessSummary",
    "Selection",
    "chunk_by_size",
    "reprocess",
]

log = logging.getLogger(__name__)

J = TypeVar("J")

POOL_THRESHOLD = 64
"""Below this many mails the pool's start-up costs more than it saves."""
CHUNK_MAILS = 8
CHUNK_BYTES = 4 * 1024 * 1024
"""A chunk is at most this many mails or (beyond one mail) this many raw bytes: what one worker gets at a time."""
MAX_ERRORS_IN_A_ROW = 25
"""After this many consecutive failures the run stops: the cause (a database down) is not in the mails."""
KEEP_OUTCOMES = 1000
"""At most this many failures (and, in a dry run, changes) are kept for the report; the counts are complete."""


class ReprocessInterrupted(Exception):
    """The run was stopped (Ctrl-C); every mail is either done or untouched, so running again finishes it."""

    def __init__(self, summary: ReprocessSummary) -> None:
        super().__init__("reprocessing was interrupted; run the same command again to finish")
        self.summary = summary


def chunk_by_size(items: Iterable[tuple[J, int]]) -> Iterator[list[J]]:
    """Group items (with their size in bytes) into chunks of at most CHUNK_MAILS items or about CHUNK_BYTES."""
    chunk: list[J] = []
    size = 0
    for item, item_size in items:
        if chunk and (len(chunk) >= CHUNK_MAILS or size + item_size > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


@dataclass
class ReprocessSummary:
    """The counts of one run. `reparsed` counts every mail parsed again; `released` (out of quarantine),
    `still_quarantined` and `unchanged` (came out identical) are subsets of it, not a partition."""

    selected: int = 0
    reparsed: int = 0
    released: int = 0
    still_quarantined: int = 0
    unchanged: int = 0
    errors: int = 0
    dry_run: bool = False
    decided_left_out: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    changes: list[Outcome] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.reparsed - self.unchanged

    def add(self, outcome: Outcome) -> None:
        if outcome.error:
            self.errors += 1
            if len(self.failures) < KEEP_OUTCOMES:
                self.failures.append((outcome.mail_id, outcome.error))
            return
        self.reparsed += 1
        if outcome.before == MailState.QUARANTAINE and outcome.after != MailState.QUARANTAINE:
            self.released += 1
        if outcome.after == MailState.QUARANTAINE:
            self.still_quarantined += 1
        if outcome.changes:
            if self.dry_run and len(self.changes) < KEEP_OUTCOMES:
                self.changes.append(outcome)
        else:
            self.unchanged += 1

    def line(self) -> str:
        return (
            f"selected={self.selected} reparsed={self.reparsed} released={self.released} "
            f"still_quarantined={self.still_quarantined} unchanged={self.unchanged} errors={self.errors}"
        )

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "selected": self.selected, "reparsed": self.reparsed, "released": self.released,
            "still_quarantined": self.still_quarantined, "unchanged": self.unchanged, "errors": self.errors,
            "changed": self.changed, "dry_run": self.dry_run, "decided_left_out": self.decided_left_out,
            "failures": [{"id": mail_id, "error": error} for mail_id, error in self.failures],
        }
        if self.dry_run:
            data["would_change"] = [
                {"id": o.mail_id, "from": o.before, "to": o.after, "changes": list(o.changes)} for o in self.changes
            ]
        return data


Progress = Callable[[Outcome, ReprocessSummary], None]


def reprocess(
    uow_factory: Callable[[], UnitOfWork], selection: Selection, settings: AnalyseSettings, *,
    dry_run: bool = False, workers: int | None = None, pool_threshold: int = POOL_THRESHOLD,
    progress: Progress | None = None, on_start: Callable[[int], None] | None = None,
) -> ReprocessSummary:
    """Reprocess the selected mails; see the module docstring. Raises `ReprocessRefused` before changing
    anything, `ReprocessInterrupted` (with the counts so far) on Ctrl-C."""
    summary = ReprocessSummary(dry_run=dry_run)
    with uow_factory() as uow:
        check_selection(uow.session, selection)
        summary.selected = count(uow.session, selection.condition())
        if selection.states is None and not selection.include_decided:
            summary.decided_left_out = count(uow.session, selection.condition(with_decided=True)) - summary.selected
    if on_start is not None:
        on_start(summary.selected)
    workers = default_workers() if workers is None else workers
    if summary.selected < pool_threshold or not picklable(settings):
        workers = 1
    in_a_row = 0
    try:
        for jobs, evaluations in run_chunks(evaluate_chunk, _job_chunks(uow_factory, selection, summary, progress),
                                            settings, workers=workers):
            for job, evaluation in zip(jobs, evaluations, strict=True):
                outcome = _outcome(uow_factory, job, evaluation, settings, selection.include_decided, dry_run)
                summary.add(outcome)
                if outcome.error:
                    log.warning("mail=%s reprocess failed: %s", outcome.mail_id, outcome.error)
                in_a_row = in_a_row + 1 if outcome.write_failed else 0
                if progress is not None:
                    progress(outcome, summary)
                if in_a_row >= MAX_ERRORS_IN_A_ROW:
                    raise ReprocessRefused(
                        f"stopped after {in_a_row} mails in a row failed (last: {outcome.error}); fix the cause and "
                        "run the same command again: what was done stays done"
                    )
    except KeyboardInterrupt:
        raise ReprocessInterrupted(summary) from None
    return summary


def _job_chunks(
    uow_factory: Callable[[], UnitOfWork], selection: Selection, summary: ReprocessSummary, progress: Progress | None,
) -> Iterator[list[Job]]:
    for page in pages(uow_factory, selection):
        for ids in chunk_by_size(page):
            jobs, gone = read_jobs(uow_factory(), ids)
            for mail_id in gone:
                outcome = Outcome(mail_id, "?", "?", error=f"mail {mail_id} was deleted while reprocessing")
                summary.add(outcome)
                if progress is not None:
                    progress(outcome, summary)
            if jobs:
                yield jobs


def _outcome(
    uow_factory: Callable[[], UnitOfWork], job: Job, evaluation: Evaluation, settings: AnalyseSettings,
    include_decided: bool, dry_run: bool,
) -> Outcome:
    state = job.current.state
    if evaluation.problem:
        return Outcome(job.mail_id, state, state, error=evaluation.problem)
    if evaluation.target is None:
        return Outcome(job.mail_id, state, state)
    if dry_run:
        return Outcome(job.mail_id, state, evaluation.target.state, evaluation.changes)
    try:
        return apply(uow_factory(), job, evaluation, settings, include_decided)
    except Exception as exc:  # the database refused this one mail; the others can go on
        log.exception("mail=%s could not be written", job.mail_id)
        return Outcome(
            job.mail_id, state, state, error=f"could not store the result ({type(exc).__name__}: {exc})",
            write_failed=True,
        )
