"""`kcc-mail status` as a use case: each situation built from real rows, judged ok, warning or critical.

Also the heartbeat the running service writes, and the migration that brings a 0001 database up to date.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.engine import make_url
from support.mails import customer_mail, queue_mail
from support.outbox import queue_reply

from kcc.bootstrap import App, build_app
from kcc.config import ConfigError, MonitoringConfig, StorageConfig, load_config
from kcc.monitoring import Level, Report, report_json
from kcc.polling import poll_once
from kcc.service import relay_once, run_service
from kcc.usecases.check import prepare_local_folders
from kcc.usecases.heartbeat import Heartbeat, beat, forget_dead, remove_heartbeat
from kcc.usecases.intake import acquire_lease, record_progress
from kcc.usecases.outbox import claim, expire_leases
from kcc.usecases.status import check_status
from store import models
from store.engine import make_engine
from store.mail import InboundAttachment, InboundMail, MailboxState
from store.monitoring import ServiceHeartbeat
from store.outbox import OutboxMessage
from store.schema import (
    MIGRATIONS,
    SchemaOutOfDate,
    current_revision,
    head_revision,
    include_object,
    require_current,
    upgrade,
)
from store.types import utcnow

THRESHOLDS = MonitoringConfig(
    heartbeat_interval=1.0, heartbeat_critical_seconds=30.0, poll_warning_minutes=15.0, poll_critical_minutes=60.0,
    review_warning_minutes=60.0, review_critical_minutes=240.0, outbox_pending_warning_minutes=30.0,
    outbox_pending_critical_minutes=240.0, uncertain_warning=1, quarantine_warning=1,
)


@pytest.fixture
def monitored(app: App) -> App:
    """The test app with known thresholds, on a database emptied of everything status counts."""
    with app.engine.begin() as connection:
        for table in (InboundAttachment, InboundMail, OutboxMessage, MailboxState, ServiceHeartbeat):
            connection.execute(delete(table))
    prepare_local_folders(app.config)
    return replace(app, config=replace(app.config, monitoring=THRESHOLDS))


def healthy(app: App, now: datetime) -> None:
    """A live service polling `info` and relaying, a successful poll, a fresh mail and a sent reply."""
    beat(app.uow(), Heartbeat("kcc01:4242:abcd1234", now - timedelta(hours=1), ("info",), True), now=now)
    assert poll_once(app, app.config.mailboxes)[1] == []
    queue_mail(app, customer_mail(), received_at=now - timedelta(minutes=5))
    queue_reply(app.uow(), now=now)
    assert relay_once(app).sent == 1


def queued_long_ago(app: App, outbox_id: int, now: datetime) -> None:
    """As if the reply was queued five hours ago and no relay has run since."""
    with app.engine.begin() as connection:
        connection.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                           .values(created_at=now - timedelta(hours=5)))


def messages(report: Report, level: Level) -> list[str]:
    return [check.message for check in report.checks if check.level == level]


def test_a_healthy_installation_is_ok_with_its_figures(monitored: App) -> None:
    now = utcnow()
    healthy(monitored, now)
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.OK and messages(report, Level.WARNING) == []
    assert report.summary().startswith("KCC-MAIL OK - service running: kcc01:4242 (intake info; relay, heartbeat")
    assert "1 mail waiting for review (oldest 5 min)" in report.summary()
    assert report.figures is not None
    (mailbox,) = report.figures.mailboxes
    assert mailbox.last_success_at is not None and mailbox.last_error == ""
    assert mailbox.states == {"te_beoordelen": 1, "geregistreerd": 0, "afgewezen": 0, "quarantaine": 0}
    assert report.figures.outbox["sent"] == 1 and report.figures.sending.waiting == 0
    data = report_json(report)
    assert (data["status"], data["exitCode"]) == ("ok", 0)
    assert data["processes"][0]["intake"] == ["info"] and data["processes"][0]["alive"] is True


def test_mails_waiting_longer_than_the_warning_make_a_warning(monitored: App) -> None:
    now = utcnow()
    healthy(monitored, now)
    for _ in range(3):
        queue_mail(monitored, customer_mail(), received_at=now - timedelta(minutes=90))
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.WARNING
    assert report.summary() == "KCC-MAIL WARNING - 3 mails waiting for review longer than 60 min (oldest 90 min)"
    assert report.figures is not None and report.figures.review.waiting == 4


def test_quarantine_and_an_uncertain_reply_each_warn(monitored: App) -> None:
    now = utcnow()
    healthy(monitored, now)
    small = replace(monitored, config=replace(monitored.config, storage=StorageConfig(max_mail_bytes=100)))
    queue_mail(small, customer_mail(body="x" * 500), received_at=now)
    stuck = queue_reply(monitored.uow(), now=now - timedelta(minutes=10))
    assert [c.outbox_id for c in claim(monitored.uow(), now=now - timedelta(minutes=10), lease_seconds=60,
                                       limit=1)] == [stuck.outbox_id]
    assert expire_leases(monitored.uow(), now=now) == 1  # the relay died mid-send: the outcome is unknown
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.WARNING
    assert messages(report, Level.WARNING) == [
        "1 reply uncertain: check, then `kcc-mail outbox resend` or `mark-sent`",
        "1 mail in quarantine (too_large 1)",
    ]
    assert report.figures is not None and report.figures.quarantine["too_large"] == 1


def test_a_mail_or_a_reply_waiting_past_the_critical_threshold_is_critical(monitored: App) -> None:
    now = utcnow()
    healthy(monitored, now)
    queue_mail(monitored, customer_mail(), received_at=now - timedelta(hours=5))
    queued_long_ago(monitored, queue_reply(monitored.uow(), now=now - timedelta(hours=5)).outbox_id, now)
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.CRITICAL
    assert messages(report, Level.CRITICAL) == [
        "1 mail waiting for review longer than 240 min (oldest 5 h 0 min)",
        "1 reply waiting to be sent longer than 240 min (oldest 5 h 0 min)",
    ]


def test_a_service_that_never_ran_died_or_stopped_is_told_apart(monitored: App) -> None:
    now = utcnow()
    assert poll_once(monitored, monitored.config.mailboxes)[1] == []
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert messages(report, Level.CRITICAL) == ["service not running (never started, or stopped cleanly)"]

    died = Heartbeat("kcc01:4242:dead0001", now - timedelta(hours=2), ("info",), True)
    beat(monitored.uow(), died, now=now - timedelta(minutes=5))
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert messages(report, Level.CRITICAL) == [
        "service not running: process kcc01:4242 died (last heartbeat 5 min ago)"
    ]

    restarted = Heartbeat("kcc01:4343:live0002", now, ("info",), True)
    beat(monitored.uow(), restarted, now=now)
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.WARNING  # one of two processes died: the other still works
    assert messages(report, Level.WARNING) == ["process kcc01:4242 died (last heartbeat 5 min ago)"]

    assert forget_dead(monitored.uow(), monitored.config.monitoring, now=now) == [died.owner]
    assert check_status(monitored.uow(), monitored.config, now=now).level == Level.OK
    remove_heartbeat(monitored.uow(), restarted.owner)
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert messages(report, Level.CRITICAL) == ["service not running (never started, or stopped cleanly)"]


def test_a_killed_process_on_this_host_is_shown_dead_at_once_and_forgotten_by_the_next_beat(
    monitored: App
) -> None:
    now = utcnow()
    assert poll_once(monitored, monitored.config.mailboxes)[1] == []
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{socket.gethostname()}:{killed.pid}:kill0001"
    beat(monitored.uow(), Heartbeat(owner, now - timedelta(hours=1), ("info",), True), now=now)
    assert check_status(monitored.uow(), monitored.config, now=now).level == Level.OK
    killed.kill()
    killed.wait()
    report = check_status(monitored.uow(), monitored.config, now=now)  # its last beat is fresh, its pid is gone
    assert messages(report, Level.CRITICAL) == [
        f"service not running: process {socket.gethostname()}:{killed.pid} died (last heartbeat 0 s ago)"
    ]
    assert forget_dead(monitored.uow(), monitored.config.monitoring, now=now) == [owner]


def test_a_part_no_running_process_does_warns(monitored: App) -> None:
    now = utcnow()
    assert poll_once(monitored, monitored.config.mailboxes)[1] == []
    beat(monitored.uow(), Heartbeat("kcc02:7:relay001", now, (), True), now=now)
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert messages(report, Level.WARNING) == ["no running process polls mailbox info"]


def test_a_mailbox_not_polled_for_long_is_critical_and_shows_its_last_error(monitored: App) -> None:
    app = replace(monitored, config=replace(
        monitored.config, monitoring=replace(THRESHOLDS, heartbeat_critical_seconds=0.0)))  # as a cron set-up
    assert poll_once(app, app.config.mailboxes)[1] == []
    assert acquire_lease(app.uow(), "info", "kcc01:1:x") is not None
    record_progress(app.uow(), "info", "kcc01:1:x", uidvalidity=1, high_water_uid=None,
                    error="IMAP server said: BYE\r\nmaintenance", success=False)
    soon = utcnow() + timedelta(minutes=20)
    report = check_status(app.uow(), app.config, now=soon)
    assert report.level == Level.WARNING
    (warning,) = messages(report, Level.WARNING)
    assert warning.startswith("mailbox info: last successful poll 20 min ago; last poll failed: IMAP server said: BYE")
    assert "service" not in [check.name for check in report.checks]  # heartbeat_critical_seconds = 0: no check
    later = check_status(app.uow(), app.config, now=soon + timedelta(hours=1))
    assert later.level == Level.CRITICAL


def test_the_running_service_beats_and_removes_its_row_on_a_clean_stop(monitored: App) -> None:
    mailbox = replace(monitored.config.mailboxes[0], poll_interval=0.2)
    app = replace(monitored, config=replace(
        monitored.config, mailboxes=(mailbox,), replies=replace(monitored.config.replies, relay_interval=0.2),
        monitoring=replace(THRESHOLDS, heartbeat_interval=0.1, heartbeat_critical_seconds=5.0)))
    stop = threading.Event()
    service = threading.Thread(target=run_service, args=(app, stop))
    service.start()
    try:
        rows = wait_for_heartbeats(app, beats=2)
        died = Heartbeat("kcc09:5:dood0001", utcnow() - timedelta(hours=1), ("info",), True)
        beat(app.uow(), died, now=utcnow() - timedelta(minutes=5))  # another instance died while this one runs
        deadline = time.monotonic() + 10
        while died.owner in [r.owner for r in heartbeats(app)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r.owner for r in heartbeats(app)] == [row.owner for row in rows], "forgotten by a beat, not a restart"
    finally:
        stop.set()
        service.join(timeout=20)
    assert not service.is_alive()
    (row,) = rows
    assert (row.intake, row.relay) == (["info"], True) and row.beat_at > row.started_at
    assert row.version and row.owner.count(":") == 2
    assert heartbeats(app) == []


def heartbeats(app: App) -> list[ServiceHeartbeat]:
    with app.uow() as uow:
        return list(uow.session.scalars(select(ServiceHeartbeat)))


def wait_for_heartbeats(app: App, *, beats: int) -> list[ServiceHeartbeat]:
    """The rows once the beat has moved on `beats` times (so it is renewed, not only written once)."""
    seen: set[datetime] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = heartbeats(app)
        seen |= {row.beat_at for row in rows}
        if len(seen) >= beats:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"the service did not beat {beats} times in 10 s: {seen}")


# --- the migration -----------------------------------------------------------------------------------------------


@pytest.fixture
def old_database(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database of its own, left at revision 0001 as the previous kcc-mail made it."""
    from conftest import create_postgres_database, drop_postgres_database

    server = ""
    if make_url(database_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = create_postgres_database(server)
    engine = make_engine(url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.upgrade(alembic, "0001")
    yield engine
    engine.dispose()
    if server:
        drop_postgres_database(server, url)


def test_a_0001_database_is_refused_then_upgraded_with_the_heartbeat_table(
    old_database: Engine, tmp_path: Path
) -> None:
    needs = f"schema revision 0001, this kcc-mail needs {head_revision()}: run `kcc-mail init`"
    with pytest.raises(SchemaOutOfDate, match=needs):
        require_current(old_database)
    assert upgrade(old_database) == ("0001", head_revision())
    require_current(old_database)
    assert current_revision(old_database) == head_revision()
    with old_database.connect() as connection, warnings.catch_warnings():
        # SQLite cannot reflect an expression index (lower(from_address)); the PostgreSQL run compares it
        warnings.filterwarnings("ignore", message=".*expression-based index")
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "include_object": include_object})
        differences = compare_metadata(context, models.Base.metadata)
    assert differences == []  # the hand-written migration makes exactly what the model describes
    from conftest import make_config

    app = build_app(make_config(str(old_database.url.render_as_string(hide_password=False)), tmp_path),
                    engine=old_database)
    beat(app.uow(), Heartbeat("kcc01:1:up", utcnow(), ("info",), False))
    assert [row.owner for row in heartbeats(app)] == ["kcc01:1:up"]


def test_a_mailbox_with_mail_but_no_configuration_is_shown_but_not_polled(monitored: App) -> None:
    now = utcnow()
    healthy(monitored, now)
    queue_mail(monitored, customer_mail(), mailbox="archief", received_at=now - timedelta(minutes=1))
    report = check_status(monitored.uow(), monitored.config, now=now)
    assert report.level == Level.OK
    assert report.figures is not None
    assert [(m.name, m.configured) for m in report.figures.mailboxes] == [("info", True), ("archief", False)]
    assert [c.name for c in report.checks if c.name.startswith("mailbox")] == ["mailbox info"]


# --- the thresholds ------------------------------------------------------------------------------------------------


def test_the_example_configuration_documents_the_default_thresholds() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert load_config(example, environ={}).monitoring == MonitoringConfig()


@pytest.mark.parametrize(("toml", "message"), [
    ("poll_warning_minutes = -1.0", "monitoring.poll_warning_minutes must be 0 (off) or more"),
    ("heartbeat_interval = 0.0", "monitoring.heartbeat_interval must be more than 0 seconds"),
    ("review_warning_minutes = 500.0\nreview_critical_minutes = 100.0",
     "monitoring.review_warning_minutes (500) is more than review_critical_minutes (100)"),
    ("heartbeat_interval = 30.0\nheartbeat_critical_seconds = 20.0",
     "monitoring.heartbeat_critical_seconds (20) must be more than heartbeat_interval (30)"),
])
def test_thresholds_that_cannot_work_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "kcc-mail.toml"
    path.write_text(f"[monitoring]\n{toml}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, environ={})
