"""Insert-if-absent that is safe when two processes insert the same natural key at the same moment."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert


def insert_ignoring_duplicates(session: Session, model: type[Any]) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING into `model`'s table, on PostgreSQL and SQLite alike.

    A plain table insert, not the ORM's bulk path: it runs once per stored mail and attachment. Each dialect's
    module is imported here, where the engine has loaded it already: importing PostgreSQL's (with asyncio, for its
    asyncpg driver) would be a tenth of the start of `kcc-mail poll --once` on SQLite.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(model.__table__).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model.__table__).on_conflict_do_nothing()


def insert_if_absent(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    session.execute(insert_ignoring_duplicates(session, model), values)
