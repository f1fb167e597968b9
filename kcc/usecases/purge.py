"""Retention (AVG): delete stored mails that never became a klantcontact, once they are old enough.

A dismissed or quarantined mail is personal data with no record behind it, so it is kept only as long as the
municipality's retention period says. A registered mail goes with its whole dossier (kcc.usecases.retention),
which uses the helpers here. Blobs go only when nothing refers to them any more: the reference check covers
every table with a foreign key to `blob`, so a table added later is protected without changing this module.
A reply whose bounce is purged keeps the bounce's facts in its own row, and says the bounce mail is gone.

One purge is one transaction, with one audit event holding the counts and the ids: it happens entirely, with
its account, or not at all. A dry run does the same work and rolls it back, so its counts are exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Column, CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kcc.errors import Refused
from store import audit
from store.base import Base
from store.mail import Blob, InboundAttachment, InboundMail
from store.outbox import OutboxMessage
from store.states import MailState, OutboxStatus
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = [
    "PURGEABLE_STATES", "PurgeError", "PurgeResult", "batches", "blob_references", "delete_unreferenced", "purge",
]

PURGEABLE_STATES = (MailState.AFGEWEZEN, MailState.QUARANTAINE)
PURGE_ACTOR = "kcc-mail purge"
BATCH = 500
"""Ids per IN (...) list: well within every database's limit on bound parameters."""

T = TypeVar("T")


class PurgeError(Refused):
    """The purge cannot be done as asked; nothing was deleted."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one purge deleted (or, in a dry run, would delete)."""

    state: str
    older_than_days: int
    cutoff: datetime
    mails: int
    attachments: int
    blobs: int
    bytes: int
    dry_run: bool
    mail_ids: tuple[int, ...] = ()
    klantcontacten: int = 0

    def line(self) -> str:
        contacts = f"klantcontacten={self.klantcontacten} " if self.state == MailState.GEREGISTREERD else ""
        moment = "last contact" if contacts else "received"
        return (
            f"{contacts}mails={self.mails} attachments={self.attachments} blobs={self.blobs} bytes={self.bytes} "
            f"(state={self.state}, {moment} before {self.cutoff.isoformat(timespec='seconds')})"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "olderThanDays": self.older_than_days, "cutoff": self.cutoff.isoformat(),
            "mails": self.mails, "attachments": self.attachments, "blobs": self.blobs, "bytes": self.bytes,
            "dryRun": self.dry_run, "mailIds": list(self.mail_ids), "klantcontacten": self.klantcontacten,
        }


def blob_references() -> list[Column[Any]]:
    """Every column with a foreign key to blob.sha256 (inbound_mail, inbound_attachment, informatieobject,
    outbox_message, and whatever is added later)."""
    return sorted(
        (fk.parent for table in Base.metadata.tables.values() for fk in table.foreign_keys
         if fk.column.table.name == Blob.__tablename__),
        key=lambda column: (column.table.name, column.name),
    )


def purge(
    uow: UnitOfWork, *, state: str, older_than_days: int, who: str = PURGE_ACTOR, now: datetime | None = None,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete the mails in `state` received more than `older_than_days` ago that have no klantcontact."""
    if state not in PURGEABLE_STATES:
        raise PurgeError(
            f"purging {state!r} mails is refused: only {' and '.join(PURGEABLE_STATES)} mails never became a "
            "klantcontact; registered mails are kept as the klantcontact's record"
        )
    if older_than_days < 0:
        raise PurgeError(f"--older-than must be 0 days or more, not {older_than_days}")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    with uow:
        session = uow.session
        mails = session.execute(
            select(InboundMail.id, InboundMail.raw_sha256)
            .where(InboundMail.state == state, InboundMail.received_at < cutoff, InboundMail.klantcontact_id.is_(None))
            .order_by(InboundMail.id)
            .with_for_update()
        ).all()
        ids = [mail_id for mail_id, _ in mails]
        candidates = {sha for _, sha in mails}
        attachments = 0
        for batch in batches(ids):
            rows = session.execute(
                select(InboundAttachment.blob_sha256).where(InboundAttachment.inbound_mail_id.in_(batch))
            ).scalars().all()
            attachments += len(rows)
            candidates.update(rows)
        try:
            for batch in batches(ids):
                session.execute(delete(InboundAttachment).where(InboundAttachment.inbound_mail_id.in_(batch)))
                session.execute(delete(InboundMail).where(InboundMail.id.in_(batch)))
            blobs, size = delete_unreferenced(session, candidates)
            _forget_bounce_mails(session, ids, cutoff)
        except IntegrityError as exc:
            raise PurgeError(
                f"the database refused to delete these mails ({exc.orig}); another record still refers to them. "
                "Nothing was deleted"
            ) from exc
        result = PurgeResult(state, older_than_days, cutoff, len(ids), attachments, blobs, size, dry_run, tuple(ids))
        if dry_run:
            uow.rollback()
            return result
        audit.record(
            session, who, "mail.opgeschoond", "inbound_mail", f"purge:{state}",
            **{k: v for k, v in result.as_json().items() if k != "dryRun"},
        )
        uow.commit()
        return result


BOUNCE_NOTE = re.compile(r"^bounce \(mail (\d+)\)")


def _forget_bounce_mails(session: Session, purged: Sequence[int], cutoff: datetime) -> None:
    """A bounced reply names its bounce mail; once that mail is purged, it says so instead of pointing at nothing."""
    gone = set(purged)
    if not gone:
        return
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.last_smtp_reply)
        .where(OutboxMessage.status == OutboxStatus.BOUNCED, OutboxMessage.last_smtp_reply.startswith("bounce (mail "))
    ).all()
    for outbox_id, reply in rows:
        match = BOUNCE_NOTE.match(reply)
        if match and int(match.group(1)) in gone:
            note = f"bounce (mail {match.group(1)}, purged: received before {cutoff.date().isoformat()})"
            session.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                            .values(last_smtp_reply=(note + reply[match.end():])[:2000]))


def delete_unreferenced(session: Session, candidates: set[str]) -> tuple[int, int]:
    """Delete the candidate blobs nothing refers to any more; returns (count, bytes)."""
    referenced: set[str] = set()
    ordered = sorted(candidates)
    for column in blob_references():
        for batch in batches(ordered):
            referenced.update(session.execute(select(column).where(column.in_(batch)).distinct()).scalars())
    orphans = [sha for sha in ordered if sha not in referenced]
    count = size = 0
    for batch in batches(orphans):
        size += session.scalar(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.sha256.in_(batch))) or 0
        deleted = cast(CursorResult[Any], session.execute(delete(Blob).where(Blob.sha256.in_(batch))))
        count += deleted.rowcount or 0
    return count, int(size)


def batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), BATCH):
        yield items[start:start + BATCH]
