"""Creating, upgrading and checking the database schema through the Alembic migrations.

Alembic is imported only to create, upgrade or explain: every command checks the schema at start, and importing
Alembic (with Mako) would be a large part of the start of `kcc-mail poll --once`. The check reads the stored
revision with one SELECT and the newest migration's revision from the migration files.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from store.search import SEARCH_OBJECTS

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = str(resources.files("store") / "migrations")
"""The migrations are package data of `store`, installed with it (a wheel included)."""


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """For Alembic's comparison: the search index and its SQLite shadow tables are made by a migration on purpose,
    outside the ORM's metadata (see store/search.py)."""
    return not (reflected and name is not None and name.startswith(SEARCH_OBJECTS))


class SchemaOutOfDate(Exception):
    """The database was made by another version of kcc-mail."""


_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b[^=]*=(.*)$", re.MULTILINE)


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}; the installation is incomplete")
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration; returns (before, after)."""
    from alembic import command

    before = current_revision(engine)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, head_revision()


def require_current(engine: Engine) -> None:
    """Refuse to work on a schema that this version of kcc-mail did not make."""
    if _is_current_without_alembic(engine):
        return
    current, head = current_revision(engine), head_revision()
    if current != head:
        found = "no kcc-mail schema" if current is None else f"schema revision {current}"
        raise SchemaOutOfDate(
            f"the database at {engine.url.render_as_string(hide_password=True)} has {found}, "
            f"this kcc-mail needs {head}: run `kcc-mail init` to create or upgrade it"
        )


def _is_current_without_alembic(engine: Engine) -> bool:
    """True when the stored revision is the one head of the migration files; anything else asks Alembic."""
    head = _head_from_files()
    if head is None:
        return False
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        stored = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return stored == [head]


def _head_from_files() -> str | None:
    """The revision no other migration file names as its down_revision; None unless there is exactly one."""
    revisions, parents = set(), set()
    for path in (resources.files("store") / "migrations" / "versions").iterdir():
        if not path.name.endswith(".py") or path.name.startswith("_"):
            continue
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None  # a file we cannot read this way: let Alembic decide
        revisions.add(revision.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def autogenerate(engine: Engine, message: str) -> None:
    """For developers: write a new migration from the difference between the models and `engine`'s schema."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
