"""Outgoing mail waiting for, or done with, the SMTP relay."""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, Key, choice, created_column, id_column, uuid_column
from store.states import OutboxStatus
from store.types import SafeString, SafeText, UTCDateTime


class OutboxMessage(Base):
    """The exact bytes of a reply, stored with its klantcontact so the relay can send it once, later."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_due", "status", "next_attempt_at"),)

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), unique=True)
    message_id: Mapped[str] = mapped_column(SafeString(998), unique=True)
    blob_sha256: Mapped[str] = mapped_column(SafeString(64), ForeignKey("blob.sha256"))
    envelope_from: Mapped[str] = mapped_column(SafeString(320))
    envelope_to: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(choice("status", OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str] = mapped_column(SafeString(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime] = created_column()
    deliver_until: Mapped[datetime] = mapped_column(UTCDateTime())
    last_smtp_reply: Mapped[str] = mapped_column(SafeText, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = created_column()
