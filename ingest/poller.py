"""The poller: fetch new mail from one mailbox, store each exactly once, and only then tell the server.

Order matters for "nothing lost, nothing twice": commit the mail, then mark it processed on the server, then move
the high-water mark. A crash between any two steps re-fetches the mail next time, and the unique keys skip it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from ingest.analysis import Analysis, ClassifyOptions, Parser, StoredMail, analyse, analyse_mails, default_parser
from ingest.sources.base import FetchedMail, MailCommandError, MailRef, MailSource, SourceError
from ingest.storing import GroupLimits, StoredBatch, StoringThread
from ingest.workers import INTAKE_PRELOAD, ParsePool
from store.blobs import sha256_hex
from store.engine import describe_error
from store.states import MailState
from store.types import utcnow

log = logging.getLogger(__name__)

IDLE_SLICE_SECONDS = 5.0
PIPELINE_MIN_MAILS = 20  # fewer new mails than this are parsed here: starting a worker would cost more
PIPELINE_DEPTH = 64  # mails fetched and parsing ahead of the one being stored
PIPELINE_BYTES = 24 * 1024 * 1024  # and their bytes: together they bound the memory held in flight
CHUNK_MAILS = 10  # mails sent to a parse worker in one task: a task's trip costs about one small mail's parse
CHUNK_BYTES = 1024 * 1024  # a chunk is sent once it holds this much, so large mails go (nearly) alone
MAX_BACKOFF_SECONDS = 60.0
STANDBY_SECONDS = 30.0  # how often a standby instance checks whether the other's lease has run out


@dataclass
class IntakeSummary:
    """Counts for one poll, as printed by `kcc-mail poll --once`."""

    fetched: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: IntakeSummary) -> None:
        self.fetched += other.fetched
        self.stored += other.stored
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.errors += other.errors
        self.failures.extend(other.failures)

    def line(self) -> str:
        return (
            f"fetched={self.fetched} stored={self.stored} quarantined={self.quarantined} "
            f"duplicates={self.duplicates}"
        )


@dataclass(frozen=True, slots=True)
class MailboxProgress:
    """How far intake got in one mailbox folder: the UIDVALIDITY it last saw and the UID below which all is stored."""

    uidvalidity: int | None
    high_water_uid: int


class IntakeLedger(Protocol):
    """What the poller needs from the database; each call is one transaction (kcc.usecases.intake.Intake)."""

    def acquire_lease(self, mailbox: str, owner: str) -> MailboxProgress | None:
        """Take or renew the right to poll `mailbox`; None while another live process holds it."""
        ...

    def release_lease(self, mailbox: str, owner: str) -> None: ...

    def record_progress(
        self, mailbox: str, owner: str, *, uidvalidity: int | None, high_water_uid: int | None, error: str = "",
        success: bool = True,
    ) -> None:
        """Move the high-water mark forward and note the poll's outcome (an error for `kcc-mail status`)."""
        ...

    def stored_digests(self, mailbox: str) -> set[str]:
        """The sha256 of every mail stored for `mailbox` (a UIDVALIDITY re-scan skips these unparsed)."""
        ...

    def store_group(
        self, mailbox: str, mails: Sequence[tuple[FetchedMail, Analysis]], uidvalidity: int | None
    ) -> list[StoredMail | None]:
        """Store several mails and commit them together; a mail that fails costs the others nothing."""
        ...


@dataclass(frozen=True, slots=True)
class Parsing:
    """A fetched mail on its way: being parsed (maybe in a worker, as mail `index` of a chunk), then stored."""

    fetched: FetchedMail
    digest: str
    received_at: datetime
    chunk: ParseChunk | None = None
    index: int = 0
    duplicate: bool = False


class ParseChunk:
    """Mails sent to a parse worker as one task; their analyses, fetched once by the storing thread."""

    def __init__(self, pool: ParsePool, mails: list[tuple[bytes, datetime, str]], settings: PollSettings) -> None:
        self._pool = pool
        self._mails = mails
        self._settings = settings
        self._future: Future[list[Analysis]] = pool.submit(
            analyse_mails, mails, settings.max_mail_bytes, settings.classify
        )
        self._analyses: list[Analysis] | None = None

    def analysis(self, index: int) -> Analysis:
        """The worker's result; if the worker died, the chunk is parsed here (once)."""
        if self._analyses is None:
            settings = self._settings
            self._analyses = self._pool.result(
                self._future, analyse_mails, self._mails, settings.max_mail_bytes, settings.classify
            )
            self._mails = []  # the storing thread holds the raw bytes; do not keep a second reference
        return self._analyses[index]


@dataclass(frozen=True, slots=True)
class PollSettings:
    mailbox: str
    max_mail_bytes: int
    poll_interval: float
    batch_size: int
    classify: ClassifyOptions
    group: GroupLimits = field(default_factory=GroupLimits)


class Poller:
    """Intake for one mailbox; `run_once` for cron and tests, `run_forever` for the service."""

    def __init__(
        self, ledger: IntakeLedger, source: MailSource, settings: PollSettings, owner: str,
        *, parser: Parser = default_parser, stop: threading.Event | None = None,
    ) -> None:
        self._ledger = ledger
        self._source = source
        self._settings = settings
        self._owner = owner
        self._parser = parser
        self._stop = stop or threading.Event()
        self._known: set[str] | None = None  # during a re-scan: the sha256 of every mail already stored
        self._pool: ParsePool | None = None  # parse workers, once there was a backlog worth them
        self._chunk: list[Parsing] = []  # fetched, waiting to be sent to a parse worker together
        self.standing_by = False
        """True while another process holds this mailbox's lease (a second instance on standby)."""

    @property
    def mailbox(self) -> str:
        return self._settings.mailbox

    def run_once(self) -> IntakeSummary:
        """Fetch everything new (a full re-scan after a UIDVALIDITY change) and return the counts."""
        state = self._ledger.acquire_lease(self.mailbox, self._owner)
        if state is None:
            if not self.standing_by:
                log.info("mailbox=%s is polled by another process; this one stands by and takes over when that "
                         "process's lease runs out", self.mailbox, extra=self._context)
            self.standing_by = True
            return IntakeSummary()
        if self.standing_by:
            log.info("mailbox=%s taken over from the other process", self.mailbox, extra=self._context)
            self.standing_by = False
        try:
            status = self._source.open()
        except SourceError as exc:  # e.g. login refused, an expired token: `kcc-mail status` must show why
            self._record_failure(None, str(exc))
            raise
        rescan = state.uidvalidity is not None and state.uidvalidity != status.uidvalidity
        if rescan:
            log.warning(
                "mailbox=%s UIDVALIDITY changed from %s to %s; re-scanning the folder, matching by sha256",
                self.mailbox, state.uidvalidity, status.uidvalidity, extra=self._context,
            )
        above = 0 if rescan or state.uidvalidity is None else state.high_water_uid
        self._known = self._ledger.stored_digests(self.mailbox) if rescan else None
        summary = IntakeSummary()
        try:
            refs = self._source.list_new(above)
            if self._pool is None and self._parser is default_parser and len(refs) >= PIPELINE_MIN_MAILS:
                self._pool = ParsePool(workers=2, preload=INTAKE_PRELOAD)
            if refs:
                self._fetch_and_store(refs, status.uidvalidity, summary)
            else:
                self._ledger.record_progress(
                    self.mailbox, self._owner, uidvalidity=status.uidvalidity, high_water_uid=None
                )
        except SourceError as exc:
            self._record_failure(status.uidvalidity, str(exc))
            raise
        return summary

    def _fetch_and_store(self, refs: Sequence[MailRef], uidvalidity: int, summary: IntakeSummary) -> None:
        """Fetch batch after batch while a thread stores; mark each batch once its mails are committed.

        The database's time per mail then overlaps the fetching and parsing of the next mails.
        """
        storing: StoringThread[Parsing] = StoringThread(
            lambda group: self._store_group(group, uidvalidity, summary), PIPELINE_DEPTH,
            size=lambda parsing: len(parsing.fetched.raw), limits=self._settings.group, max_bytes=PIPELINE_BYTES,
        )
        try:
            for start in range(0, len(refs), self._settings.batch_size):
                if self._stop.is_set():
                    break
                batch = refs[start:start + self._settings.batch_size]
                self._fetch_batch(batch, storing, summary)
                self._send_chunk(storing)
                storing.end_batch(batch)
                self._settle(storing.stored(), uidvalidity)
        except BaseException:
            self._chunk = []  # fetched, never stored: not marked, fetched again next time
            # Mark what was committed; when the connection itself was lost that fails too, and the error that
            # matters is the first one. Unmarked mails are fetched again next time and skipped as stored.
            try:
                self._settle(storing.close(), uidvalidity)
            except SourceError as exc:
                log.warning("mailbox=%s stored mails not marked processed (%s); the next poll skips them",
                            self.mailbox, exc, extra=self._context)
            raise
        self._settle(storing.close(), uidvalidity)
        storing.raise_error()

    def _fetch_batch(self, batch: Sequence[MailRef], storing: StoringThread[Parsing], summary: IntakeSummary) -> None:
        for item in self._source.fetch(batch):
            if isinstance(item, MailCommandError):
                summary.errors += 1
                summary.failures.append(str(item))
                log.warning("mailbox=%s fetch failed: %s", self.mailbox, item, extra=self._context)
                continue
            summary.fetched += 1
            self._queue(self._start_parsing(item), storing)
            if self._stop.is_set():
                break

    def _queue(self, parsing: Parsing, storing: StoringThread[Parsing]) -> None:
        """To the storing thread in order; with parse workers, by way of a chunk that is sent when full.

        A mail reaches the storing thread only once its chunk is on its way to a worker: the thread waits for the
        mail's analysis, and the chunk must not wait for the thread in turn.
        """
        if self._pool is None:
            storing.put(parsing)
            return
        self._chunk.append(parsing)
        to_parse = [len(p.fetched.raw) for p in self._chunk if not p.duplicate]
        if len(to_parse) >= CHUNK_MAILS or sum(to_parse) >= CHUNK_BYTES:
            self._send_chunk(storing)

    def _send_chunk(self, storing: StoringThread[Parsing]) -> None:
        """Send the waiting mails to a parse worker as one task, then hand them to the storing thread."""
        waiting, self._chunk = self._chunk, []
        to_parse = [parsing for parsing in waiting if not parsing.duplicate]
        chunk = None
        if to_parse and self._pool is not None:
            chunk = ParseChunk(self._pool, [(p.fetched.raw, p.received_at, p.digest) for p in to_parse], self._settings)
        index = 0
        for parsing in waiting:
            if parsing.duplicate:
                storing.put(parsing)
            else:
                storing.put(replace(parsing, chunk=chunk, index=index))
                index += 1

    def _settle(self, batches: Sequence[StoredBatch], uidvalidity: int) -> None:
        """Mark the committed mails processed, then move the high-water mark past each complete batch."""
        for stored in batches:
            if stored.handled:
                self._source.mark_processed(stored.handled)
            if stored.complete:
                self._ledger.record_progress(
                    self.mailbox, self._owner, uidvalidity=uidvalidity,
                    high_water_uid=high_water(stored.batch, stored.handled),
                )

    def _start_parsing(self, fetched: FetchedMail) -> Parsing:
        """The mail on its way; a known duplicate (during a re-scan) is not parsed at all."""
        digest = sha256_hex(fetched.raw)
        received_at = fetched.internaldate or utcnow()
        duplicate = self._known is not None and digest in self._known
        return Parsing(fetched, digest, received_at, duplicate=duplicate)

    def _store_group(self, group: Sequence[Parsing], uidvalidity: int, summary: IntakeSummary) -> list[MailRef]:
        """Store the group's mails in one transaction; the refs of all of them, to be marked after the commit."""
        mails = [(parsing.fetched, self._analysis(parsing)) for parsing in group if not parsing.duplicate]
        summary.duplicates += len(group) - len(mails)
        stored = self._ledger.store_group(self.mailbox, mails, uidvalidity) if mails else []
        for mail in stored:
            if mail is None:
                summary.duplicates += 1
            elif mail.state == MailState.QUARANTAINE:
                summary.quarantined += 1
                log.warning("mailbox=%s mail=%s quarantined reason=%s", self.mailbox, mail.id, mail.reason,
                            extra=self._context | {"mail": mail.id})
            else:
                summary.stored += 1
                log.info("mailbox=%s mail=%s stored", self.mailbox, mail.id, extra=self._context | {"mail": mail.id})
        return [parsing.fetched.ref for parsing in group]

    def _analysis(self, parsing: Parsing) -> Analysis:
        """The worker's result when a worker parsed it, else parsed here."""
        settings = self._settings
        if parsing.chunk is not None:
            return parsing.chunk.analysis(parsing.index)
        return analyse(
            parsing.fetched.raw, parsing.received_at, max_mail_bytes=settings.max_mail_bytes,
            options=settings.classify, parser=self._parser, digest=parsing.digest,
        )

    def _record_failure(self, uidvalidity: int | None, error: str) -> None:
        try:
            self._ledger.record_progress(
                self.mailbox, self._owner, uidvalidity=uidvalidity, high_water_uid=None, error=error, success=False,
            )
        except Exception as exc:  # the database may be what failed; the caller's error is the one that matters
            log.error("mailbox=%s could not record the failed poll: %s", self.mailbox, describe_error(exc),
                      extra=self._context)

    def run_forever(self) -> None:
        """Poll until stopped: IDLE where the server has it, else every poll_interval; catch up after reconnects."""
        failures = 0
        while not self._stop.is_set():
            try:
                self.run_once()
                failures = 0
                if self.standing_by:  # the other process polls; look again well before its lease could run out
                    self._stop.wait(min(self._settings.poll_interval, STANDBY_SECONDS))
                else:
                    self._wait_for_mail()
                continue
            except SourceError as exc:
                problem = f"unreachable ({exc})"
            except Exception as exc:  # the database or a bug; the service must keep going for the other mail
                log.error("mailbox=%s poll failed: %s", self.mailbox, describe_error(exc), extra=self._context)
                log.debug("mailbox=%s poll failure", self.mailbox, exc_info=True, extra=self._context)
                problem = f"poll failed ({type(exc).__name__})"
                self._record_failure(None, f"{problem}: {describe_error(exc)}; the service retries, see its log")
            failures += 1
            delay = min(MAX_BACKOFF_SECONDS, 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
            log.warning("mailbox=%s %s; retrying in %.0f s", self.mailbox, problem, delay, extra=self._context)
            self._source.close()
            self._stop.wait(delay)
        self.close()

    def close(self) -> None:
        """Log out, stop the parse workers and give up the mailbox lease, so another process may poll at once."""
        self._source.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        try:
            self._ledger.release_lease(self.mailbox, self._owner)
        except Exception:
            log.warning("mailbox=%s could not release its lease; it expires by itself", self.mailbox,
                        extra=self._context)

    @property
    def _context(self) -> dict[str, object]:
        """The ids a log line of this poller carries as JSON keys (see kcc.logs.CONTEXT_FIELDS)."""
        return {"mailbox": self.mailbox}

    def _wait_for_mail(self) -> None:
        """Wait in short slices so a stop request is honoured within seconds; scan when woken or when due."""
        waited = 0.0
        while not self._stop.is_set() and waited < self._settings.poll_interval:
            timeout = min(IDLE_SLICE_SECONDS, self._settings.poll_interval - waited)
            if self._source.wait(timeout):
                return
            waited += timeout


def high_water(batch: Sequence[MailRef], handled: Sequence[MailRef]) -> int | None:
    """The highest UID below which every mail of `batch` is handled; a mail that failed to fetch holds it back."""
    handled_uids = [ref.uid for ref in handled if ref.uid is not None]
    if not handled_uids:
        return None
    done = set(handled_uids)
    failed = [ref.uid for ref in batch if ref.uid is not None and ref.uid not in done]
    limit = min(failed) - 1 if failed else max(handled_uids)
    below = [uid for uid in handled_uids if uid <= limit]
    return max(below) if below else None


