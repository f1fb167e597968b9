"""LMTP intake's transactions: store one delivered mail exactly once, then let the MTA hear 250.

The LMTP server (ingest.sources.lmtp) calls `deliver` on a worker thread and answers only after it returned, so
what returns here is committed. A mail is analysed before the transaction opens (as the poller does); a mail over
storage.max_mail_bytes is stored in quarantine (`too_large`) and answered 250 like any other: the MTA has handed
it over and kcc-mail keeps it. A database that cannot be reached becomes DeliveryDeferred (451: the MTA retries),
and a retry of bytes already stored in this mailbox is answered 250 without a second row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ingest.analysis import AnalyseSettings
from ingest.sources.base import FetchedMail
from ingest.sources.lmtp import Delivered, DeliveryDeferred
from kcc.usecases.intake import store_mail
from store.engine import describe_error, is_unavailable
from store.mail import MailboxState
from store.states import MailState
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

NOTE_EVERY_SECONDS = 10.0
"""A stream of stored mails notes its last success at most this often (status needs minutes, not every mail)."""


class LmtpIntake:
    """The LMTP server's Delivery for one mailbox on this database: one unit of work per mail."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], mailbox: str, analyse: AnalyseSettings) -> None:
        self._uow = uow_factory
        self.mailbox = mailbox
        self._analyse = analyse
        self._lock = threading.Lock()
        self._noted_at = 0.0
        self._failing = False

    def deliver(self, mail: FetchedMail) -> Delivered:
        analysis = self._analyse.analyse(mail.raw, mail.internaldate or utcnow())
        try:
            stored = store_mail(self._uow(), self.mailbox, mail, None, analysis)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._note(f"the database could not be reached ({describe_error(exc)}); the MTA was told to retry")
            raise DeliveryDeferred(f"the database could not be reached: {describe_error(exc)}") from None
        self._note("")
        if stored is None:
            log.info("mailbox=%s LMTP mail of %d bytes was already stored; answered 250", self.mailbox,
                     len(mail.raw), extra={"mailbox": self.mailbox})
            return Delivered(None)
        log.info("mailbox=%s LMTP mail %d stored (%s)", self.mailbox, stored.id, stored.state,
                 extra={"mailbox": self.mailbox})
        return Delivered(stored.id, quarantined=stored.state == MailState.QUARANTAINE)

    def _note(self, error: str) -> None:
        """Keep `kcc-mail status` informed: the last mail stored, or why the last one was not (throttled)."""
        with self._lock:
            now = time.monotonic()
            if not error and not self._failing and now - self._noted_at < NOTE_EVERY_SECONDS:
                return
            self._noted_at, self._failing = now, bool(error)
        try:
            note_delivery(self._uow(), self.mailbox, error)
        except Exception as exc:  # the database may be the very thing that failed; the log has it
            log.debug("mailbox=%s LMTP outcome not noted: %s", self.mailbox, type(exc).__name__)


def note_delivery(uow: UnitOfWork, mailbox: str, error: str = "") -> None:
    """Record an LMTP delivery in the mailbox's progress row: a success (error "") or why it was deferred."""
    now = utcnow()
    with uow:
        state = uow.session.get(MailboxState, mailbox, with_for_update=True)
        if state is None:
            state = MailboxState(mailbox=mailbox, high_water_uid=0, lease_owner="")
            uow.session.add(state)
        state.last_poll_at = now
        if error:
            state.last_error = error[:2000]
        else:
            state.last_success_at, state.last_error = now, ""
        uow.commit()
