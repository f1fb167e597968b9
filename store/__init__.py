"""Persistence only: tables, engine and sessions, the unit of work, blobs and migrations."""

from store import audit, claims, export, klantinteracties, mail, monitoring, outbox
from store.base import Base, add_length_checks

add_length_checks(Base.metadata)

__all__ = ["Base", "audit", "claims", "export", "klantinteracties", "mail", "monitoring", "outbox"]
