"""Real refusals by the database itself (a trigger), to prove that a failing step rolls the whole decision back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

MESSAGE = "geweigerd door de test"


@contextmanager
def refuse_inserts(engine: Engine, table: str, condition: str = "1 = 1") -> Iterator[None]:
    """While open, every INSERT into `table` whose NEW row meets `condition` fails inside the database."""
    name = f"weiger_{table}"
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            ))
        else:
            connection.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN IF {condition} THEN "
                f"RAISE EXCEPTION '{MESSAGE}'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            ))
            connection.execute(text(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
            ))
    try:
        yield
    finally:
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.execute(text(f"DROP TRIGGER {name}"))
            else:
                connection.execute(text(f"DROP TRIGGER {name} ON {table}"))
                connection.execute(text(f"DROP FUNCTION {name}()"))
