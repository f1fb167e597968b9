"""The start-up schema check reads the newest migration without Alembic; it must name the head Alembic names."""

from __future__ import annotations

from store import schema


def test_the_head_read_from_the_migration_files_is_alembics_head() -> None:
    assert schema._head_from_files() == schema.head_revision()
