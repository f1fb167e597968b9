"""Shared fixtures: a fresh database per test module on SQLite and PostgreSQL, and the real protocol peers.

Under KCC_REQUIRE_ALL=1 (CI) a skipped test counts as a failure: an integration test that did not run proves
nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from support.require import CORPUS, SPECS, unavailable

from kcc.bootstrap import App, build_app
from kcc.config import Config, DatabaseConfig, MailboxConfig, SmtpConfig
from store.engine import make_engine
from store.schema import upgrade

pytest_plugins = ["support.fixtures"]

CORPUS_LEFT_OUT = pytest.StashKey[int]()
SPECS_LEFT_OUT = pytest.StashKey[int]()

REQUIRE_ALL = os.environ.get("KCC_REQUIRE_ALL") == "1"
POSTGRES_URL = os.environ.get("KCC_TEST_POSTGRES_URL", "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under KCC_REQUIRE_ALL=1, which makes every skip a failure: {reason}"


def _admin_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server tests may create their own databases on."""
    if not POSTGRES_URL:
        unavailable("KCC_TEST_POSTGRES_URL is not set, so the PostgreSQL tests cannot run")
    return POSTGRES_URL


def create_postgres_database(server_url: str) -> str:
    """A new, empty database on the test server, so runs never see each other's rows."""
    name = f"kcc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(server_url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    with psycopg.connect(_admin_conninfo(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database, once on SQLite and once on PostgreSQL, fresh for each test module."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'kcc-mail.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = create_postgres_database(server)
    try:
        yield url
    finally:
        drop_postgres_database(server, url)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a schema built by the real migrations."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine(postgres_server: str) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database with the schema, for the PostgreSQL-only tests of a module."""
    url = create_postgres_database(postgres_server)
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        drop_postgres_database(postgres_server, url)


def make_config(database_url: str, root: Path, **overrides: object) -> Config:
    """A configuration for tests: the given database, a Maildir and an outgoing folder under `root`."""
    values: dict[str, object] = {
        "database": DatabaseConfig(url=database_url),
        "mailboxes": (MailboxConfig(name="info", kind="maildir", path=str(root / "mail" / "info")),),
        "smtp": SmtpConfig(kind="directory", directory=str(root / "outgoing")),
        "source": "test configuration",
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture
def app(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[App]:
    """The application wired with real adapters on the module's database."""
    application = build_app(make_config(database_url, tmp_path), engine=engine)
    yield application


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        unavailable(f"the shared mail corpus is not at {CORPUS}")
    return CORPUS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the corpus or the specs (a fresh clone), their tests are left out, and counted for one line each at
    the end."""
    needs: list[pytest.Item] = []
    if not CORPUS.is_dir():
        corpus_tests = [item for item in items
                        if item.get_closest_marker("corpus") or "corpus" in getattr(item, "fixturenames", ())]
        config.stash[CORPUS_LEFT_OUT] = len(corpus_tests)
        needs += corpus_tests
    if not SPECS.is_dir():
        specs_tests = [item for item in items if item.get_closest_marker("specs") and item not in needs]
        config.stash[SPECS_LEFT_OUT] = len(specs_tests)
        needs += specs_tests
    if needs:
        config.hook.pytest_deselected(items=needs)
        left_out = set(map(id, needs))
        items[:] = [item for item in items if id(item) not in left_out]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line for what was left out, and why."""
    parts = [
        f"{left_out} tests that need {what}, which is not at {where} (set {variable} to its folder to run them)"
        for key, what, where, variable in ((CORPUS_LEFT_OUT, "the shared mail corpus", CORPUS, "KCC_TEST_CORPUS"),
                                           (SPECS_LEFT_OUT, "the OpenAPI specifications", SPECS, "KCC_TEST_SPECS"))
        if (left_out := config.stash.get(key, 0))
    ]
    if parts:
        terminalreporter.write_line("not run: " + "; ".join(parts))
