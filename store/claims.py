"""Who is working on a mail: a short claim, so a second employee sees "In behandeling bij Anna" and can take over."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, Key
from store.types import SafeString, UTCDateTime


class MailClaim(Base):
    """One row per mail someone has open; it lapses at `until` (a closed tab does not hold a mail for long)."""

    __tablename__ = "mail_claim"

    inbound_mail_id: Mapped[int] = mapped_column(
        Key, ForeignKey("inbound_mail.id", ondelete="CASCADE"), primary_key=True
    )
    medewerker: Mapped[str] = mapped_column(SafeString(320))
    naam: Mapped[str] = mapped_column(SafeString(200))
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
