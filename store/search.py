"""Full-text search over stored mail: PostgreSQL's text search (Dutch stemming), SQLite's FTS5.

Both index the sender (name and address, the address also split at "@"), the subject and the plain text. The
index is kept by the database itself (an expression index on PostgreSQL, triggers on SQLite), so every way a
mail is written (intake, import, reprocess, a migration) is covered without a line of Python.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, literal_column, select, text
from sqlalchemy.engine import Dialect

from store.mail import InboundMail

PG_DOCUMENT = (
    "to_tsvector('dutch'::regconfig, coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' ' || "
    "replace(coalesce(from_address, ''), '@', ' ') || ' ' || coalesce(subject, '') || ' ' || "
    "left(coalesce(text_body, ''), 200000))"
)
"""The indexed document on PostgreSQL; a query must use this exact expression for the index to serve it."""
PG_INDEX = "ix_inbound_mail_zoek"
SQLITE_TABLE = "inbound_mail_zoek"
SEARCH_OBJECTS = (PG_INDEX, SQLITE_TABLE)
"""Database objects made by migration 0004 that the ORM metadata does not describe (see schema.include_object)."""

_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)
MAX_WORDS = 12


def words(query: str) -> list[str]:
    """The words of what someone typed, at most MAX_WORDS; quotes and operators are not syntax here."""
    return [word.strip(".-+") for word in _WORD.findall(query)][:MAX_WORDS]


def matches(dialect: Dialect, query: str) -> ColumnElement[bool] | None:
    """A condition on InboundMail that holds for mails matching every word of `query`; None when it has none."""
    found = [w for w in words(query) if w]
    if not found:
        return None
    if dialect.name == "postgresql":
        condition: Any = literal_column(PG_DOCUMENT).op("@@")(
            text("plainto_tsquery('dutch'::regconfig, :zoekterm)").bindparams(zoekterm=" ".join(found))
        )
        return condition  # type: ignore[no-any-return]
    fts = " ".join('"' + w.replace('"', '""') + '"*' for w in found)  # every word, as a prefix
    return InboundMail.id.in_(
        select(literal_column("rowid")).select_from(text(SQLITE_TABLE))
        .where(text(f"{SQLITE_TABLE} MATCH :zoekterm").bindparams(zoekterm=fts))
    )
