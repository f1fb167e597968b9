"""The outbox relay: every reply is sent once, or is visibly uncertain — never lost, never silently sent twice.

Each use case is one short transaction. Sending happens between two of them, with no transaction open:

    claim   pending/retry rows that are due → `sending`, with a lease token, a lease deadline and attempts + 1
    send    through a Transport (SMTP or an .eml folder), outside any transaction
    finish  guarded by the lease token: `sent`, `retry` (with backoff, until deliver_until) or `failed`
            (on a thread of its own, replies.recorder, while the next message is sent)

A relay that dies between send and finish leaves its rows `sending`; once their lease has run out they become
`uncertain` (the server may or may not have the message) and wait for an operator: `resend` (the same bytes with the
same Message-ID) or `mark_sent`. On PostgreSQL, claims use FOR UPDATE SKIP LOCKED, so several relays share the work.
Follow-up that belongs to the application (the interne taak for the KCC) is injected as `on_undelivered`.

Rules where the issue was silent: a reply accepted for at least one recipient is `sent` (the refused recipients are
reported through `on_undelivered`, the klantcontact stays gelukt); messages accepted by every recipient are
recorded in small groups (RelaySettings.finish_group), other outcomes one by one; a late finish of a row that
already became `uncertain` is applied only when it says `sent` — anything else leaves the row to the operator.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from replies.recorder import Recorder
from replies.sentcopy import SentCopy
from replies.smtp import LOST, Delivery
from replies.transport import Transport, TransportError
from store.audit import AuditEvent
from store.klantinteracties import Klantcontact
from store.mail import Blob
from store.outbox import OUTBOX_STATUS, OutboxMessage
from store.types import UTCDateTime, utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Undelivered = Callable[[Session, OutboxMessage, str], None]
"""Called inside the finishing transaction when (part of) a reply did not arrive, with the reason to show a human."""

DUE = ("pending", "retry")
RESENDABLE = ("uncertain", "failed", "bounced")
FINISHABLE = ("sending", "uncertain")


class OutboxError(Exception):
    """An operator's request on the outbox cannot be carried out; nothing was changed."""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How the relay paces itself.

    `batch_size`/`batch_bytes`: at most this many messages, and this much message data, are claimed at once (one
    transaction), and sent over one connection.
    `finish_group`: messages accepted by every recipient are recorded `sent` up to this many in one transaction,
    and never later than `finish_within_seconds` after the first of them was accepted. One commit per message
    would make the database, not the mail server, set the pace (on PostgreSQL each commit waits for the disk). A
    relay killed in between leaves those few `uncertain`: visible, never lost, never resent by themselves. Set it
    to 1 to record every message on its own.
    """

    lease_seconds: float = 900.0
    batch_size: int = 50
    batch_bytes: int = 20 * 1024 * 1024
    finish_group: int = 50
    finish_within_seconds: float = 1.0
    backoff_base_seconds: float = 60.0
    backoff_cap_seconds: float = 3600.0
    jitter: float = 0.1


@dataclass(slots=True)
class RelaySummary:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    uncertain: int = 0

    def count(self, status: str | None) -> None:
        if status in ("sent", "retry", "failed", "uncertain"):
            setattr(self, status, getattr(self, status) + 1)

    @property
    def total(self) -> int:
        return self.sent + self.retry + self.failed + self.uncertain

    def line(self) -> str:
        return f"sent={self.sent} retry={self.retry} failed={self.failed} uncertain={self.uncertain}"


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed message: everything needed to send it and to finish it, read in the claiming transaction."""

    outbox_id: int
    klantcontact_id: int
    lease_token: str
    lease_until: datetime
    attempt: int
    deliver_until: datetime
    envelope_from: str
    envelope_to: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Decision:
    """What a delivery means for the row; `undelivered` is the reason to report, empty when all arrived."""

    status: str
    reply: str
    next_attempt_at: datetime | None = None
    undelivered: str = ""


# --- claim, decide, finish ------------------------------------------------------------------------------------

# The relay's hot path uses the tables directly: plain statements, no ORM objects to build and track.
_outbox = cast(Table, OutboxMessage.__table__)
_klantcontact = cast(Table, Klantcontact.__table__)
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
            .values(status="sending", lease_token=token, lease_until=lease_until, attempts=_outbox.c.attempts + 1)
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


def decide(delivery: Delivery, claimed: Claim, *, now: datetime, settings: RelaySettings) -> Decision:
    """The rules: any recipient accepted → sent (the refused ones reported); else no answer after the end of DATA
    → uncertain (the server may have it: an operator decides); else temporary → retry until the deadline; else
    failed."""
    reply = delivery.summary()
    if not delivery.results:
        return Decision("failed", "no recipients", undelivered="the reply has no recipients")
    if delivery.accepted:
        refused = "; ".join(f"{r.recipient}: {r.answer()}" for r in delivery.refused)
        return Decision("sent", reply, undelivered=refused)
    if delivery.having("unknown"):
        return Decision("uncertain", reply)
    if not delivery.having("temporary"):
        return Decision("failed", reply, undelivered=reply)
    if now >= claimed.deliver_until:
        deadline = f"{claimed.deliver_until:%Y-%m-%d %H:%M} UTC"
        return Decision("failed", reply, undelivered=(
            f"{reply} (still not accepted after {claimed.attempt} attempts when the delivery deadline {deadline} "
            "passed)"
        ))
    return Decision("retry", reply, min(now + backoff(claimed.attempt, settings), claimed.deliver_until))


def backoff(attempt: int, settings: RelaySettings) -> timedelta:
    """Base × 2^(attempt-1), capped, ±jitter so relays that failed together do not return together."""
    seconds = min(settings.backoff_base_seconds * 2 ** max(attempt - 1, 0), settings.backoff_cap_seconds)
    return timedelta(seconds=seconds * random.uniform(1 - settings.jitter, 1 + settings.jitter))


def finish(
    uow: UnitOfWork, claimed: Claim, delivery: Delivery, *, now: datetime, on_undelivered: Undelivered,
    settings: RelaySettings = RelaySettings(),
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
            outbox.status == "uncertain" and decision.status != "sent"
        ):
            _lease_lost(claimed, decision.status)
            return None
        outbox.status, outbox.last_smtp_reply = decision.status, decision.reply
        if decision.status == "uncertain":
            outbox.last_smtp_reply = f"{decision.reply}. {operator_advice(outbox.id)}"
        outbox.lease_token, outbox.lease_until = "", None
        if decision.next_attempt_at is not None:
            outbox.next_attempt_at = decision.next_attempt_at
        if decision.status == "sent":
            outbox.sent_at = accepted_at
            _contact_gelukt(session, claimed.klantcontact_id, accepted_at)
        session.flush()
        if decision.undelivered:
            _report(session, outbox, decision.undelivered, on_undelivered)
        uow.commit()
    _log_outcome(claimed, decision, delivery)
    return decision.status


def fully_accepted(delivery: Delivery) -> bool:
    return bool(delivery.results) and not delivery.refused


def finish_accepted(
    uow: UnitOfWork, done: Sequence[tuple[Claim, Delivery]], *, now: datetime
) -> list[str | None]:
    """Record messages every recipient accepted as `sent`, several in one transaction (a group commit).

    The common case, so it is one prepared statement run for all rows at once; each row must still carry the
    lease token of its claim. Returns per message "sent", or None where the lease was no longer ours.
    """
    if not done:
        return []
    rows = [
        {"outbox_id": claimed.outbox_id, "token": claimed.lease_token, "at": delivery.accepted_at or now,
         "reply": delivery.summary(), "contact": claimed.klantcontact_id}
        for claimed, delivery in done
    ]
    with uow:
        session = uow.session
        if _rowcount(session.execute(_MARK_SENT, rows)) == len(rows):
            session.execute(_CONTACT_GELUKT, rows)
            ours = {row["outbox_id"] for row in rows}
        else:  # some lease was lost meanwhile (rare): find out which, one row at a time
            uow.rollback()
            ours = set()
            for row in rows:
                if _rowcount(session.execute(_MARK_SENT, row)) == 1:
                    session.execute(_CONTACT_GELUKT, row)
                    ours.add(row["outbox_id"])
        uow.commit()
    statuses: list[str | None] = []
    for claimed, _ in done:
        if claimed.outbox_id in ours:
            statuses.append("sent")
            log.info("outbox=%s sent attempt=%s", claimed.outbox_id, claimed.attempt, extra=_ids(claimed.outbox_id))
        else:
            statuses.append(None)
            _lease_lost(claimed, "sent")
    return statuses


# Parameter names differ from column names: an extra key named like a column would join the SET clause.
_MARK_SENT = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("outbox_id"), _outbox.c.lease_token == bindparam("token"),
           or_(*(_outbox.c.status == status for status in FINISHABLE)))  # no IN: it cannot run as executemany
    .values(status="sent", sent_at=bindparam("at", type_=UTCDateTime()), last_smtp_reply=bindparam("reply"),
            lease_token="", lease_until=None)
)
_CONTACT_GELUKT = (
    update(_klantcontact).where(_klantcontact.c.id == bindparam("contact"))
    .values(indicatie_contact_gelukt=True, plaatsgevonden_op=bindparam("at", type_=UTCDateTime()))
)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed; summed over all parameter sets for an executemany (both our drivers do that)."""
    return int(result.rowcount)


def _contact_gelukt(session: Session, klantcontact_id: int, accepted_at: datetime) -> None:
    """The reply arrived: the outgoing klantcontact took place at the moment the server accepted it."""
    session.execute(_CONTACT_GELUKT, {"contact": klantcontact_id, "at": accepted_at})


def _report(session: Session, outbox: OutboxMessage, reason: str, on_undelivered: Undelivered) -> None:
    """Hand the undelivered reply to the application; if that fails, the status is still recorded (and says so)."""
    try:
        with session.begin_nested():
            on_undelivered(session, outbox, reason)
    except Exception as exc:  # the status must be recorded even when the follow-up cannot be
        log.error("outbox=%s %s, but registering the follow-up failed (%s); create a task for the KCC by hand",
                  outbox.id, outbox.status, _safe(exc), extra=_ids(outbox.id))
        outbox.last_smtp_reply = f"{outbox.last_smtp_reply} [follow-up not registered: {_safe(exc)}]"


def operator_advice(outbox_id: int) -> str:
    """What an operator does with an uncertain reply."""
    return (f"Check at the mail server or with the customer, then `kcc-mail outbox resend {outbox_id}` or "
            f"`kcc-mail outbox mark-sent {outbox_id}`")


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
    if decision.status == "sent":
        log.warning("outbox=%s sent, but refused for some recipients (codes %s); task created",
                    claimed.outbox_id, delivery.codes, extra=_ids(claimed.outbox_id))
    elif decision.status == "uncertain":
        log.warning("outbox=%s uncertain attempt=%s codes=%s: no answer after the whole message was sent; not "
                    "resent without an operator", claimed.outbox_id, claimed.attempt, delivery.codes,
                    extra=_ids(claimed.outbox_id))
    elif decision.status == "retry":
        log.warning("outbox=%s temporarily refused attempt=%s codes=%s; next try at %s", claimed.outbox_id,
                    claimed.attempt, delivery.codes, f"{decision.next_attempt_at:%Y-%m-%d %H:%M:%S}",
                    extra=_ids(claimed.outbox_id))
    else:
        log.warning("outbox=%s failed attempt=%s codes=%s; task created for the KCC", claimed.outbox_id,
                    claimed.attempt, delivery.codes, extra=_ids(claimed.outbox_id))


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
                       OutboxMessage.status == "sending")
                .values(status="retry" if previous else "pending", attempts=previous, lease_token="",
                        lease_until=None, next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
        uow.commit()


def expire_leases(uow: UnitOfWork, *, now: datetime) -> int:
    """`sending` rows whose lease ran out: the relay died mid-send, so the outcome is unknown → `uncertain`."""
    with uow:
        rows = list(uow.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == "sending", OutboxMessage.lease_until < now)
            .with_for_update(skip_locked=True)
        ))
        for outbox in rows:
            outbox.status = "uncertain"  # the lease token stays: a late finish by a slow relay can still say "sent"
            outbox.last_smtp_reply = (
                f"the relay did not record the outcome of attempt {outbox.attempts} before its lease ran out at "
                f"{outbox.lease_until:%Y-%m-%d %H:%M:%S} UTC; the server may or may not have the message. "
                f"{operator_advice(outbox.id)}"
            )
            log.warning("outbox=%s uncertain: lease expired during attempt %s; not resent without an operator",
                        outbox.id, outbox.attempts, extra=_ids(outbox.id))
        uow.commit()
    return len(rows)


# --- the loop ----------------------------------------------------------------------------------------------------


def relay_once(
    uow: UnitOfWork, transport: Transport, *, on_undelivered: Undelivered,
    settings: RelaySettings = RelaySettings(), clock: Clock = utcnow, sent_copy: SentCopy | None = None,
    stop: threading.Event | None = None,
) -> RelaySummary:
    """Expire dead leases, then send everything that is due, batch by batch over one transport session.

    Outcomes are recorded by a Recorder on a unit of work of its own while the next messages go out.
    """
    summary = RelaySummary(uncertain=expire_leases(uow, now=clock()))
    recording = _Recording(uow.another(), summary, on_undelivered, settings, clock, sent_copy)
    opened = False
    try:
        while not _stopping(stop):
            batch = claim(uow, now=clock(), lease_seconds=settings.lease_seconds, limit=settings.batch_size,
                          max_bytes=settings.batch_bytes)
            if not batch:
                break
            if not opened:
                try:
                    transport.open()
                    opened = True
                except TransportError as exc:
                    log.warning("relay: %s; %d message(s) will be retried", exc, len(batch))
                    for claimed in batch:
                        recording.one(claimed, Delivery.same_for_all(claimed.envelope_to, LOST, f"not sent: {exc}"))
                    break
            if not _send_batch(transport, batch, recording, settings, clock, stop):
                break
    finally:
        try:
            recording.close()
        finally:
            if opened:
                transport.close()
    recording.raise_error()
    return summary


@dataclass
class _Recording:
    """What the relay hands its Recorder: accepted messages in groups, other outcomes one by one, releases."""

    uow: UnitOfWork
    summary: RelaySummary
    on_undelivered: Undelivered
    settings: RelaySettings
    clock: Clock
    sent_copy: SentCopy | None
    recorder: Recorder = field(default_factory=Recorder)

    def accepted(self, group: list[tuple[Claim, Delivery]]) -> None:
        self.recorder.submit(lambda: self._accepted(group))

    def _accepted(self, group: list[tuple[Claim, Delivery]]) -> None:
        for (claimed, delivery), status in zip(group, finish_accepted(self.uow, group, now=self.clock()), strict=True):
            self.summary.count(status)
            if status == "sent" and self.sent_copy is not None:
                self.sent_copy.append(claimed.data, delivery.accepted_at or self.clock(), claimed.outbox_id)

    def one(self, claimed: Claim, delivery: Delivery) -> None:
        self.recorder.submit(lambda: self.summary.count(finish(
            self.uow, claimed, delivery, now=self.clock(), on_undelivered=self.on_undelivered,
            settings=self.settings,
        )))

    def release(self, claims: list[Claim]) -> None:
        self.recorder.submit(lambda: release(self.uow, claims, now=self.clock()))

    def close(self) -> None:
        self.recorder.close()

    def raise_error(self) -> None:
        self.recorder.raise_error()


def _send_batch(
    transport: Transport, batch: list[Claim], recording: _Recording, settings: RelaySettings, clock: Clock,
    stop: threading.Event | None,
) -> bool:
    """Send each claimed message and hand its outcome to the recorder; False when the rest had to be given back.

    Messages that every recipient accepted are recorded together (see RelaySettings.finish_group); any other
    outcome is recorded on its own, after the accepted ones before it.
    """
    margin = timedelta(seconds=settings.lease_seconds / 2)
    group: list[tuple[Claim, Delivery]] = []
    group_started = 0.0

    def record_group() -> None:
        nonlocal group
        if group:
            recording.accepted(group)
            group = []

    for position, claimed in enumerate(batch):
        if _stopping(stop) or (position and clock() > claimed.lease_until - margin):
            record_group()
            recording.release(batch[position:])
            return False
        delivery = transport.send(claimed.envelope_from, claimed.envelope_to, claimed.data)
        if fully_accepted(delivery):
            if not group:
                group_started = time.monotonic()
            group.append((claimed, delivery))
            if len(group) >= settings.finish_group or (
                time.monotonic() - group_started >= settings.finish_within_seconds
            ):
                record_group()
            continue
        record_group()
        recording.one(claimed, delivery)
    record_group()
    return True


def run_forever(
    stop: threading.Event, uow: UnitOfWork, transport: Transport, *, interval: float, on_undelivered: Undelivered,
    settings: RelaySettings = RelaySettings(), clock: Clock = utcnow, sent_copy: SentCopy | None = None,
) -> None:
    """Relay rounds every `interval` seconds until `stop` is set; a failing round is logged and tried again."""
    log.info("relay running: a round every %.1f s", interval)
    while not stop.is_set():
        try:
            summary = relay_once(uow, transport, on_undelivered=on_undelivered, settings=settings, clock=clock,
                                 sent_copy=sent_copy, stop=stop)
            if summary.total:
                log.info("relay: %s", summary.line())
        except Exception as exc:  # the database may be away for a moment; the next round tries again
            log.error("relay round failed (%s); next round in %.1f s", _safe(exc), interval)
            log.debug("relay round failure", exc_info=True)
        stop.wait(interval)
    if sent_copy is not None:
        sent_copy.close()
    log.info("relay stopped")


def _stopping(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _safe(exc: BaseException) -> str:
    """An error for the log without SQL parameters, which may hold addresses or mail text."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return f"{type(exc).__name__}: {type(orig).__name__ if orig is not None else 'database error'}"
    return f"{type(exc).__name__}: {exc}"


# --- the operator's side ------------------------------------------------------------------------------------------


def list_messages(uow: UnitOfWork, *, status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """The newest `limit` outbox rows (optionally of one status), shown oldest first."""
    if status is not None and status not in OUTBOX_STATUS:
        raise OutboxError(f"unknown outbox status {status!r}; choose one of {', '.join(OUTBOX_STATUS)} or all")
    with uow:
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
        if status is not None:
            query = query.where(OutboxMessage.status == status)
        return [outbox_json(row) for row in reversed(uow.session.scalars(query).all())]


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
            raise OutboxError(
                f"outbox {outbox_id} is {outbox.status}; only an uncertain, failed or bounced reply can be resent"
                + (" (the relay will still send it)" if outbox.status in (*DUE, "sending") else "")
            )
        previous = outbox.status
        outbox.status, outbox.lease_token, outbox.lease_until = "pending", "", None
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
        if outbox.status != "uncertain":
            raise OutboxError(
                f"outbox {outbox_id} is {outbox.status}; only an uncertain reply can be marked sent"
                + ("; use `kcc-mail outbox resend` to try a failed one again" if outbox.status == "failed" else "")
            )
        moment = min(outbox.lease_until or now, now)
        outbox.status, outbox.sent_at = "sent", moment
        outbox.last_smtp_reply = (
            f"marked sent by {who} at {now:%Y-%m-%d %H:%M:%S} UTC; before: {outbox.last_smtp_reply}"
        )
        outbox.lease_token, outbox.lease_until = "", None
        _contact_gelukt(uow.session, outbox.klantcontact_id, moment)
        _audit(uow.session, who, "outbox.als_verzonden_gemarkeerd", outbox, vorigeStatus="uncertain")
        uow.commit()
        return outbox_json(outbox)


def _locked(session: Session, outbox_id: int) -> OutboxMessage:
    outbox = session.scalar(select(OutboxMessage).where(OutboxMessage.id == outbox_id).with_for_update())
    if outbox is None:
        raise OutboxError(f"no outbox message with id {outbox_id}; `kcc-mail outbox list` shows them")
    return outbox


def _audit(session: Session, who: str, action: str, outbox: OutboxMessage, **details: object) -> None:
    session.add(AuditEvent(
        who=who[:320], action=action, object_type="outbox_message", object_id=str(outbox.id),
        details={"messageId": outbox.message_id, "klantcontact": outbox.klantcontact_id, **details},
    ))


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
