"""What `kcc-mail status` needs that no other table holds: which service processes are alive right now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base
from store.types import SafeString, UTCDateTime


class ServiceHeartbeat(Base):
    """One row per running `kcc-mail run` (or `poll`/`relay` without --once), renewed every few seconds.

    A row with a recent beat is a live process; a row whose beat is old was left by a process that died, because a
    process that stops cleanly deletes its row. No row at all: never started, or stopped cleanly.
    """

    __tablename__ = "service_heartbeat"

    owner: Mapped[str] = mapped_column(SafeString(200), primary_key=True)  # host:pid:token, as in mailbox leases
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[str] = mapped_column(SafeString(50), default="")
    intake: Mapped[list[str]] = mapped_column(JSON, default=list)  # the mailboxes this process polls
    relay: Mapped[bool] = mapped_column(Boolean, default=False)
