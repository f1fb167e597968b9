"""Intake's transactions: store each fetched mail exactly once, parsed or quarantined, and each mailbox's progress.

The poller (ingest.poller) decides the order of fetch, store and mark; it calls these through its IntakeLedger
port. Each call is one transaction. Parsing happens before it opens, so a slow mail never holds a database lock.
A group of mails may share one transaction (group commit): the poller marks them on the server only after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from ingest.analysis import Analysis, StoredMail, mail_row
from ingest.poller import MailboxProgress
from ingest.sources.base import FetchedMail
from kcc.usecases.heartbeat import process_is_gone
from store.engine import describe_error, is_unavailable
from store.inbound import NewMail, insert_inbound_group, insert_inbound_mail
from store.mail import InboundMail, MailboxState
from store.states import QuarantineReason
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

LEASE_SECONDS = 180  # renewed at every poll (at least each poll_interval); a killed process's lease expires


class Intake:
    """The IntakeLedger of ingest.poller on this database: one unit of work per call."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork]) -> None:
        self._uow = uow_factory

    def acquire_lease(self, mailbox: str, owner: str) -> MailboxProgress | None:
        return acquire_lease(self._uow(), mailbox, owner)

    def release_lease(self, mailbox: str, owner: str) -> None:
        release_lease(self._uow(), mailbox, owner)

    def record_progress(
        self, mailbox: str, owner: str, *, uidvalidity: int | None, high_water_uid: int | None, error: str = "",
        success: bool = True,
    ) -> None:
        record_progress(self._uow(), mailbox, owner, uidvalidity=uidvalidity, high_water_uid=high_water_uid,
                        error=error, success=success)

    def stored_digests(self, mailbox: str) -> set[str]:
        return stored_digests(self._uow(), mailbox)

    def store(
        self, mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis
    ) -> StoredMail | None:
        return store_mail(self._uow(), mailbox, fetched, uidvalidity, analysis)

    def store_group(
        self, mailbox: str, mails: Sequence[tuple[FetchedMail, Analysis]], uidvalidity: int | None
    ) -> list[StoredMail | None]:
        return store_group(self._uow, mailbox, mails, uidvalidity)


def store_group(
    uow_factory: Callable[[], UnitOfWork], mailbox: str, mails: Sequence[tuple[FetchedMail, Analysis]],
    uidvalidity: int | None,
) -> list[StoredMail | None]:
    """Store several mails in one transaction (one commit for all); per mail what `store_mail` returns.

    When any mail of the group fails, the whole transaction is rolled back and the mails are stored one by one,
    each in its own transaction, so the mail that failed ends in quarantine and the others are stored as parsed.
    A database that cannot be reached is raised, as by `store_mail`.
    """
    if len(mails) > 1:
        try:
            return _insert_group(uow_factory(), mailbox, mails, uidvalidity)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            log.warning("mailbox=%s a group of %d mails could not be stored together (%s); storing them one by one",
                        mailbox, len(mails), describe_error(exc), extra={"mailbox": mailbox})
    return [store_mail(uow_factory(), mailbox, fetched, uidvalidity, analysis) for fetched, analysis in mails]


def _insert_group(
    uow: UnitOfWork, mailbox: str, mails: Sequence[tuple[FetchedMail, Analysis]], uidvalidity: int | None
) -> list[StoredMail | None]:
    """One attempt at the whole group, as parsed; any failure is raised and nothing of the group is kept."""
    rows = [mail_row(mailbox, fetched, uidvalidity, analysis, headers=True) for fetched, analysis in mails]
    with uow:
        ids = insert_inbound_group(
            uow.session, mailbox, [NewMail(row.blobs, row.values, row.attachments) for row in rows]
        )
        uow.commit()
    reasons = [analysis.reason if analysis.parsed is None else None for _, analysis in mails]
    return [
        None if mail_id is None else StoredMail(mail_id, row.state, reason)
        for mail_id, row, reason in zip(ids, rows, reasons, strict=True)
    ]


def store_mail(
    uow: UnitOfWork, mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis
) -> StoredMail | None:
    """Store the raw bytes, attachments and the InboundMail row in one transaction; None when already stored.

    Nothing a mail contains may stop the intake: when building or writing the parsed row fails for this mail
    (a value the database refuses, a bug in our code), the mail is stored again in quarantine (`internal_error`)
    with only what its raw headers show, then with nothing but its bytes. Only a database that cannot be reached
    is raised, so the caller stops and the mail is fetched again next time.
    """
    try:
        return _insert(uow, mailbox, fetched, uidvalidity, analysis, headers=True)
    except Exception as exc:
        if is_unavailable(exc):
            raise
        failure = exc
    log.warning("mailbox=%s %s could not be stored as parsed (%s); storing it in quarantine",
                mailbox, fetched.ref.key, describe_error(failure), extra={"mailbox": mailbox})
    quarantined = Analysis(
        analysis.sha256, None, None, QuarantineReason.INTERNAL_ERROR,
        f"storing the parsed mail failed ({describe_error(failure)}); it is kept unparsed. A bug: report it "
        "with the mail exported by `kcc-mail quarantine export`, then `kcc-mail reprocess` brings it back",
    )
    try:
        return _insert(uow, mailbox, fetched, uidvalidity, quarantined, headers=True)
    except Exception as exc:
        if is_unavailable(exc):
            raise
    return _insert(uow, mailbox, fetched, uidvalidity, quarantined, headers=False)


def _insert(
    uow: UnitOfWork, mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis,
    *, headers: bool,
) -> StoredMail | None:
    """One attempt: the row `analysis` makes (plain INSERTs, one statement on PostgreSQL: this runs per mail)."""
    row = mail_row(mailbox, fetched, uidvalidity, analysis, headers=headers)
    with uow:
        # The unique keys (mailbox, uidvalidity, uid) and (mailbox, sha256) decide what is a duplicate, also
        # against another process storing the same mail right now; any other refusal is raised.
        mail_id = insert_inbound_mail(uow.session, row.blobs, row.values, row.attachments)
        if mail_id is None:
            return None  # leaving the unit of work rolls back whatever was not committed yet
        uow.commit()
    return StoredMail(mail_id, row.state, analysis.reason if analysis.parsed is None else None)


def is_stored(uow: UnitOfWork, mailbox: str, sha256: str, uidvalidity: int | None, uid: int | None) -> bool:
    """Did an earlier poll, import or another process already store this mail?"""
    condition = InboundMail.raw_sha256 == sha256
    if uid is not None:
        condition = or_(condition, (InboundMail.uidvalidity == uidvalidity) & (InboundMail.uid == uid))
    with uow:
        query = select(InboundMail.id).where(InboundMail.mailbox == mailbox, condition).limit(1)
        return uow.session.scalar(query) is not None


def stored_digests(uow: UnitOfWork, mailbox: str) -> set[str]:
    """Every raw sha256 stored for `mailbox`: a re-scan after a UIDVALIDITY change skips these without parsing."""
    with uow:
        return set(uow.session.scalars(select(InboundMail.raw_sha256).where(InboundMail.mailbox == mailbox)))


def acquire_lease(uow: UnitOfWork, mailbox: str, owner: str, seconds: int = LEASE_SECONDS) -> MailboxProgress | None:
    """Take (or renew) the right to poll `mailbox`; None when another live process holds it."""
    now = utcnow()
    with uow:
        session = uow.session
        state = session.scalar(select(MailboxState).where(MailboxState.mailbox == mailbox).with_for_update())
        if state is None:
            state = MailboxState(mailbox=mailbox, high_water_uid=0)
            session.add(state)
        elif (
            state.lease_owner not in ("", owner) and state.lease_until is not None and state.lease_until > now
            and not process_is_gone(state.lease_owner)
        ):
            return None
        state.lease_owner, state.lease_until = owner, now + timedelta(seconds=seconds)
        progress = MailboxProgress(uidvalidity=state.uidvalidity, high_water_uid=state.high_water_uid or 0)
        try:
            uow.commit()
        except IntegrityError:  # another process created the row at the same moment; it wins this round
            return None
        return progress


def release_lease(uow: UnitOfWork, mailbox: str, owner: str) -> None:
    with uow:
        state = uow.session.get(MailboxState, mailbox, with_for_update=True)
        if state is not None and state.lease_owner == owner:
            state.lease_owner, state.lease_until = "", None
            uow.commit()


def record_progress(
    uow: UnitOfWork, mailbox: str, owner: str, *, uidvalidity: int | None, high_water_uid: int | None,
    error: str = "", success: bool = True,
) -> None:
    """Move the high-water mark (only forward within one UIDVALIDITY) and note the poll's outcome.

    `uidvalidity` None: the folder could not even be opened; only the error is noted.
    """
    now = utcnow()
    with uow:
        state = uow.session.get(MailboxState, mailbox, with_for_update=True)
        if state is None or state.lease_owner != owner:
            return  # our lease was taken over; the new holder keeps its own progress
        if uidvalidity is not None and state.uidvalidity != uidvalidity:
            state.uidvalidity, state.high_water_uid = uidvalidity, 0
        if high_water_uid is not None and high_water_uid > state.high_water_uid:
            state.high_water_uid = high_water_uid
        state.last_poll_at = now
        if success:
            state.last_success_at, state.last_error = now, ""
        else:
            state.last_error = error[:2000]
        state.lease_until = now + timedelta(seconds=LEASE_SECONDS)
        uow.commit()
