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

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.context import BaseContext
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, delete, func, insert, select, true, update
from sqlalchemy.orm import Session

from ingest.intake import (
    Analysis,
    ClassifyOptions,
    Parser,
    analyse,
    blank_fields,
    default_parser,
    fill_headers_only,
    fill_parsed_fields,
)
from ingest.parallel import leave_with
from store.audit import AuditEvent
from store.blobs import put_blob
from store.mail import MAIL_STATE, Blob, InboundAttachment, InboundMail
from store.types import strip_nul
from store.uow import UnitOfWork

__all__ = [
    "DECIDED_STATES",
    "DERIVED_FIELDS",
    "MAX_ERRORS_IN_A_ROW",
    "POOL_THRESHOLD",
    "AnalyseSettings",
    "AttachmentRow",
    "Derived",
    "Evaluation",
    "Job",
    "Outcome",
    "ReprocessInterrupted",
    "ReprocessRefused",
    "ReprocessSummary",
    "Selection",
    "chunk_by_size",
    "default_workers",
    "derived_of",
    "evaluate",
    "evaluate_chunk",
    "reprocess",
    "run_chunks",
]

log = logging.getLogger(__name__)

DECIDED_STATES = ("geregistreerd", "afgewezen")
"""States whose mail is a record (a klantcontact, or a recorded dismissal): never changed by reprocessing."""

DERIVED_FIELDS = (
    "message_id", "message_id_synthetic", "from_name", "from_address", "to_addresses", "cc_addresses", "reply_to",
    "subject", "sent_at", "in_reply_to", "references", "text_body", "html_body", "flags", "classification",
    "defects",
)
"""The InboundMail columns the parser and classifier fill (`fill_parsed_fields`); all of them, nothing else."""


POOL_THRESHOLD = 64
"""Below this many mails the pool's start-up costs more than it saves."""
CHUNK_MAILS = 8
CHUNK_BYTES = 4 * 1024 * 1024
"""A chunk is at most this many mails or (beyond one mail) this many raw bytes: what one worker gets at a time."""
IN_FLIGHT_PER_WORKER = 8
"""Chunks queued per worker: enough to keep every core busy, few enough to keep memory bounded."""
PAGE_SIZE = 500
"""Mail ids read per selection query, so a selection of millions never sits in memory as a whole."""
WORKER_NICENESS = 10
"""Workers yield the CPU to the main process (the database writer), never to other programs' fair share."""
MAX_ERRORS_IN_A_ROW = 25
"""After this many consecutive failures the run stops: the cause (a database down) is not in the mails."""
REPROCESS_ACTOR = "kcc-mail reprocess"
KEEP_OUTCOMES = 1000
"""At most this many failures (and, in a dry run, changes) are kept for the report; the counts are complete."""


class ReprocessRefused(Exception):
    """The selection asks for something reprocessing must not do; nothing was changed."""


class ReprocessInterrupted(Exception):
    """The run was stopped (Ctrl-C); every mail is either done or untouched, so running again finishes it."""

    def __init__(self, summary: ReprocessSummary) -> None:
        super().__init__("reprocessing was interrupted; run the same command again to finish")
        self.summary = summary


# ------------------------------------------------------------------------------------------ what is compared


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """One InboundAttachment row without its ids, in the form the database gives it back."""

    bestandsnaam: str
    formaat: str
    size: int
    blob_sha256: str
    inline: bool
    content_id: str


@dataclass(frozen=True, slots=True)
class Derived:
    """Everything reprocessing may rewrite on one InboundMail, normalised so that equal means 'unchanged'."""

    state: str
    reason: str | None
    error: str
    fields: dict[str, Any]
    attachments: tuple[AttachmentRow, ...]

    def differences(self, other: Derived) -> tuple[str, ...]:
        """Names of what differs from `other`: state, reason, error, field names, attachments."""
        names = [name for name in ("state", "reason", "error") if getattr(self, name) != getattr(other, name)]
        names += [name for name in DERIVED_FIELDS if self.fields.get(name) != other.fields.get(name)]
        if self.attachments != other.attachments:
            names.append("attachments")
        return tuple(names)


def _normal(value: Any) -> Any:
    """The value as it comes back from the database: NUL-free strings, lists, UTC time stamps."""
    if isinstance(value, str):
        return strip_nul(value)
    if isinstance(value, list | tuple):
        return [_normal(item) for item in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _fields_of(mail: InboundMail) -> dict[str, Any]:
    return {name: _normal(getattr(mail, name)) for name in DERIVED_FIELDS}


def derived_of(mail: InboundMail) -> Derived:
    """What is stored for `mail` now (its attachments must be loaded)."""
    attachments = tuple(
        AttachmentRow(a.bestandsnaam, a.formaat, a.size, a.blob_sha256, a.inline, a.content_id)
        for a in sorted(mail.attachments, key=lambda a: a.position)
    )
    return Derived(mail.state, mail.reason, mail.error, _fields_of(mail), attachments)


def _blank_mail() -> InboundMail:
    """A transient InboundMail with the column defaults, for filling and reading back (never added to a session)."""
    mail = InboundMail()
    for name, value in blank_fields().items():
        setattr(mail, name, value)
    return mail


# ------------------------------------------------------------------------------------- the pure evaluation


@dataclass(frozen=True, slots=True)
class AnalyseSettings:
    """How to analyse raw bytes (picklable, sent to the workers): the limit, our addresses and the parser."""

    max_mail_bytes: int
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    parser: Parser = default_parser

    def analyse(self, raw: bytes, received_at: datetime, digest: str | None = None) -> Analysis:
        return analyse(
            raw, received_at, max_mail_bytes=self.max_mail_bytes, options=self.classify, parser=self.parser,
            digest=digest,
        )


@dataclass(frozen=True, slots=True)
class Job:
    """One stored mail to reprocess: its raw bytes and what is stored for it now."""

    mail_id: int
    raw: bytes = field(repr=False)
    sha256: str
    received_at: datetime
    current: Derived = field(repr=False)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What reprocessing would make of one mail: nothing (`target` None), a new target, or a problem."""

    mail_id: int
    target: Derived | None = None
    changes: tuple[str, ...] = ()
    blobs: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    problem: str = ""


def evaluate(job: Job, settings: AnalyseSettings) -> Evaluation:
    """Parse the stored bytes again and compare with what is stored; pure, never raises."""
    try:
        return _evaluate(job, settings)
    except Exception as exc:  # a bug here must cost one mail, not the run
        log.exception("mail=%s could not be evaluated", job.mail_id)
        return Evaluation(job.mail_id, problem=f"internal error while reprocessing ({type(exc).__name__}: {exc})")


def _evaluate(job: Job, settings: AnalyseSettings) -> Evaluation:
    current = job.current
    analysis = settings.analyse(job.raw, job.received_at, job.sha256)
    probe = _blank_mail()
    blobs: tuple[tuple[str, bytes], ...] = ()
    if analysis.parsed is None or analysis.classification is None:
        fill_headers_only(probe, job.raw)
        if current.state != "quarantaine":
            if _fields_of(probe) == current.fields and not current.attachments:
                return Evaluation(job.mail_id)  # released from quarantine as it was: it never parsed, nothing to do
            return Evaluation(job.mail_id, problem=(
                f"mail {job.mail_id} ({current.state}) no longer parses with the current parser "
                f"({analysis.reason}: {analysis.error}); it keeps its state and fields. Report the parser bug "
                f"with `kcc-mail quarantine export {job.mail_id} --out mail-{job.mail_id}.eml`"
            ))
        target = Derived("quarantaine", analysis.reason, analysis.error, _fields_of(probe), ())
    else:
        fill_parsed_fields(probe, analysis.parsed, analysis.classification)
        attachments = tuple(
            AttachmentRow(
                strip_nul(a.filename[:255]), strip_nul(a.content_type[:255]), len(a.data), a.sha256, a.inline,
                strip_nul(a.content_id or ""),
            )
            for a in analysis.parsed.attachments
        )
        if current.state == "quarantaine":
            target = Derived("te_beoordelen", None, "", _fields_of(probe), attachments)
        else:
            target = Derived(current.state, current.reason, current.error, _fields_of(probe), attachments)
        if attachments != current.attachments:
            blobs = tuple((a.sha256, a.data) for a in analysis.parsed.attachments)
    changes = target.differences(current)
    if not changes:
        return Evaluation(job.mail_id)
    return Evaluation(job.mail_id, target, changes, blobs)


def evaluate_chunk(jobs: list[Job], settings: AnalyseSettings) -> list[Evaluation]:
    """The unit of work of one pool worker (module level, so it pickles by name)."""
    return [evaluate(job, settings) for job in jobs]


# ------------------------------------------------------------------------------------------- the process pool

J = TypeVar("J")
R = TypeVar("R")
S = TypeVar("S")


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _start_worker(parent: int) -> None:
    """Ctrl-C is for the main process (it stops feeding the workers, which then finish their chunk and exit).
    Workers run at a lower priority: the main process holds the database write lock and must not wait for a
    core behind its own parsers. A killed main process (SIGKILL) tells nobody, so each worker watches it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    leave_with(parent)


def _pool_context() -> BaseContext:
    """A forkserver: workers start from a clean, single-threaded process (no locks copied from our threads)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", "ingest.reprocess", "ingest.importer"])
        return context
    return multiprocessing.get_context("spawn")


def run_chunks(
    work: Callable[[list[J], S], list[R]], chunks: Iterable[list[J]], settings: S, *, workers: int
) -> Iterator[tuple[list[J], list[R]]]:
    """Apply `work` to each chunk, in order: in this process, or in `workers` processes with bounded queueing.

    `chunks` is consumed lazily, at most `workers * IN_FLIGHT_PER_WORKER` ahead of the caller. A pool that
    breaks (a worker killed) is not fatal: the remaining chunks are done in this process.
    """
    if workers <= 1:
        for chunk in chunks:
            yield chunk, work(chunk, settings)
        return
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_start_worker, initargs=(os.getpid(),)
    )
    pending: deque[tuple[list[J], Future[list[R]] | None]] = deque()
    broken = False
    finished = False
    try:
        for chunk in chunks:
            future: Future[list[R]] | None = None
            if not broken:
                try:
                    future = executor.submit(work, chunk, settings)
                except BrokenProcessPool:
                    broken = True
                    log.warning("the process pool broke; parsing the rest in this process")
            pending.append((chunk, future))
            while len(pending) >= workers * IN_FLIGHT_PER_WORKER or (pending and pending[0][1] is None):
                yield _collect(pending.popleft(), work, settings)
        while pending:
            yield _collect(pending.popleft(), work, settings)
        finished = True
    finally:
        executor.shutdown(wait=finished, cancel_futures=not finished)


def _collect(
    item: tuple[list[J], Future[list[R]] | None], work: Callable[[list[J], S], list[R]], settings: S
) -> tuple[list[J], list[R]]:
    chunk, future = item
    if future is not None:
        try:
            return chunk, future.result()
        except Exception as exc:  # a worker died (BrokenProcessPool) or a result could not travel back
            log.warning("the pool failed on a chunk of %d mails (%s); it is done in this process", len(chunk),
                        type(exc).__name__)
    return chunk, work(chunk, settings)


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Selection:
    """Which stored mails to reprocess. `states` None means every state; decided mails only with `include_decided`.

    `since` is inclusive and `until` exclusive, both on the time the mail was received.
    """

    states: tuple[str, ...] | None = ("quarantaine",)
    reason: str | None = None
    mailbox: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] = ()
    include_decided: bool = False

    def condition(self, *, with_decided: bool | None = None) -> ColumnElement[bool]:
        include = self.include_decided if with_decided is None else with_decided
        parts: list[ColumnElement[bool]] = []
        if self.states is not None:
            parts.append(InboundMail.state.in_(self.states))
        if not include:
            parts.append(InboundMail.state.not_in(DECIDED_STATES))
        if self.reason is not None:
            parts.append(InboundMail.reason == self.reason)
        if self.mailbox is not None:
            parts.append(InboundMail.mailbox == self.mailbox)
        if self.since is not None:
            parts.append(InboundMail.received_at >= self.since)
        if self.until is not None:
            parts.append(InboundMail.received_at < self.until)
        if self.ids:
            parts.append(InboundMail.id.in_(self.ids))
        return and_(true(), *parts)


def _check(session: Session, selection: Selection) -> None:
    """Refuse what must not be reprocessed, before anything is changed."""
    unknown = set(selection.states or ()) - set(MAIL_STATE)
    if unknown:
        raise ReprocessRefused(f"unknown state {sorted(unknown)[0]!r}; choose one of {', '.join(MAIL_STATE)}")
    if selection.since and selection.until and selection.since >= selection.until:
        raise ReprocessRefused("--since must be before --until; nothing was selected or changed")
    hint = (
        "their klantcontact is a record and is never changed; add --include-registered to refresh only the "
        "parsed fields of the stored mail"
    )
    if not selection.include_decided and set(selection.states or ()) & set(DECIDED_STATES):
        raise ReprocessRefused(f"reprocessing geregistreerd or afgewezen mails is refused: {hint}")
    if selection.ids:
        found = dict(session.execute(
            select(InboundMail.id, InboundMail.state).where(InboundMail.id.in_(selection.ids))
        ).all())
        missing = sorted(set(selection.ids) - set(found))
        if missing:
            raise ReprocessRefused(
                f"no stored mail with id {', '.join(map(str, missing))}; `kcc-mail queue list --state all` lists "
                "them; nothing was changed"
            )
        decided = sorted(i for i, state in found.items() if state in DECIDED_STATES)
        if decided and not selection.include_decided:
            raise ReprocessRefused(
                f"mail {', '.join(map(str, decided))} is geregistreerd or afgewezen, reprocessing is refused: {hint}"
            )


def _count(session: Session, condition: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(InboundMail).where(condition)) or 0


def _pages(uow_factory: Callable[[], UnitOfWork], selection: Selection) -> Iterator[list[tuple[int, int]]]:
    """(id, size) of the selected mails in id order, a page at a time (keyset: safe while states change)."""
    after = 0
    while True:
        query = (
            select(InboundMail.id, InboundMail.size)
            .where(selection.condition(), InboundMail.id > after)
            .order_by(InboundMail.id)
            .limit(PAGE_SIZE)
        )
        with uow_factory() as uow:
            page = [(int(mail_id), int(size)) for mail_id, size in uow.session.execute(query)]
        if not page:
            return
        yield page
        after = page[-1][0]


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


_MAIL_COLUMNS = (
    InboundMail.id, InboundMail.raw_sha256, InboundMail.received_at, InboundMail.state, InboundMail.reason,
    InboundMail.error, *(getattr(InboundMail, name) for name in DERIVED_FIELDS),
)
# Built once, with bound parameters: constructing a statement costs more than executing it on SQLite.
_SELECT_MAILS = select(*_MAIL_COLUMNS).where(InboundMail.id.in_(bindparam("ids", expanding=True)))
_SELECT_MAILS_LOCKED = _SELECT_MAILS.with_for_update()
_SELECT_ATTACHMENTS = (
    select(
        InboundAttachment.inbound_mail_id, InboundAttachment.bestandsnaam, InboundAttachment.formaat,
        InboundAttachment.size, InboundAttachment.blob_sha256, InboundAttachment.inline, InboundAttachment.content_id,
    )
    .where(InboundAttachment.inbound_mail_id.in_(bindparam("ids", expanding=True)))
    .order_by(InboundAttachment.inbound_mail_id, InboundAttachment.position)
)
_SELECT_BLOBS = select(Blob.sha256, Blob.data).where(Blob.sha256.in_(bindparam("digests", expanding=True)))
_WRITTEN = ("state", "reason", "error", *DERIVED_FIELDS)
_UPDATE_MAIL = (
    update(InboundMail).where(InboundMail.id == bindparam("mail_id"), InboundMail.state == bindparam("old_state"))
    .values({name: bindparam(f"new_{name}", type_=InboundMail.__table__.c[name].type) for name in _WRITTEN})
)
_DELETE_ATTACHMENTS = delete(InboundAttachment).where(InboundAttachment.inbound_mail_id == bindparam("mail_id"))
_INSERT_ATTACHMENTS = insert(InboundAttachment)
_INSERT_AUDIT = insert(AuditEvent)


def _stored(session: Session, ids: list[int], *, lock: bool = False) -> dict[int, tuple[str, datetime, Derived]]:
    """(raw sha256, received at, Derived) per mail id, read with plain SELECTs: this runs once per mail.
    With `lock`, the mail rows are locked first, so their attachment rows cannot change under the read."""
    mails = session.execute(_SELECT_MAILS_LOCKED if lock else _SELECT_MAILS, {"ids": ids}).all()
    attachments: dict[int, list[AttachmentRow]] = {}
    for a in session.execute(_SELECT_ATTACHMENTS, {"ids": ids}):
        attachments.setdefault(a.inbound_mail_id, []).append(
            AttachmentRow(a.bestandsnaam, a.formaat, a.size, a.blob_sha256, a.inline, a.content_id)
        )
    found = {}
    for row in mails:
        values = row._mapping
        derived = Derived(
            row.state, row.reason, row.error, {name: _normal(values[name]) for name in DERIVED_FIELDS},
            tuple(attachments.get(row.id, ())),
        )
        found[row.id] = (row.raw_sha256, row.received_at, derived)
    return found


def _read_jobs(uow: UnitOfWork, ids: list[int]) -> tuple[list[Job], list[int]]:
    """The raw bytes and stored state of these mails, in one short read; also the ids that are gone."""
    with uow:
        session = uow.session
        stored = _stored(session, ids)
        digests = {sha for sha, _, _ in stored.values()}
        blobs = session.execute(_SELECT_BLOBS, {"digests": list(digests)})
        data = {sha: raw for sha, raw in blobs}  # dict(result) would take the Result for a mapping
    jobs = [
        Job(mail_id, data[sha], sha, received_at, derived)
        for mail_id, (sha, received_at, derived) in sorted(stored.items()) if sha in data
    ]
    return jobs, sorted(set(ids) - {job.mail_id for job in jobs})


# ------------------------------------------------------------------------------------------ writing results


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one mail; `changes` empty and no `error` means it came out identical."""

    mail_id: int
    before: str
    after: str
    changes: tuple[str, ...] = ()
    error: str = ""
    write_failed: bool = False


def _apply(
    uow: UnitOfWork, job: Job, evaluation: Evaluation, settings: AnalyseSettings, include_decided: bool
) -> Outcome:
    """Write one mail's new derived fields in its own transaction.

    Optimistic: the UPDATE only applies while the mail is still in the state it was read in (people change
    states; only reprocessing, with the same parser, changes the derived fields). If it is not, the row is
    read again under a lock and decided anew.
    """
    with uow:
        session = uow.session
        before = job.current
        if not _write(session, job.mail_id, before.state, evaluation):
            stored = _stored(session, [job.mail_id], lock=True).get(job.mail_id)
            if stored is None:
                return Outcome(job.mail_id, before.state, before.state,
                               error=f"mail {job.mail_id} was deleted while reprocessing (a purge?); nothing to do")
            before = stored[2]
            if before.state in DECIDED_STATES and not include_decided:
                log.info("mail=%s was decided meanwhile; left as it is", job.mail_id)
                return Outcome(job.mail_id, before.state, before.state)
            evaluation = evaluate(replace(job, current=before), settings)
            if evaluation.problem:
                return Outcome(job.mail_id, before.state, before.state, error=evaluation.problem)
            if evaluation.target is None:
                return Outcome(job.mail_id, before.state, before.state)
            _write(session, job.mail_id, before.state, evaluation)  # locked: it applies
        target = evaluation.target
        assert target is not None
        _audit(session, job.mail_id, before, evaluation)
        uow.commit()
        return Outcome(job.mail_id, before.state, target.state, evaluation.changes)


def _write(session: Session, mail_id: int, state: str, evaluation: Evaluation) -> bool:
    """Plain UPDATE/DELETE/INSERT statements (the ORM's bookkeeping would cost more than the parse): the new
    fields, and the attachment rows when those changed. False, with nothing written, when the mail is no
    longer in `state`."""
    target = evaluation.target
    assert target is not None
    values = {"state": target.state, "reason": target.reason, "error": target.error, **target.fields}
    params = {"mail_id": mail_id, "old_state": state, **{f"new_{name}": values[name] for name in _WRITTEN}}
    if cast(CursorResult[Any], session.execute(_UPDATE_MAIL, params)).rowcount != 1:
        return False
    if "attachments" not in evaluation.changes:
        return True
    session.execute(_DELETE_ATTACHMENTS, {"mail_id": mail_id})
    data = dict(evaluation.blobs)
    for row in target.attachments:
        put_blob(session, data[row.blob_sha256], row.blob_sha256)
    if target.attachments:
        session.execute(_INSERT_ATTACHMENTS, [
            {"inbound_mail_id": mail_id, "position": position, "bestandsnaam": row.bestandsnaam,
             "formaat": row.formaat, "size": row.size, "blob_sha256": row.blob_sha256, "inline": row.inline,
             "content_id": row.content_id}
            for position, row in enumerate(target.attachments)
        ])
    return True


def _audit(session: Session, mail_id: int, before: Derived, evaluation: Evaluation) -> None:
    """A state change, or a change to a decided mail's stored fields, is accounted for; a refresh is not."""
    target = evaluation.target
    assert target is not None
    details: dict[str, Any]
    if before.state == "quarantaine" and target.state != "quarantaine":
        action, details = "mail.vrijgegeven", {"via": "reprocess", "reden": before.reason}
    elif before.state in DECIDED_STATES:
        action, details = "mail.herverwerkt", {"via": "reprocess", "velden": list(evaluation.changes)}
    else:
        return
    session.execute(_INSERT_AUDIT, {
        "who": REPROCESS_ACTOR, "action": action, "object_type": "inbound_mail", "object_id": str(mail_id),
        "details": details,
    })


# ------------------------------------------------------------------------------------------------ the use case


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
        if outcome.before == "quarantaine" and outcome.after != "quarantaine":
            self.released += 1
        if outcome.after == "quarantaine":
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
        _check(uow.session, selection)
        summary.selected = _count(uow.session, selection.condition())
        if selection.states is None and not selection.include_decided:
            summary.decided_left_out = _count(uow.session, selection.condition(with_decided=True)) - summary.selected
    if on_start is not None:
        on_start(summary.selected)
    workers = default_workers() if workers is None else workers
    if summary.selected < pool_threshold or not _picklable(settings):
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
    for page in _pages(uow_factory, selection):
        for ids in chunk_by_size(page):
            jobs, gone = _read_jobs(uow_factory(), ids)
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
        return _apply(uow_factory(), job, evaluation, settings, include_decided)
    except Exception as exc:  # the database refused this one mail; the others can go on
        log.exception("mail=%s could not be written", job.mail_id)
        return Outcome(
            job.mail_id, state, state, error=f"could not store the result ({type(exc).__name__}: {exc})",
            write_failed=True,
        )
