"""Stored mail: the content-addressed blobs, the review queue and quarantine, and each mailbox's progress."""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.base import Base, Key, choice, created_column, id_column, uuid_column
from store.states import DismissReason, MailState, QuarantineReason
from store.types import SafeString, SafeText, UTCDateTime


class Blob(Base):
    """Bytes stored once by their sha256, in the database so one transaction covers them and their rows."""

    __tablename__ = "blob"

    sha256: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_column()


class InboundMail(Base):
    """One received mail: the raw bytes by reference, what the parser made of it, and where review stands."""

    __tablename__ = "inbound_mail"
    __table_args__ = (
        UniqueConstraint("mailbox", "uidvalidity", "uid", name="mailbox_uid"),
        UniqueConstraint("mailbox", "raw_sha256", name="mailbox_sha256"),
        CheckConstraint("state <> 'quarantaine' OR reason IS NOT NULL", name="quarantaine_heeft_reden"),
        CheckConstraint(
            "(state = 'geregistreerd') = (klantcontact_id IS NOT NULL)", name="geregistreerd_heeft_klantcontact"
        ),
        CheckConstraint("state <> 'afgewezen' OR dismiss_reason IS NOT NULL", name="afgewezen_heeft_reden"),
        Index("ix_inbound_mail_state_received", "state", "received_at"),
        # the history beside a mail: the same sender (as typed in any case) and the replies to it
        Index("ix_inbound_mail_from_lower", text("lower(from_address)")),
        Index("ix_inbound_mail_in_reply_to", "in_reply_to"),
    )

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    mailbox: Mapped[str] = mapped_column(SafeString(100))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_key: Mapped[str] = mapped_column(SafeString(255), default="")
    raw_sha256: Mapped[str] = mapped_column(SafeString(64), ForeignKey("blob.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime] = created_column()
    # The LMTP envelope as the MTA gave it (None for mail fetched from a mailbox): who it was for and from where
    envelope_from: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    envelope_to: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    client_address: Mapped[str | None] = mapped_column(SafeText, nullable=True)

    message_id: Mapped[str] = mapped_column(SafeString(998), default="", index=True)
    message_id_synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    from_name: Mapped[str] = mapped_column(SafeText, default="")
    from_address: Mapped[str] = mapped_column(SafeText, default="")
    to_addresses: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc_addresses: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(SafeText, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    in_reply_to: Mapped[str] = mapped_column(SafeText, default="")
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    text_body: Mapped[str] = mapped_column(SafeText, default="")
    html_body: Mapped[str | None] = mapped_column(SafeText, nullable=True)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    classification: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    defects: Mapped[list[str]] = mapped_column(JSON, default=list)

    state: Mapped[str] = mapped_column(choice("state", MailState), default=MailState.TE_BEOORDELEN)
    reason: Mapped[str | None] = mapped_column(choice("reason", QuarantineReason), nullable=True)
    error: Mapped[str] = mapped_column(SafeText, default="")
    dismiss_reason: Mapped[str | None] = mapped_column(choice("dismiss_reason", DismissReason), nullable=True)
    reviewed_by_id: Mapped[int | None] = mapped_column(Key, ForeignKey("actor.id"), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    klantcontact_id: Mapped[int | None] = mapped_column(
        Key, ForeignKey("klantcontact.id"), nullable=True, unique=True
    )

    attachments: Mapped[list[InboundAttachment]] = relationship(
        back_populates="mail", order_by="InboundAttachment.position", cascade="all, delete-orphan"
    )


class InboundAttachment(Base):
    """An attachment the parser found; its bytes are a shared blob, so a bijlage later costs no copy."""

    __tablename__ = "inbound_attachment"
    __table_args__ = (UniqueConstraint("inbound_mail_id", "position"),)

    id: Mapped[int] = id_column()
    inbound_mail_id: Mapped[int] = mapped_column(Key, ForeignKey("inbound_mail.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    bestandsnaam: Mapped[str] = mapped_column(SafeString(255))
    formaat: Mapped[str] = mapped_column(SafeString(255))
    size: Mapped[int] = mapped_column(BigInteger)
    blob_sha256: Mapped[str] = mapped_column(SafeString(64), ForeignKey("blob.sha256"), index=True)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content_id: Mapped[str] = mapped_column(SafeText, default="")

    mail: Mapped[InboundMail] = relationship(back_populates="attachments")


class MailboxState(Base):
    """How far intake got in one mailbox, and who holds the lease to poll it."""

    __tablename__ = "mailbox_state"

    mailbox: Mapped[str] = mapped_column(SafeString(100), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    high_water_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str] = mapped_column(SafeString(200), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(SafeText, default="")


class ReconcileResult(Base):
    """The last reconciliation of one mailbox (`kcc-mail reconcile`): what it found, for `kcc-mail status`."""

    __tablename__ = "reconcile_result"

    mailbox: Mapped[str] = mapped_column(SafeString(100), primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lost: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[str] = mapped_column(SafeText, default="")
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ReconcileDigest(Base):
    """The sha256 of a server mail that reconciliation once had to fetch, so it is fetched only once per UID.

    A mail moved to the processed folder has a new UID there, so only its content can match it to a stored mail;
    without this, every reconciliation would download the whole processed folder again.
    """

    __tablename__ = "reconcile_digest"

    mailbox: Mapped[str] = mapped_column(SafeString(100), primary_key=True)
    folder: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sha256: Mapped[str] = mapped_column(SafeString(64))
