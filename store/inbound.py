"""Writing one received mail: its blobs, its InboundMail row and its attachment rows, all or nothing.

Intake runs this once per mail, so its cost per mail is the intake speed. On PostgreSQL the whole mail is one
statement (data-modifying CTEs) that is its own transaction: one round trip instead of one per row plus BEGIN and
COMMIT, and a statement of one shape that is compiled and prepared once. SQLite runs in-process, where round trips
cost nothing, so it takes plain INSERTs in the caller's transaction; so does a large mail on PostgreSQL, whose
bytes in one statement's arrays would be held three times over. With group commit (`in_group=True`) several
mails share the caller's transaction on both databases, so their commit (a WAL flush) is paid once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Integer, Select, Table, and_, bindparam, exists, func, insert, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql import column, literal_column
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import CTE, TableValuedAlias

from store.mail import Blob, InboundAttachment, InboundMail
from store.types import BinaryArray, utcnow
from store.upsert import insert_ignoring_duplicates
from store.values import NewBlob as NewBlob

BLOB = cast(Table, Blob.__table__)
MAIL = cast(Table, InboundMail.__table__)
ATTACHMENT = cast(Table, InboundAttachment.__table__)
BLOB_COLUMNS = ("sha256", "size", "data", "created_at")
SQLITE_IN_PLACE_MIN_BYTES = 1024 * 1024
"""From this size a blob is written into its row in place on SQLite (see _insert_sqlite_blob_in_place)."""
SQLITE_WRITE_CHUNK_BYTES = 1024 * 1024
ROWID: ColumnClause[int] = literal_column("rowid", Integer)
ONE_STATEMENT_MAX_BYTES = 8 * 1024 * 1024
"""Up to this many bytes of blobs a mail is one statement on PostgreSQL. A larger mail is sent as plain INSERTs,
one blob each: its bytes in arrays would be copied twice more (psycopg's array, then libpq's buffer, which grows
by doubling), three to five times the mail in memory at once."""
ATTACHMENT_COLUMNS = ("position", "bestandsnaam", "formaat", "size", "blob_sha256", "inline", "content_id")


def insert_inbound_mail(
    session: Session, blobs: Sequence[NewBlob], mail: dict[str, Any], attachments: Sequence[dict[str, Any]],
    *, in_group: bool = False,
) -> int | None:
    """Insert the blobs (unless present), the mail and its attachments; the new mail's id, or None.

    None means the unique keys (mailbox, uidvalidity, uid) or (mailbox, sha256) already hold this mail, also when
    another process stored it a moment ago; then nothing is written. `attachments` rows lack only the mail's id.
    On PostgreSQL the statement commits by itself; on SQLite, and for a mail over ONE_STATEMENT_MAX_BYTES on
    PostgreSQL, the caller commits (and rolls back on None). `in_group`: one of several mails in the caller's
    transaction, which commits them all (both databases); for plain INSERTs a savepoint then takes back the blobs
    of a mail that turned out to be stored already.
    """
    blob_rows = _blob_rows(blobs)
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql and sum(row["size"] for row in blob_rows) <= ONE_STATEMENT_MAX_BYTES:
        parameters = {f"mail_{name}": value for name, value in mail.items()}
        parameters |= {f"blob_{name}": [row[name] for row in blob_rows] for name in BLOB_COLUMNS}
        parameters |= {f"bijlage_{name}": [row[name] for row in attachments] for name in ATTACHMENT_COLUMNS}
        options = {} if in_group else {"isolation_level": "AUTOCOMMIT"}
        connection = session.connection(execution_options=options)
        return connection.execute(_postgresql_statement(tuple(mail)), parameters).scalar_one_or_none()
    if not in_group:
        return _insert_rows(session, blob_rows, mail, attachments, one_blob_a_statement=postgresql)
    savepoint = session.begin_nested()
    mail_id = _insert_rows(session, blob_rows, mail, attachments, one_blob_a_statement=postgresql)
    if mail_id is None:
        savepoint.rollback()
    else:
        savepoint.commit()
    return mail_id


@dataclass(frozen=True, slots=True)
class NewMail:
    """One mail of a group: its blobs, its inbound_mail values, and its attachment rows (without the mail's id)."""

    blobs: Sequence[NewBlob]
    values: dict[str, Any]
    attachments: Sequence[dict[str, Any]]


def insert_inbound_group(session: Session, mailbox: str, mails: Sequence[NewMail]) -> list[int | None]:
    """Insert a group of mails of one mailbox in the caller's transaction, a statement per table, not per mail.

    Per mail the new id, or None when the mailbox holds it already (or an earlier mail of the group is the same
    mail). Those are found first with one query; the rest are plain INSERTs, so a mail another process stores at
    this very moment makes the whole statement fail, and the caller rolls back and stores the group one by one
    (`insert_inbound_mail`, which settles such a race per mail). The caller commits.
    """
    new = _not_yet_stored(session, mailbox, mails)
    if not new:
        return [None] * len(mails)
    _insert_blob_rows(session, _blob_rows([blob for mail in new for blob in mail.blobs]), one_blob_a_statement=False)
    # Rows come back in no promised order; the sha256 tells them apart (unique among `new`).
    inserted = session.execute(insert(MAIL).returning(MAIL.c.raw_sha256, MAIL.c.id), [mail.values for mail in new])
    by_digest: dict[str, int] = {digest: mail_id for digest, mail_id in inserted}
    ids = {id(mail): by_digest[mail.values["raw_sha256"]] for mail in new}
    attachment_rows = [
        {"inbound_mail_id": ids[id(mail)], **row} for mail in new for row in mail.attachments
    ]
    if attachment_rows:
        session.execute(insert(ATTACHMENT), attachment_rows)
    return [ids.get(id(mail)) for mail in mails]


def _not_yet_stored(session: Session, mailbox: str, mails: Sequence[NewMail]) -> list[NewMail]:
    """The mails of the group that neither the mailbox nor an earlier mail of the group holds (by sha256 or UID)."""
    digests = {mail.values["raw_sha256"] for mail in mails}
    uids = {(mail.values["uidvalidity"], mail.values["uid"]) for mail in mails if mail.values["uid"] is not None}
    known = or_(MAIL.c.raw_sha256.in_(digests), *(
        and_(MAIL.c.uidvalidity == uidvalidity, MAIL.c.uid.in_(sorted(uid for v, uid in uids if v == uidvalidity)))
        for uidvalidity in {v for v, _ in uids}
    ))
    seen_digests: set[str] = set()
    seen_uids: set[tuple[int | None, int]] = set()
    for digest, uidvalidity, uid in session.execute(
        select(MAIL.c.raw_sha256, MAIL.c.uidvalidity, MAIL.c.uid).where(MAIL.c.mailbox == mailbox, known)
    ):
        seen_digests.add(digest)
        if uid is not None:
            seen_uids.add((uidvalidity, uid))
    new = []
    for mail in mails:
        digest, key = mail.values["raw_sha256"], (mail.values["uidvalidity"], mail.values["uid"])
        if digest in seen_digests or (key[1] is not None and key in seen_uids):
            continue
        seen_digests.add(digest)
        if key[1] is not None:
            seen_uids.add(key)
        new.append(mail)
    return new


def _insert_rows(
    session: Session, blob_rows: list[dict[str, Any]], mail: dict[str, Any], attachments: Sequence[dict[str, Any]],
    *, one_blob_a_statement: bool = False,
) -> int | None:
    """Plain INSERTs in the caller's transaction: blobs, then the mail, then its attachments.

    `one_blob_a_statement` for a large mail on PostgreSQL: psycopg would send an executemany as one pipeline,
    which, like the arrays of the one-statement path, holds the bytes of all blobs at once in its buffer.
    """
    _insert_blob_rows(session, blob_rows, one_blob_a_statement=one_blob_a_statement)
    mail_id = session.execute(
        insert_ignoring_duplicates(session, InboundMail).returning(MAIL.c.id), mail
    ).scalar_one_or_none()
    if mail_id is not None and attachments:
        session.execute(insert(ATTACHMENT), [{"inbound_mail_id": mail_id, **row} for row in attachments])
    return mail_id


def _insert_blob_rows(session: Session, blob_rows: list[dict[str, Any]], *, one_blob_a_statement: bool) -> None:
    """INSERT the blobs that are not stored yet; on SQLite a large one is written into its row in place."""
    if session.get_bind().dialect.name == "sqlite":
        for row in blob_rows:
            if row["size"] >= SQLITE_IN_PLACE_MIN_BYTES:
                _insert_sqlite_blob_in_place(session, row)
        blob_rows = [row for row in blob_rows if row["size"] < SQLITE_IN_PLACE_MIN_BYTES]
    blob_insert = insert_ignoring_duplicates(session, Blob)
    if one_blob_a_statement:
        for row in blob_rows:
            session.execute(blob_insert, row)
    elif blob_rows:
        session.execute(blob_insert, blob_rows)


def _insert_sqlite_blob_in_place(session: Session, row: dict[str, Any]) -> None:
    """INSERT the blob as zeroblob(size), then write its bytes into the row through SQLite's blob handle.

    Bound as a parameter, the bytes would be copied by SQLite on top of the record it builds, and that copy stays
    with the cached statement until its next use: two more copies of a large mail while it is being stored.
    """
    in_place = {**row, "data": func.zeroblob(row["size"])}
    inserted = session.execute(insert_ignoring_duplicates(session, Blob).values(in_place).returning(ROWID))
    rowid = inserted.scalar_one_or_none()
    if rowid is None:
        return  # these bytes are stored already (the same attachment in an earlier mail)
    data = memoryview(row["data"])
    sqlite = session.connection().connection.driver_connection
    assert sqlite is not None
    with sqlite.blobopen(BLOB.name, "data", rowid) as handle:
        for start in range(0, len(data), SQLITE_WRITE_CHUNK_BYTES):
            handle.write(data[start:start + SQLITE_WRITE_CHUNK_BYTES])


@lru_cache(maxsize=4)
def _postgresql_statement(mail_columns: tuple[str, ...]) -> Select[int]:
    """The mail (RETURNING id); if it is new, its blobs and its attachments joined to that id.

    Blobs and attachments arrive as binary arrays (unnest), so the statement has one shape whatever the number of
    attachments. The foreign keys are checked at the end of the statement, when the blobs exist.
    """
    from sqlalchemy.dialects import postgresql  # loaded by the engine; on SQLite never imported (see store.upsert)

    new_mail = (
        postgresql.insert(MAIL)
        .values({name: bindparam(f"mail_{name}", type_=MAIL.c[name].type) for name in mail_columns})
        .on_conflict_do_nothing().returning(MAIL.c.id).cte("nieuwe_mail")
    )
    blobs = _unnest("blob", BLOB, BLOB_COLUMNS)
    new_blobs = postgresql.insert(BLOB).from_select(
        BLOB_COLUMNS, select(blobs).where(exists(select(new_mail.c.id)))
    ).on_conflict_do_nothing()
    attachments = _unnest("bijlage", ATTACHMENT, ATTACHMENT_COLUMNS)
    new_attachments = insert(ATTACHMENT).from_select(
        ["inbound_mail_id", *ATTACHMENT_COLUMNS],
        select(new_mail.c.id, *(attachments.c[name] for name in ATTACHMENT_COLUMNS))
        .select_from(new_mail.join(attachments, true())),  # each attachment once per new mail (0 or 1)
    )
    ctes: list[CTE] = [new_blobs.cte("nieuwe_blobs"), new_attachments.cte("nieuwe_bijlagen")]
    return select(new_mail.c.id).add_cte(*ctes)


def _unnest(prefix: str, table: Table, names: Sequence[str]) -> TableValuedAlias:
    """Rows from one array parameter per column; each item keeps its column's bind processing (NUL stripping)."""
    arrays = [bindparam(f"{prefix}_{name}", type_=BinaryArray(table.c[name].type)) for name in names]
    columns = (column(name, table.c[name].type) for name in names)
    return func.unnest(*arrays).table_valued(*columns).render_derived().alias(f"{prefix}_rijen")


def _blob_rows(blobs: Sequence[NewBlob]) -> list[dict[str, Any]]:
    """One row per distinct sha256: a mail may carry the same attachment twice."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for blob in blobs:
        rows.setdefault(
            blob.sha256, {"sha256": blob.sha256, "size": len(blob.data), "data": blob.data, "created_at": now}
        )
    return list(rows.values())
