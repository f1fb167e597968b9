"""Insert-if-absent that is safe when two processes insert the same natural key at the same moment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert


def dialect_insert(session: Session, model: type[Any]) -> PostgresqlInsert | SqliteInsert:
    """An INSERT into `model`'s table in the session's dialect, which has ON CONFLICT (PostgreSQL and SQLite alike).

    A plain table insert, not the ORM's bulk path: it runs once per stored mail and attachment. Each dialect's
    module is imported here, where the engine has loaded it already: importing PostgreSQL's (with asyncio, for its
    asyncpg driver) would be a tenth of the start of `kcc-mail poll --once` on SQLite.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(model.__table__)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model.__table__)


def insert_ignoring_duplicates(session: Session, model: type[Any]) -> PostgresqlInsert | SqliteInsert:
    """INSERT … ON CONFLICT DO NOTHING into `model`'s table."""
    return dialect_insert(session, model).on_conflict_do_nothing()


def insert_if_absent(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    session.execute(insert_ignoring_duplicates(session, model), values)
