"""Every change of an outbox message's status, and nothing else changes it.

The relay's transactions (claim, finish, release, expire) and the operator's (resend, mark-sent), plus a bounce
that comes back: each is one short transaction, guarded by the lease token where a relay holds one. What the
reply's outcome means for its klantcontact (indicatieContactGelukt, a task for the KCC) is kcc.records.reply_outcome.

Sending happens between claim and finish with no transaction open (replies.relay). A relay that dies in between
leaves its rows `sending`; once their lease has run out they become `uncertain` and wait for an operator.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from kcc.errors import NotFound, Refused
from kcc.records import reply_outcome
from kcc.usecases.paging import Page
from replies.delivery import (
    DEFAULT_SETTINGS,
    DUE,
    FINISHABLE,
    RESENDABLE,
    Claim,
    Decision,
    RelaySettings,
    decide,
    fully_accepted,
    operator_advice,
)
from replies.smtp import Delivery
from store import audit
from store.engine import describe_error
from store.mail import Blob
from store.outbox import OutboxMessage
from store.states import OutboxStatus
from store.types import UTCDateTime, utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)


class OutboxError(Refused):
    """An operator's request on the outbox cannot be carried out; nothing was changed."""


class OutboxNotFound(OutboxError, NotFound):
    """No outbox message has that id."""


class Outbox:
    """The OutboxLedger of replies.relay on this database: one unit of work per call, from any thread."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], settings: RelaySettings) -> None:
        self._uow = uow_factory
        self._settings = settings

    def expire_leases(self, now: datetime) -> int:
        return expire_leases(self._uow(), now=now)

    def claim(self, now: datetime) -> list[Claim]:
        settings = self._settings
        return claim(self._uow(), now=now, lease_seconds=settings.lease_seconds, limit=settings.batch_size,
                     max_bytes=settings.batch_bytes)

    def finish(self, claimed: Claim, delivery: Delivery, now: datetime) -> str | None:
        return finish(self._uow(), claimed, delivery, now=now, settings=self._settings)

    def finish_accepted(self, done: Sequence[tuple[Claim, Delivery]], now: datetime) -> list[str | None]:
        return finish_accepted(self._uow(), done, now=now)

    def release(self, claims: list[Claim], now: datetime) -> None:
        release(self._uow(), claims, now=now)


# --- the relay's transactions --------------------------------------------------------------------------------

# The relay's hot path uses the tables directly: plain statements, no ORM objects to build and track.
_outbox = cast(Table, OutboxMessage.__table__)
_blob = cast(Table, Blob.__table__)


def claim(
    uow: UnitOfWork, *, now: datetime, lease_seconds: float, limit: int, max_bytes: int = 20 * 1024 * 1024
) -> list[Claim]:
    """Take up to `limit` due messages, oldest first, for one lease; rows another relay holds are skipped.

    The batch also stays under `max_bytes` of message data (but always holds one message), so a run of large
    replies cannot fill the relay's memory. FOR UPDATE SKIP LOCKED is left out on SQLite, whose transactions
    take the write lock at BEGIN.
    """
    token, lease_until = uuid.uuid4().hex, now + timedelta(seconds=lease_seconds)
    with uow:
        session = uow.session
        due = session.execute(
            select(_outbox.c.id, _blob.c.size)
            .join(_blob, _blob.c.sha256 == _outbox.c.blob_sha256)
            .where(_outbox.c.status.in_(DUE), _outbox.c.next_attempt_at <= now)
            .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
            .limit(limit)
            .with_for_update(of=_outbox, skip_locked=True)
        ).all()
        ids: list[int] = []
        total = 0
        for outbox_id, size in due:
            if ids and total + size > max_bytes:
                break
            ids.append(outbox_id)
            total += size
        if not ids:
            return []
        rows = session.execute(
            update(_outbox).where(_outbox.c.id.in_(ids))
            .values(status=OutboxStatus.SENDING, lease_token=token, lease_until=lease_until,
                    attempts=_outbox.c.attempts + 1)
            .returning(_outbox.c.id, _outbox.c.klantcontact_id, _outbox.c.attempts, _outbox.c.deliver_until,
                       _outbox.c.envelope_from, _outbox.c.envelope_to, _outbox.c.blob_sha256)
        ).all()
        blobs: dict[str, bytes] = {sha256: data for sha256, data in session.execute(
            select(_blob.c.sha256, _blob.c.data).where(_blob.c.sha256.in_({row.blob_sha256 for row in rows}))
        )}
        uow.commit()
    order = {outbox_id: position for position, outbox_id in enumerate(ids)}
    return [
        Claim(row.id, row.klantcontact_id, token, lease_until, row.attempts, row.deliver_until, row.envelope_from,
              tuple(row.envelope_to), blobs[row.blob_sha256])
        for row in sorted(rows, key=lambda row: order[row.id])
    ]


def finish(
    uow: UnitOfWork, claimed: Claim, delivery: Delivery, *, now: datetime, settings: RelaySettings = DEFAULT_SETTINGS,
) -> str | None:
    """Record the outcome if the lease is still ours; returns the new status, or None when it was not ours."""
    if fully_accepted(delivery):
        return finish_accepted(uow, [(claimed, delivery)], now=now)[0]
    decision = decide(delivery, claimed, now=now, settings=settings)
    accepted_at = delivery.accepted_at or now
    with uow:
        session = uow.session
        outbox = session.scalar(
            select(OutboxMessage)
            .where(OutboxMessage.id == claimed.outbox_id, OutboxMessage.lease_token == claimed.lease_token)
            .with_for_update()
        )
        if outbox is None or outbox.status not in FINISHABLE or (
            outbox.status == OutboxStatus.UNCERTAIN and decision.status != OutboxStatus.SENT
        ):
            _lease_lost(claimed, decision.status)
            return None
        outbox.status, outbox.last_smtp_reply = decision.status, decision.reply
        if decision.status == OutboxStatus.UNCERTAIN:
            outbox.last_smtp_reply = f"{decision.reply}. {operator_advice(outbox.id)}"
        outbox.lease_token, outbox.lease_until = "", None
        if decision.next_attempt_at is not None:
            outbox.next_attempt_at = decision.next_attempt_at
        if decision.status == OutboxStatus.SENT:
            outbox.sent_at = accepted_at
            reply_outcome.delivered(session, [(claimed.klantcontact_id, accepted_at)])
        session.flush()
        if decision.undelivered:
            _report_undelivered(session, outbox, decision.undelivered)
        uow.commit()
    _log_outcome(claimed, decision, delivery)
    return decision.status


def finish_accepted(
    uow: UnitOfWork, done: Sequence[tuple[Claim, Delivery]], *, now: datetime
) -> list[str | None]:
    """Record messages every recipient accepted as `sent`, several in one transaction (a group commit).

    The common case, so it is one prepared statement run for all rows at once; each row must still carry the
    lease token of its claim. Returns per message "sent", or None where the lease was no longer ours.
    """
    if not done:
        return []
    rows: list[dict[str, Any]] = [
        {"outbox_id": claimed.outbox_id, "token": claimed.lease_token, "at": delivery.accepted_at or now,
         "reply": delivery.summary(), "contact": claimed.klantcontact_id}
        for claimed, delivery in done
    ]
    with uow:
        session = uow.session
        if _rowcount(session.execute(_MARK_SENT, rows)) == len(rows):
            ours = {row["outbox_id"] for row in rows}
        else:  # some lease was lost meanwhile (rare): find out which, one row at a time
            uow.rollback()
            ours = {row["outbox_id"] for row in rows if _rowcount(session.execute(_MARK_SENT, row)) == 1}
        reply_outcome.delivered(session, [(row["contact"], row["at"]) for row in rows if row["outbox_id"] in ours])
        uow.commit()
    statuses: list[str | None] = []
    for claimed, _ in done:
        if claimed.outbox_id in ours:
            statuses.append(OutboxStatus.SENT)
            log.info("outbox=%s sent attempt=%s", claimed.outbox_id, claimed.attempt, extra=_ids(claimed.outbox_id))
        else:
            statuses.append(None)
            _lease_lost(claimed, OutboxStatus.SENT)
    return statuses


# Parameter names differ from column names: an extra key named like a column would join the SET clause.
_MARK_SENT = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("outbox_id"), _outbox.c.lease_token == bindparam("token"),
           or_(*(_outbox.c.status == status for status in FINISHABLE)))  # no IN: it cannot run as executemany
    .values(status=OutboxStatus.SENT, sent_at=bindparam("at", type_=UTCDateTime()),
            last_smtp_reply=bindparam("reply"), lease_token="", lease_until=None)
)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed; summed over all parameter sets for an executemany (both our drivers do that)."""
    return int(result.rowcount)


def release(uow: UnitOfWork, claims: list[Claim], *, now: datetime) -> None:
    """Give back claimed messages that were not sent (stopping, or too little lease left), as if never claimed."""
    if not claims:
        return
    with uow:
        for claimed in claims:
            previous = claimed.attempt - 1
            uow.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == claimed.outbox_id, OutboxMessage.lease_token == claimed.lease_token,
                       OutboxMessage.status == OutboxStatus.SENDING)
                .values(status=OutboxStatus.RETRY if previous else OutboxStatus.PENDING, attempts=previous,
                        lease_token="", lease_until=None, next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
        uow.commit()


def expire_leases(uow: UnitOfWork, *, now: datetime) -> int:
    """`sending` rows whose lease ran out: the relay died mid-send, so the outcome is unknown → `uncertain`."""
    with uow:
        rows = list(uow.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until < now)
            .with_for_update(skip_locked=True)
        ))
        for outbox in rows:
            # The lease token stays: a late finish by a slow relay can still say "sent".
            outbox.status = OutboxStatus.UNCERTAIN
            outbox.last_smtp_reply = (
                f"the relay did not record the outcome of attempt {outbox.attempts} before its lease ran out at "
                f"{outbox.lease_until:%Y-%m-%d %H:%M:%S} UTC; the server may or may not have the message. "
                f"{operator_advice(outbox.id)}"
            )
            log.warning("outbox=%s uncertain: lease expired during attempt %s; not resent without an operator",
                        outbox.id, outbox.attempts, extra=_ids(outbox.id))
        uow.commit()
    return len(rows)


def _report_undelivered(session: Session, outbox: OutboxMessage, reason: str) -> None:
    """The follow-up for the KCC, in a savepoint: if it fails, the status is still recorded (and says so)."""
    try:
        with session.begin_nested():
            reply_outcome.undelivered(session, outbox, reason)
    except Exception as exc:  # the status must be recorded even when the follow-up cannot be
        log.error("outbox=%s %s, but registering the follow-up failed (%s); create a task for the KCC by hand",
                  outbox.id, outbox.status, describe_error(exc), extra=_ids(outbox.id))
        outbox.last_smtp_reply = f"{outbox.last_smtp_reply} [follow-up not registered: {describe_error(exc)}]"


def _lease_lost(claimed: Claim, status: str) -> None:
    log.warning(
        "outbox=%s attempt %s ended %s, but its lease was expired or taken over; the row was left as it is "
        "(see `kcc-mail outbox list`)", claimed.outbox_id, claimed.attempt, status, extra=_ids(claimed.outbox_id),
    )


def _ids(outbox_id: int) -> dict[str, object]:
    """The outbox id as a JSON key of the log line (see kcc.logs.CONTEXT_FIELDS)."""
    return {"outbox": outbox_id}


def _log_outcome(claimed: Claim, decision: Decision, delivery: Delivery) -> None:
    """Ids and reply codes only: a server's reply text can name the recipient."""
    if decision.status == OutboxStatus.SENT:
        log.warning("outbox=%s sent, but refused for some recipients (codes %s); task created",
                    claimed.outbox_id, delivery.codes, extra=_ids(claimed.outbox_id))
    elif decision.status == OutboxStatus.UNCERTAIN:
        log.warning("outbox=%s uncertain attempt=%s codes=%s: no answer after the whole message was sent; not "
                    "resent without an operator", claimed.outbox_id, claimed.attempt, delivery.codes,
                    extra=_ids(claimed.outbox_id))
    elif decision.status == OutboxStatus.RETRY:
        log.warning("outbox=%s temporarily refused attempt=%s codes=%s; next try at %s", claimed.outbox_id,
                    claimed.attempt, delivery.codes, f"{decision.next_attempt_at:%Y-%m-%d %H:%M:%S}",
                    extra=_ids(claimed.outbox_id))
    else:
        log.warning("outbox=%s failed attempt=%s codes=%s; task created for the KCC", claimed.outbox_id,
                    claimed.attempt, delivery.codes, extra=_ids(claimed.outbox_id))


# --- a bounce that came back --------------------------------------------------------------------------------

BOUNCEABLE = (OutboxStatus.SENDING, OutboxStatus.SENT, OutboxStatus.UNCERTAIN, OutboxStatus.RETRY,
              OutboxStatus.PENDING)


def mark_bounced(session: Session, outbox: OutboxMessage, bounce_mail_id: int, recipient: str) -> bool:
    """Inside the bounce's transaction: the reply did not arrive after all. False when it was settled already."""
    if outbox.status not in BOUNCEABLE:
        return False
    outbox.status = OutboxStatus.BOUNCED
    outbox.last_smtp_reply = f"bounce (mail {bounce_mail_id}) for {recipient}"[:2000]
    reply_outcome.undelivered(session, outbox, f"the receiving side bounced the reply (bounce mail {bounce_mail_id})")
    return True


# --- the operator's side ----------------------------------------------------------------------------------------


def list_messages(
    uow: UnitOfWork, *, status: str | None = None, limit: int | None = 500, offset: int = 0,
) -> Page[dict[str, Any]]:
    """The newest outbox rows (optionally of one status), a page of `limit` after skipping `offset`, oldest first."""
    if status is not None and status not in tuple(OutboxStatus):
        known = ", ".join(OutboxStatus)
        raise OutboxError(f"unknown outbox status {status!r}; choose one of {known} or all")
    conditions = [OutboxMessage.status == status] if status is not None else []
    with uow:
        query = select(OutboxMessage).where(*conditions).order_by(OutboxMessage.id.desc()).offset(offset).limit(limit)
        total = uow.session.scalar(select(func.count()).select_from(OutboxMessage).where(*conditions)) or 0
        rows = reversed(uow.session.scalars(query).all())
        return Page((outbox_json(row) for row in rows), total=total, offset=offset, limit=limit)


def resend(
    uow: UnitOfWork, outbox_id: int, who: str, *, now: datetime | None = None,
    deliver_for: timedelta = timedelta(hours=72),
) -> dict[str, Any]:
    """Queue an uncertain, failed or bounced reply again: the same stored bytes, so the same Message-ID.

    The deadline is extended to at least `deliver_for` from now, so the operator's resend gets its own retries.
    """
    now = now or utcnow()
    with uow:
        outbox = _locked(uow.session, outbox_id)
        if outbox.status not in RESENDABLE:
            still = " (the relay will still send it)" if outbox.status in (*DUE, OutboxStatus.SENDING) else ""
            raise OutboxError(
                f"outbox {outbox_id} is {outbox.status}; only an uncertain, failed or bounced reply can be resent"
                + still
            )
        previous = outbox.status
        outbox.status, outbox.lease_token, outbox.lease_until = OutboxStatus.PENDING, "", None
        outbox.next_attempt_at = now
        outbox.deliver_until = max(outbox.deliver_until, now + deliver_for)
        _audit(uow.session, who, "outbox.opnieuw_versturen", outbox, vorigeStatus=previous)
        uow.commit()
        return outbox_json(outbox)


def mark_sent(uow: UnitOfWork, outbox_id: int, who: str, *, now: datetime | None = None) -> dict[str, Any]:
    """An operator confirms an uncertain reply did arrive: `sent`, and the klantcontact succeeded.

    The moment recorded is the end of the last attempt's lease: the latest moment the server can have accepted it.
    """
    now = now or utcnow()
    with uow:
        outbox = _locked(uow.session, outbox_id)
        if outbox.status != OutboxStatus.UNCERTAIN:
            hint = "; use `kcc-mail outbox resend` to try a failed one again" if outbox.status == "failed" else ""
            raise OutboxError(
                f"outbox {outbox_id} is {outbox.status}; only an uncertain reply can be marked sent{hint}"
            )
        moment = min(outbox.lease_until or now, now)
        outbox.status, outbox.sent_at = OutboxStatus.SENT, moment
        outbox.last_smtp_reply = (
            f"marked sent by {who} at {now:%Y-%m-%d %H:%M:%S} UTC; before: {outbox.last_smtp_reply}"
        )
        outbox.lease_token, outbox.lease_until = "", None
        reply_outcome.delivered(uow.session, [(outbox.klantcontact_id, moment)])
        _audit(uow.session, who, "outbox.als_verzonden_gemarkeerd", outbox, vorigeStatus="uncertain")
        uow.commit()
        return outbox_json(outbox)


def _locked(session: Session, outbox_id: int) -> OutboxMessage:
    outbox = session.scalar(select(OutboxMessage).where(OutboxMessage.id == outbox_id).with_for_update())
    if outbox is None:
        raise OutboxNotFound(f"no outbox message with id {outbox_id}; `kcc-mail outbox list` shows them")
    return outbox


def _audit(session: Session, who: str, action: str, outbox: OutboxMessage, **details: object) -> None:
    audit.record(session, who, action, "outbox_message", outbox.id, messageId=outbox.message_id,
                 klantcontact=outbox.klantcontact_id, **details)


def outbox_json(outbox: OutboxMessage) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": outbox.id, "uuid": str(outbox.uuid), "klantcontactId": outbox.klantcontact_id,
        "messageId": outbox.message_id, "status": outbox.status, "attempts": outbox.attempts,
        "envelopeFrom": outbox.envelope_from, "envelopeTo": list(outbox.envelope_to),
        "nextAttemptAt": when(outbox.next_attempt_at), "deliverUntil": when(outbox.deliver_until),
        "leaseUntil": when(outbox.lease_until), "sentAt": when(outbox.sent_at), "forced": outbox.forced,
        "lastSmtpReply": outbox.last_smtp_reply, "createdAt": when(outbox.created_at),
    }
