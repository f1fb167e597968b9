"""The database engine survives what happens to pooled connections between two uses."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from store.engine import PING_AFTER_IDLE_SECONDS


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)


def test_a_pooled_connection_killed_while_idle_is_replaced_before_use(postgres_engine: Engine) -> None:
    """A PostgreSQL restart or a firewall dropping idle connections must not fail the next poll or decision."""
    with postgres_engine.connect() as victim, postgres_engine.connect() as killer:
        first = int(victim.scalar(text("SELECT pg_backend_pid()")) or 0)
        victim.close()  # back in the pool, alive
        assert killer.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}) is True
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    pids = [backend_pid(postgres_engine) for _ in range(3)]  # each use takes the longest-idle connection
    assert first not in pids
