"""Creating, upgrading and checking the database schema through the Alembic migrations."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from store.search import SEARCH_OBJECTS

MIGRATIONS = str(resources.files("store") / "migrations")
"""The migrations are package data of `store`, installed with it (a wheel included)."""


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """For Alembic's comparison: the search index and its SQLite shadow tables are made by a migration on purpose,
    outside the ORM's metadata (see store/search.py)."""
    return not (reflected and name is not None and name.startswith(SEARCH_OBJECTS))


class SchemaOutOfDate(Exception):
    """The database was made by another version of kcc-mail."""


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}; the installation is incomplete")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration; returns (before, after)."""
    before = current_revision(engine)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, head_revision()


def require_current(engine: Engine) -> None:
    """Refuse to work on a schema that this version of kcc-mail did not make."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        found = "no kcc-mail schema" if current is None else f"schema revision {current}"
        raise SchemaOutOfDate(
            f"the database at {engine.url.render_as_string(hide_password=True)} has {found}, "
            f"this kcc-mail needs {head}: run `kcc-mail init` to create or upgrade it"
        )


def autogenerate(engine: Engine, message: str) -> None:
    """For developers: write a new migration from the difference between the models and `engine`'s schema."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
