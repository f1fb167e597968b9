"""The declarative base and the column helpers every table shares."""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Enum, Integer, MetaData, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.types import SafeString, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An integer key that autoincrements on PostgreSQL (bigint) and SQLite (rowid alias).
Key = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def id_column() -> Mapped[int]:
    return mapped_column(Key, primary_key=True, autoincrement=True)


def uuid_column() -> Mapped[uuid_module.UUID]:
    """Every Klantinteracties object has a uuid, as in the API."""
    return mapped_column(Uuid(), unique=True, default=uuid_module.uuid4, nullable=False)


def created_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


def choice(name: str, values: type[StrEnum]) -> Enum:
    """A column holding one of `values`, enforced by a CHECK constraint on both SQLite and PostgreSQL.

    The column reads and writes plain strings (a StrEnum member is one), so Core statements need no conversion.
    """
    members = [member.value for member in values]
    return Enum(*members, name=name, native_enum=False, create_constraint=True, length=max(map(len, members)))


def add_length_checks(metadata: MetaData) -> None:
    """Enforce every bounded string in the database itself: SQLite ignores VARCHAR(n), the standard does not."""
    for table in metadata.tables.values():
        for column in table.columns:
            length = getattr(column.type, "length", None)
            if isinstance(column.type, SafeString) and length:
                name = f"{column.name}_len"
                if not any(getattr(c, "name", None) == name for c in table.constraints):
                    table.append_constraint(CheckConstraint(f"length({column.name}) <= {length}", name=name))
