"""Engines and sessions for SQLite (the laptop default) and PostgreSQL (production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store.types import BinaryList


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; a SQLite file gets its folder, foreign keys, WAL and write-ahead locking.

    Parameters are hidden from errors: they hold mail text and addresses, which must not reach a log.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True, **kwargs)
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)
    if parsed.get_driver_name() == "psycopg":
        _configure_psycopg(engine)
    return engine


def _configure_psycopg(engine: Engine) -> None:
    """Send our BinaryList parameters (arrays of mail bytes, see store.types) in psycopg's binary format."""
    from psycopg.types.array import ListBinaryDumper

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.adapters.register_dumper(BinaryList, ListBinaryDumper)


def _configure_sqlite(engine: Engine) -> None:
    """Take the write lock at BEGIN: two deciders then queue instead of failing on a lock upgrade."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
