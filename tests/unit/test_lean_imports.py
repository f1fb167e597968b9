"""What a process loads decides how soon it starts: a parse worker without SQLAlchemy, a SQLite poll without the
PostgreSQL dialect. Checked in a fresh interpreter, as a worker or cron starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest.workers import INTAKE_PRELOAD


def loaded_after(code: str, cwd: Path | None = None) -> set[str]:
    script = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=cwd)
    return set(result.stdout.split())


def test_an_intake_worker_loads_the_parser_without_sqlalchemy_or_the_tables() -> None:
    loaded = loaded_after("\n".join(f"import {name}" for name in INTAKE_PRELOAD))
    assert {"ingest.parse", "ingest.classify", "ingest.analysis"} <= loaded
    assert not {name for name in loaded if name.split(".")[0] == "sqlalchemy" or name == "store.models"}


def test_a_poll_on_sqlite_does_not_load_the_postgresql_dialect(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "kcc", "init"], cwd=tmp_path, check=True, capture_output=True)
    loaded = loaded_after("from kcc.cli import main\nimport sys\nsys.argv = ['kcc-mail', 'poll', '--once']\n"
                          "try:\n    main()\nexcept SystemExit:\n    pass", cwd=tmp_path)
    assert "kcc.polling" in loaded and "store.models" in loaded
    assert "sqlalchemy.dialects.postgresql" not in loaded
