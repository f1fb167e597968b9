"""The relay's rules, pure: what an SMTP server's answer means for a reply, and when to try again.

Decided here, where the issue was silent: a reply accepted for at least one recipient is `sent` (the refused
recipients are reported to the KCC, the klantcontact stays gelukt); no answer after the end of DATA is
`uncertain` (an operator decides; never resent by itself); temporary refusals are retried with exponential backoff
until the delivery deadline, then `failed`; a permanent refusal is `failed` at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from replies.smtp import Delivery
from store.states import OutboxStatus

DUE = (OutboxStatus.PENDING, OutboxStatus.RETRY)
"""Waiting for the relay."""
RESENDABLE = (OutboxStatus.UNCERTAIN, OutboxStatus.FAILED, OutboxStatus.BOUNCED)
"""What an operator may queue again."""
FINISHABLE = (OutboxStatus.SENDING, OutboxStatus.UNCERTAIN)
"""What a relay holding the lease may still record an outcome for (a late `sent` on an uncertain row)."""


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


DEFAULT_SETTINGS = RelaySettings()


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

    status: OutboxStatus
    reply: str
    next_attempt_at: datetime | None = None
    undelivered: str = ""


def decide(delivery: Delivery, claimed: Claim, *, now: datetime, settings: RelaySettings) -> Decision:
    """The rules: any recipient accepted → sent (the refused ones reported); else no answer after the end of DATA
    → uncertain (the server may have it: an operator decides); else temporary → retry until the deadline; else
    failed."""
    reply = delivery.summary()
    if not delivery.results:
        return Decision(OutboxStatus.FAILED, "no recipients", undelivered="the reply has no recipients")
    if delivery.accepted:
        refused = "; ".join(f"{r.recipient}: {r.answer()}" for r in delivery.refused)
        return Decision(OutboxStatus.SENT, reply, undelivered=refused)
    if delivery.having("unknown"):
        return Decision(OutboxStatus.UNCERTAIN, reply)
    if not delivery.having("temporary"):
        return Decision(OutboxStatus.FAILED, reply, undelivered=reply)
    if now >= claimed.deliver_until:
        deadline = f"{claimed.deliver_until:%Y-%m-%d %H:%M} UTC"
        return Decision(OutboxStatus.FAILED, reply, undelivered=(
            f"{reply} (still not accepted after {claimed.attempt} attempts when the delivery deadline {deadline} "
            "passed)"
        ))
    return Decision(OutboxStatus.RETRY, reply, min(now + backoff(claimed.attempt, settings), claimed.deliver_until))


def backoff(attempt: int, settings: RelaySettings) -> timedelta:
    """Base × 2^(attempt-1), capped, ±jitter so relays that failed together do not return together."""
    seconds = min(settings.backoff_base_seconds * 2 ** max(attempt - 1, 0), settings.backoff_cap_seconds)
    return timedelta(seconds=seconds * random.uniform(1 - settings.jitter, 1 + settings.jitter))


def fully_accepted(delivery: Delivery) -> bool:
    return bool(delivery.results) and not delivery.refused


def operator_advice(outbox_id: int) -> str:
    """What an operator does with an uncertain reply."""
    return (f"Check at the mail server or with the customer, then `kcc-mail outbox resend {outbox_id}` or "
            f"`kcc-mail outbox mark-sent {outbox_id}`")
