"""The export to the registers: durable jobs written with each decision, and the local → remote map.

A job names a klantcontact whose records changed; the exporter brings the register up to that klantcontact's state,
so several jobs of one klantcontact are settled by one pass. The map is keyed by the local record's uuid (never
reused, unlike an id), so it stays right after retention deleted a dossier and ids came round again.
"""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, Uuid, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from store.base import Base, Key, choice, created_column, id_column
from store.states import ExportStatus
from store.types import SafeString, SafeText, UTCDateTime, utcnow
from store.upsert import dialect_insert


class ExportJob(Base):
    """One decision's changes to a klantcontact, to be sent to the registers exactly once."""

    __tablename__ = "export_job"
    __table_args__ = (Index("ix_export_job_due", "status", "next_attempt_at"),)

    id: Mapped[int] = id_column()
    klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    reden: Mapped[str] = mapped_column(SafeString(50))
    status: Mapped[str] = mapped_column(choice("status", ExportStatus), default=ExportStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str] = mapped_column(SafeString(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime] = created_column()
    last_error: Mapped[str] = mapped_column(SafeText, default="")
    created_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ExportedRecord(Base):
    """Where a local record lives in a register: its remote uuid and url, and a digest of what was sent last."""

    __tablename__ = "exported_record"

    local_uuid: Mapped[uuid_module.UUID] = mapped_column(Uuid(), primary_key=True)
    soort: Mapped[str] = mapped_column(SafeString(50))
    remote_uuid: Mapped[str] = mapped_column(SafeString(64))
    remote_url: Mapped[str] = mapped_column(SafeString(1000))
    body_sha256: Mapped[str] = mapped_column(SafeString(64), default="")
    exported_at: Mapped[datetime] = created_column()


_INSERT = insert(ExportJob.__table__)  # type: ignore[arg-type]

UNFINISHED = (ExportStatus.PENDING, ExportStatus.RETRY, ExportStatus.SENDING, ExportStatus.FAILED)
"""A job in one of these states has not reached the register yet: its dossier is kept (kcc.usecases.retention)."""


def enqueue(session: Session, klantcontact_ids: list[int] | int, reden: str) -> None:
    """Add export jobs to the caller's transaction: they are committed with the decision that made them, or not.

    The one writer of export jobs; a plain INSERT, as the relay's group commit adds one per delivered reply.
    """
    ids = [klantcontact_ids] if isinstance(klantcontact_ids, int) else klantcontact_ids
    if not ids:
        return
    now = utcnow()
    session.execute(_INSERT, [
        {"klantcontact_id": k, "reden": reden[:50], "status": ExportStatus.PENDING, "attempts": 0,
         "lease_token": "", "next_attempt_at": now, "last_error": "", "created_at": now}
        for k in ids
    ])


def remember_remote(session: Session, rows: list[dict[str, object]]) -> None:
    """Write where local records went (keys: local_uuid, soort, remote_uuid, remote_url, body_sha256), in one
    statement that inserts or updates: two exporters recording the same shared record (an actor) at once both
    succeed, the later one's values kept."""
    if not rows:
        return
    statement = dialect_insert(session, ExportedRecord)
    now = utcnow()
    upsert = statement.on_conflict_do_update(
        index_elements=["local_uuid"],
        set_={name: statement.excluded[name]
              for name in ("soort", "remote_uuid", "remote_url", "body_sha256", "exported_at")},
    )
    session.execute(upsert, [{**row, "exported_at": now} for row in rows])
