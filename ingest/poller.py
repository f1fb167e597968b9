"""The poller: fetch new mail from one mailbox, store each exactly once, and only then tell the server.

Order matters for "nothing lost, nothing twice": commit the mail, then mark it processed on the server, then move
the high-water mark. A crash between any two steps re-fetches the mail next time, and the unique keys skip it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest.intake import (
    ClassifyOptions,
    IntakeSummary,
    Parser,
    acquire_lease,
    analyse,
    default_parser,
    record_progress,
    release_lease,
    store_mail,
    stored_digests,
)
from ingest.sources.base import FetchedMail, MailCommandError, MailRef, MailSource, SourceError
from store.blobs import sha256_hex
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

IDLE_SLICE_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PollSettings:
    mailbox: str
    max_mail_bytes: int
    poll_interval: float
    batch_size: int
    classify: ClassifyOptions


class Poller:
    """Intake for one mailbox; `run_once` for cron and tests, `run_forever` for the service."""

    def __init__(
        self, uow_factory: Callable[[], UnitOfWork], source: MailSource, settings: PollSettings, owner: str,
        *, parser: Parser = default_parser, stop: threading.Event | None = None,
    ) -> None:
        self._uow = uow_factory
        self._source = source
        self._settings = settings
        self._owner = owner
        self._parser = parser
        self._stop = stop or threading.Event()
        self._known: set[str] | None = None  # during a re-scan: the sha256 of every mail already stored

    @property
    def mailbox(self) -> str:
        return self._settings.mailbox

    def run_once(self) -> IntakeSummary:
        """Fetch everything new (a full re-scan after a UIDVALIDITY change) and return the counts."""
        state = acquire_lease(self._uow(), self.mailbox, self._owner)
        if state is None:
            log.info("mailbox=%s is being polled by another process; skipped", self.mailbox)
            return IntakeSummary()
        status = self._source.open()
        rescan = state.uidvalidity is not None and state.uidvalidity != status.uidvalidity
        if rescan:
            log.warning(
                "mailbox=%s UIDVALIDITY changed from %s to %s; re-scanning the folder, matching by sha256",
                self.mailbox, state.uidvalidity, status.uidvalidity,
            )
        above = 0 if rescan or state.uidvalidity is None else state.high_water_uid
        self._known = stored_digests(self._uow(), self.mailbox) if rescan else None
        summary = IntakeSummary()
        try:
            refs = self._source.list_new(above)
            for start in range(0, len(refs), self._settings.batch_size):
                if self._stop.is_set():
                    break
                batch = refs[start:start + self._settings.batch_size]
                high_water = self._process_batch(batch, status.uidvalidity, summary)
                record_progress(
                    self._uow(), self.mailbox, self._owner, uidvalidity=status.uidvalidity, high_water_uid=high_water
                )
            if not refs:
                record_progress(
                    self._uow(), self.mailbox, self._owner, uidvalidity=status.uidvalidity, high_water_uid=None
                )
        except SourceError as exc:
            self._record_failure(status.uidvalidity, str(exc))
            raise
        return summary

    def _process_batch(self, batch: Sequence[MailRef], uidvalidity: int, summary: IntakeSummary) -> int | None:
        """Store each mail of the batch, then mark the stored ones; returns the new high-water UID."""
        done: list[MailRef] = []
        try:
            for item in self._source.fetch(batch):
                if isinstance(item, MailCommandError):
                    summary.errors += 1
                    summary.failures.append(str(item))
                    log.warning("mailbox=%s fetch failed: %s", self.mailbox, item)
                    continue
                summary.fetched += 1
                self._store(item, uidvalidity, summary)
                done.append(item.ref)
                if self._stop.is_set():
                    break
        finally:
            if done:
                self._source.mark_processed(done)
        fetched_uids = {ref.uid for ref in done}
        failed_uids = [ref.uid for ref in batch if ref.uid is not None and ref.uid not in fetched_uids]
        handled = [ref.uid for ref in done if ref.uid is not None]
        if not handled:
            return None
        limit = min(failed_uids) - 1 if failed_uids else max(handled)
        below = [uid for uid in handled if uid <= limit]
        return max(below) if below else None

    def _store(self, fetched: FetchedMail, uidvalidity: int, summary: IntakeSummary) -> None:
        digest = sha256_hex(fetched.raw)
        if self._known is not None and digest in self._known:
            summary.duplicates += 1
            return
        analysis = analyse(
            fetched.raw, fetched.internaldate or utcnow(), max_mail_bytes=self._settings.max_mail_bytes,
            options=self._settings.classify, parser=self._parser, digest=digest,
        )
        mail = store_mail(self._uow(), self.mailbox, fetched, uidvalidity, analysis)
        if mail is None:
            summary.duplicates += 1
        elif mail.state == "quarantaine":
            summary.quarantined += 1
            log.warning("mailbox=%s mail=%s quarantined reason=%s", self.mailbox, mail.id, mail.reason)
        else:
            summary.stored += 1
            log.info("mailbox=%s mail=%s stored", self.mailbox, mail.id)

    def _record_failure(self, uidvalidity: int, error: str) -> None:
        try:
            record_progress(
                self._uow(), self.mailbox, self._owner, uidvalidity=uidvalidity, high_water_uid=None,
                error=error, success=False,
            )
        except Exception:  # the database may be what failed; the caller's error is the one that matters
            log.exception("mailbox=%s could not record the failed poll", self.mailbox)

    def run_forever(self) -> None:
        """Poll until stopped: IDLE where the server has it, else every poll_interval; catch up after reconnects."""
        failures = 0
        while not self._stop.is_set():
            try:
                self.run_once()
                failures = 0
                self._wait_for_mail()
                continue
            except SourceError as exc:
                problem = f"unreachable ({exc})"
            except Exception as exc:  # the database or a bug; the service must keep going for the other mail
                log.exception("mailbox=%s poll failed", self.mailbox)
                problem = f"poll failed ({type(exc).__name__})"
            failures += 1
            delay = min(MAX_BACKOFF_SECONDS, 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
            log.warning("mailbox=%s %s; retrying in %.0f s", self.mailbox, problem, delay)
            self._source.close()
            self._stop.wait(delay)
        self.close()

    def close(self) -> None:
        """Log out and give up the mailbox lease, so another process may poll at once."""
        self._source.close()
        try:
            release_lease(self._uow(), self.mailbox, self._owner)
        except Exception:
            log.warning("mailbox=%s could not release its lease; it expires by itself", self.mailbox)

    def _wait_for_mail(self) -> None:
        """Wait in short slices so a stop request is honoured within seconds; scan when woken or when due."""
        waited = 0.0
        while not self._stop.is_set() and waited < self._settings.poll_interval:
            timeout = min(IDLE_SLICE_SECONDS, self._settings.poll_interval - waited)
            if self._source.wait(timeout):
                return
            waited += timeout
