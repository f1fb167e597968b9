"""Content-addressed bytes: the same attachment or mail is stored once, whoever refers to it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.mail import Blob
from store.types import utcnow
from store.upsert import insert_if_absent
from store.values import sha256_hex as sha256_hex


def put_blob(session: Session, data: bytes, digest: str | None = None) -> str:
    """Store `data` unless a blob with its sha256 exists; safe when two processes store the same bytes at once."""
    digest = digest or sha256_hex(data)
    insert_if_absent(session, Blob, {"sha256": digest, "size": len(data), "data": data, "created_at": utcnow()})
    return digest


def get_blob(session: Session, digest: str) -> bytes:
    data = session.execute(select(Blob.data).where(Blob.sha256 == digest)).scalar_one_or_none()
    if data is None:
        raise LookupError(f"blob {digest} is missing from the database; restore it from a backup")
    return data


def read_blob_slice(session: Session, digest: str, offset: int, length: int) -> bytes:
    """`length` bytes of a blob from `offset` (0-based), read in the database: a large document is sent part by
    part without its whole bytes in this process (SUBSTR counts bytes on a BLOB and a bytea, from 1)."""
    data = session.execute(
        select(func.substr(Blob.data, offset + 1, length)).where(Blob.sha256 == digest)).scalar_one_or_none()
    if data is None:
        raise LookupError(f"blob {digest} is missing from the database; restore it from a backup")
    return bytes(data)
