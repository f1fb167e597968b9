"""The append-only record of who decided what, for the municipality's accountability."""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, event, insert
from sqlalchemy.orm import Mapped, Mapper, Session, mapped_column

from store.base import Base, created_column, id_column, uuid_column
from store.types import SafeString, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    at: Mapped[datetime] = created_column()
    who: Mapped[str] = mapped_column(SafeString(320))
    action: Mapped[str] = mapped_column(SafeString(50), index=True)
    object_type: Mapped[str] = mapped_column(SafeString(50))
    object_id: Mapped[str] = mapped_column(SafeString(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AuditIsAppendOnly(Exception):
    """An audit event was about to be changed or deleted."""


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_change(mapper: Mapper[AuditEvent], connection: object, target: AuditEvent) -> None:
    raise AuditIsAppendOnly(f"audit event {target.uuid} cannot be changed or deleted; add a new event instead")


_INSERT = insert(AuditEvent.__table__)  # type: ignore[arg-type]


def record(session: Session, who: str, action: str, object_type: str, object_id: object, **details: object) -> None:
    """Add one audit event to the caller's transaction: it is committed with the change it accounts for, or not.

    The one writer of the audit trail. A plain INSERT (no ORM object to track), as reprocessing may write many.
    """
    session.execute(_INSERT, {
        "uuid": uuid_module.uuid4(), "at": utcnow(), "who": who[:320], "action": action[:50],
        "object_type": object_type[:50], "object_id": str(object_id)[:64], "details": dict(details),
    })
