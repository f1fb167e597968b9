"""Plain values the database stores, with no SQLAlchemy: what a parse worker needs of `store`.

A parse worker imports the parser, the classifier and this; the tables and SQLAlchemy stay in the process that
writes (a worker's start is on the way of the first mails of a backlog).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def strip_nul(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates (from undecodable 8-bit headers); mail can carry both.

    Replace them visibly instead of failing the whole transaction.
    """
    return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value


def utcnow() -> datetime:
    return datetime.now(UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class NewBlob:
    """Bytes to store under their sha256 (a mail, an attachment)."""

    sha256: str
    data: bytes
