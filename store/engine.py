"""Engines and sessions for SQLite (the laptop default) and PostgreSQL (production)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from store import models  # noqa: F401  (every table declared before the first session)
from store.types import BinaryList

PING_AFTER_IDLE_SECONDS = 1.0


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
    engine = create_engine(url, hide_parameters=True, **kwargs)
    _ping_after_idle(engine)
    if parsed.get_driver_name() == "psycopg":
        _configure_psycopg(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Test a pooled connection before use when it sat idle for a while; a dead one is replaced, not used.

    A server restart or a firewall that drops idle connections shows up as a dead pooled connection. SQLAlchemy's
    pool_pre_ping would cost a round trip before every transaction, which is a quarter of the time intake spends
    per mail; a connection given back less than PING_AFTER_IDLE_SECONDS ago was alive then.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        idle_since = connection_record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError("a pooled database connection was dead; replacing it") from exc


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


def commit_without_waiting_for_disk(session: Session) -> None:
    """This transaction's commit need not wait for the disk (PostgreSQL `synchronous_commit = off` for it alone).

    Only for a transaction whose loss in a crash harms nothing: PostgreSQL writes its log in order, so a later
    transaction that does wait for the disk flushes this one with it. A reply reserves its two referentienummers
    this way; the decision that uses them commits normally, so a number in use is never lost, and a lost
    reservation is a gap nobody saw. SQLite (synchronous = NORMAL in WAL mode) does not wait for the disk at
    commit anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_unavailable(exc: BaseException) -> bool:
    """Is this the database failing (gone, locked, timed out) rather than one statement's data being refused?"""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe_error(exc: BaseException) -> str:
    """The kind of failure without SQL or parameters (they hold mail text): `StatementError (OverflowError: …)`.

    Only the driver error's first line: PostgreSQL puts the refused row's values on the DETAIL line after it.
    """
    original = getattr(exc, "orig", None)
    cause = original if original is not None else exc
    lines = str(cause).splitlines()
    detail = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return f"{type(exc).__name__} ({detail})" if original is not None else detail
