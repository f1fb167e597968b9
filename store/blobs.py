"""Content-addressed bytes: the same attachment or mail is stored once, whoever refers to it."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.mail import Blob


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(session: Session, data: bytes, digest: str | None = None) -> str:
    """Store `data` unless a blob with its sha256 exists; safe when two processes store the same bytes at once."""
    digest = digest or sha256_hex(data)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Blob).values(sha256=digest, size=len(data), data=data).on_conflict_do_nothing()
    session.execute(statement)
    return digest


def get_blob(session: Session, digest: str) -> bytes:
    data = session.execute(select(Blob.data).where(Blob.sha256 == digest)).scalar_one_or_none()
    if data is None:
        raise LookupError(f"blob {digest} is missing from the database; restore it from a backup")
    return data
