"""Reading the audit trail: who decided what about a mail, a task or a reply, and when.

The trail is append-only (store.audit); this is its one reader, for `kcc-mail audit` and the beheer page. An
event names its object by type and local id, so the history of one mail is one indexed lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select

from kcc.errors import Refused
from kcc.usecases.paging import Page
from store.audit import AuditEvent
from store.uow import UnitOfWork

__all__ = ["OBJECT_TYPES", "AuditFilter", "BadAuditFilter", "event_json", "list_events"]

OBJECT_TYPES = ("inbound_mail", "interne_taak", "outbox_message", "klantcontact")
"""The kinds of object events are written about (`--object TYPE:ID`)."""


class BadAuditFilter(Refused):
    """The filter asked for cannot match anything as written."""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events: all fields are optional and combine with AND."""

    object_type: str | None = None
    object_id: str | None = None
    who: str | None = None
    action: str | None = None
    """An exact action (`mail.geregistreerd`) or its family with a trailing dot (`mail.`)."""
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        if self.object_type is not None and self.object_type not in OBJECT_TYPES:
            raise BadAuditFilter(
                f"unknown object type {self.object_type!r}; choose one of {', '.join(OBJECT_TYPES)}"
            )
        if self.since and self.until and self.since > self.until:
            raise BadAuditFilter("--since is after --until, so no event can match; swap them")
        conditions: list[ColumnElement[bool]] = []
        if self.object_type is not None:
            conditions.append(AuditEvent.object_type == self.object_type)
        if self.object_id is not None:
            conditions.append(AuditEvent.object_id == self.object_id)
        if self.who is not None:
            conditions.append(func.lower(AuditEvent.who) == self.who.lower())
        if self.action is not None:
            if self.action.endswith("."):
                conditions.append(AuditEvent.action.startswith(self.action, autoescape=True))
            else:
                conditions.append(AuditEvent.action == self.action)
        if self.since is not None:
            conditions.append(AuditEvent.at >= self.since)
        if self.until is not None:
            conditions.append(AuditEvent.at < self.until)
        return conditions


def list_events(
    uow: UnitOfWork, where: AuditFilter = AuditFilter(), *, limit: int | None = 500, offset: int = 0
) -> Page[dict[str, Any]]:
    """The newest matching events (after skipping `offset` newer ones), returned oldest first to read as a story.

    Ordered by id, the order they were written in (the primary key, so no sort over the whole trail).
    """
    conditions = where.conditions()
    with uow:
        session = uow.session
        total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
        rows = session.scalars(
            select(AuditEvent).where(*conditions).order_by(AuditEvent.id.desc())
            .offset(offset).limit(limit)
        ).all()
        return Page((event_json(row) for row in reversed(rows)), total=total, offset=offset, limit=limit)


def event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id, "uuid": str(event.uuid), "at": event.at.isoformat(), "who": event.who,
        "action": event.action, "objectType": event.object_type, "objectId": event.object_id,
        "details": dict(event.details or {}),
    }
