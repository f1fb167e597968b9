"""Retention (AVG): delete stored mails that never became a klantcontact, once they are old enough.

A dismissed or quarantined mail is personal data with no record behind it, so it is kept only as long as the
municipality's retention period says. A registered mail is never purged: its klantcontact is the record and
its bijlagen keep the blobs. Blobs go only when nothing refers to them any more: the reference check covers
every table with a foreign key to `blob`, so a table added later is protected without changing this module.

One purge is one transaction, with one audit event holding the counts and the ids: it happens entirely, with
its account, or not at all. A dry run does the same work and rolls it back, so its counts are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Column, CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kcc.errors import Refused
from store import audit
from store.base import Base
from store.mail import Blob, InboundAttachment, InboundMail
from store.states import MailState
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = ["PURGEABLE_STATES", "PurgeError", "PurgeResult", "blob_references", "purge"]

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

    def line(self) -> str:
        return (
            f"mails={self.mails} attachments={self.attachments} blobs={self.blobs} bytes={self.bytes} "
            f"(state={self.state}, received before {self.cutoff.isoformat(timespec='seconds')})"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "olderThanDays": self.older_than_days, "cutoff": self.cutoff.isoformat(),
            "mails": self.mails, "attachments": self.attachments, "blobs": self.blobs, "bytes": self.bytes,
            "dryRun": self.dry_run, "mailIds": list(self.mail_ids),
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
        for batch in _batches(ids):
            rows = session.execute(
                select(InboundAttachment.blob_sha256).where(InboundAttachment.inbound_mail_id.in_(batch))
            ).scalars().all()
            attachments += len(rows)
            candidates.update(rows)
        try:
            for batch in _batches(ids):
                session.execute(delete(InboundAttachment).where(InboundAttachment.inbound_mail_id.in_(batch)))
                session.execute(delete(InboundMail).where(InboundMail.id.in_(batch)))
            blobs, size = _delete_unreferenced(session, candidates)
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


def _delete_unreferenced(session: Session, candidates: set[str]) -> tuple[int, int]:
    """Delete the candidate blobs nothing refers to any more; returns (count, bytes)."""
    referenced: set[str] = set()
    ordered = sorted(candidates)
    for column in blob_references():
        for batch in _batches(ordered):
            referenced.update(session.execute(select(column).where(column.in_(batch)).distinct()).scalars())
    orphans = [sha for sha in ordered if sha not in referenced]
    count = size = 0
    for batch in _batches(orphans):
        size += session.scalar(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.sha256.in_(batch))) or 0
        deleted = cast(CursorResult[Any], session.execute(delete(Blob).where(Blob.sha256.in_(batch))))
        count += deleted.rowcount or 0
    return count, int(size)


def _batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), BATCH):
        yield items[start:start + BATCH]
