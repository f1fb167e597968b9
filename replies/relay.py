"""The outbox relay: every reply is sent once, or is visibly uncertain — never lost, never silently sent twice.

The loop, with the database behind a port (`OutboxLedger`, kcc.usecases.outbox), each call one short transaction.
Sending happens between two of them, with no transaction open:

    claim   pending/retry rows that are due → `sending`, with a lease token, a lease deadline and attempts + 1
    send    through a Transport (SMTP or an .eml folder), outside any transaction
    finish  guarded by the lease token: `sent`, `retry`, `uncertain` or `failed` (replies.delivery's rules),
            on a thread of its own (replies.recorder) while the next message is sent

A relay that dies between send and finish leaves its rows `sending`; once their lease has run out they become
`uncertain` (the server may or may not have the message) and wait for an operator. Messages accepted by every
recipient are recorded in small groups (RelaySettings.finish_group), other outcomes one by one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from replies.delivery import DEFAULT_SETTINGS, Claim, RelaySettings, RelaySummary, fully_accepted
from replies.recorder import Recorder
from replies.smtp import LOST, Delivery
from replies.transport import Transport, TransportError
from store.engine import describe_error
from store.states import OutboxStatus
from store.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class OutboxLedger(Protocol):
    """The relay's transactions on the outbox; safe to call from the relay's thread and its recorder's."""

    def expire_leases(self, now: datetime) -> int:
        """`sending` rows whose lease ran out become `uncertain`; returns how many."""
        ...

    def claim(self, now: datetime) -> list[Claim]:
        """Take the next due messages for one lease (empty when none are due)."""
        ...

    def finish(self, claimed: Claim, delivery: Delivery, now: datetime) -> str | None:
        """Record one outcome under the claim's lease; the new status, or None when the lease was lost."""
        ...

    def finish_accepted(self, done: Sequence[tuple[Claim, Delivery]], now: datetime) -> list[str | None]:
        """Record messages every recipient accepted as `sent`, in one transaction."""
        ...

    def release(self, claims: list[Claim], now: datetime) -> None:
        """Give back claimed messages that were not sent, as if never claimed."""
        ...


class SentCopy(Protocol):
    """A copy of each sent reply somewhere colleagues see it (an IMAP Sent folder)."""

    def append(self, data: bytes, when: datetime, outbox_id: int) -> bool:
        """Store a copy; False (and a log line) when it could not be made. Never raises."""
        ...

    def close(self) -> None: ...


def relay_once(
    ledger: OutboxLedger, transport: Transport, *, settings: RelaySettings = DEFAULT_SETTINGS, clock: Clock = utcnow,
    sent_copy: SentCopy | None = None, stop: threading.Event | None = None,
) -> RelaySummary:
    """Expire dead leases, then send everything that is due, batch by batch over one transport session.

    Outcomes are recorded by a Recorder on a thread of its own while the next messages go out.
    """
    summary = RelaySummary(uncertain=ledger.expire_leases(clock()))
    recording = _Recording(ledger, summary, clock, sent_copy)
    opened = False
    try:
        while not _stopping(stop):
            batch = ledger.claim(clock())
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

    ledger: OutboxLedger
    summary: RelaySummary
    clock: Clock
    sent_copy: SentCopy | None
    recorder: Recorder = field(default_factory=Recorder)

    def accepted(self, group: list[tuple[Claim, Delivery]]) -> None:
        self.recorder.submit(lambda: self._accepted(group))

    def _accepted(self, group: list[tuple[Claim, Delivery]]) -> None:
        statuses = self.ledger.finish_accepted(group, self.clock())
        for (claimed, delivery), status in zip(group, statuses, strict=True):
            self.summary.count(status)
            if status == OutboxStatus.SENT and self.sent_copy is not None:
                self.sent_copy.append(claimed.data, delivery.accepted_at or self.clock(), claimed.outbox_id)

    def one(self, claimed: Claim, delivery: Delivery) -> None:
        self.recorder.submit(lambda: self.summary.count(self.ledger.finish(claimed, delivery, self.clock())))

    def release(self, claims: list[Claim]) -> None:
        self.recorder.submit(lambda: self.ledger.release(claims, self.clock()))

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
    stop: threading.Event, ledger: OutboxLedger, transport: Transport, *, interval: float,
    settings: RelaySettings = DEFAULT_SETTINGS, clock: Clock = utcnow, sent_copy: SentCopy | None = None,
) -> None:
    """Relay rounds every `interval` seconds until `stop` is set; a failing round is logged and tried again."""
    log.info("relay running: a round every %.1f s", interval)
    while not stop.is_set():
        try:
            summary = relay_once(ledger, transport, settings=settings, clock=clock, sent_copy=sent_copy, stop=stop)
            if summary.total:
                log.info("relay: %s", summary.line())
        except Exception as exc:  # the database may be away for a moment; the next round tries again
            log.error("relay round failed (%s); next round in %.1f s", describe_error(exc), interval)
            log.debug("relay round failure", exc_info=True)
        stop.wait(interval)
    if sent_copy is not None:
        sent_copy.close()
    log.info("relay stopped")


def _stopping(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()
