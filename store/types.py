"""Column types that keep the database honest on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, DateTime, Dialect, String, Text
from sqlalchemy.types import TypeDecorator

from store.values import strip_nul as strip_nul
from store.values import utcnow as utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware time stamp, stored as UTC; SQLite forgets the zone, so it is put back on reading."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: kcc-mail stores only timezone-aware time stamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _WithoutNul:
    """Shared by the string types: text from mail never reaches the database with NUL or lone surrogates."""

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else strip_nul(value)

    @property
    def python_type(self) -> type[Any]:
        return str


class SafeString(_WithoutNul, TypeDecorator[str]):
    """A bounded string column."""

    impl = String
    cache_ok = True


class SafeText(_WithoutNul, TypeDecorator[str]):
    """An unbounded text column."""

    impl = Text
    cache_ok = True


class BinaryList(list[Any]):
    """A list the PostgreSQL driver sends as a binary array (registered in store.engine).

    psycopg sends plain lists as text arrays, escaping every element: for an array of mail-sized bytea values that
    costs more than the insert itself.
    """


class BinaryArray(TypeDecorator[list[Any]]):
    """A PostgreSQL array parameter that travels in binary; its items keep their own bind processing.

    The generic ARRAY, which the PostgreSQL dialect turns into its own: this module then loads no dialect.
    """

    impl = ARRAY
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        process = super().bind_processor(dialect)

        def to_binary(value: Any) -> BinaryList | None:
            if process is not None:
                value = process(value)
            return None if value is None else BinaryList(value)

        return to_binary
