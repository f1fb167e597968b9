"""`kcc-mail status` as cron and Nagios/Icinga run it: exit 0, 1 or 2, one plugin line first, `--json` for machines.

A real `kcc-mail run` is seen alive through its heartbeat; killed, it is reported dead once the heartbeat is older
than the threshold; stopped with SIGTERM, it removes its heartbeat and is reported stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from kcc_cli import kcc_mail, write_config
from sqlalchemy import delete, select
from support.mails import customer_mail, queue_mail

from kcc.bootstrap import App
from kcc.usecases.heartbeat import Heartbeat, beat
from store.engine import make_engine
from store.mail import InboundAttachment, InboundMail, MailboxState
from store.monitoring import ServiceHeartbeat
from store.outbox import OutboxMessage
from store.schema import MIGRATIONS, head_revision
from store.types import utcnow

THRESHOLDS = """[monitoring]
heartbeat_interval = {interval}
heartbeat_critical_seconds = {critical}
review_warning_minutes = 60.0
review_critical_minutes = 240.0
"""


@pytest.fixture
def empty(app: App) -> App:
    """The module's database without the rows status counts, so each test builds its own situation."""
    with app.engine.begin() as connection:
        for table in (InboundAttachment, InboundMail, OutboxMessage, MailboxState, ServiceHeartbeat):
            connection.execute(delete(table))
    return app

HEAD = head_revision()  # what this kcc-mail's migrations end at


def configured(directory: Path, database_url: str, *, interval: float = 1.0, critical: float = 60.0) -> Path:
    """The usual test configuration with [monitoring] thresholds, and a mailbox polled often, so SIGTERM is quick."""
    write_config(directory, database_url, extra=THRESHOLDS.format(interval=interval, critical=critical))
    path = directory / "kcc-mail.toml"
    path.write_text(path.read_text().replace('name = "info"\n', 'name = "info"\npoll_interval = 0.2\n', 1))
    for sub in ("new", "cur", "tmp"):
        (directory / "mail" / sub).mkdir(parents=True, exist_ok=True)
    (directory / "outgoing").mkdir(exist_ok=True)
    return directory


def status(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, the plugin line without its performance data, and the whole output."""
    result = kcc_mail("status", *args, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    first = result.stdout.splitlines()[0] if result.stdout else ""
    return result.returncode, first.split(" | ")[0], result.stdout


def test_exit_0_1_and_2_follow_the_thresholds(empty: App, database_url: str, tmp_path: Path) -> None:
    cwd = configured(tmp_path, database_url)
    now = utcnow()
    beat(empty.uow(), Heartbeat("kcc01:4242:abcd1234", now, ("info",), True), now=now)
    assert kcc_mail("poll", "--once", cwd=cwd).returncode == 0

    code, line, output = status(cwd)
    assert code == 0, output
    assert line.startswith("KCC-MAIL OK - service running: kcc01:4242 (intake info; relay, heartbeat ")
    assert "| processes=1 poll_age_info=" in output.splitlines()[0]
    assert "\nChecks\n  OK        service " in output and "\nQuarantine\n  unparseable 0," in output

    queue_mail(empty, customer_mail(), received_at=now - timedelta(minutes=90))
    code, line, _ = status(cwd)
    assert (code, line) == (1, "KCC-MAIL WARNING - 1 mail waiting for review longer than 60 min (oldest 90 min)")

    queue_mail(empty, customer_mail(), received_at=now - timedelta(hours=5))
    code, line, _ = status(cwd)
    assert (code, line) == (2, "KCC-MAIL CRITICAL - 1 mail waiting for review longer than 240 min (oldest 5 h 0 min)")

    code, _, output = status(cwd, "--json")
    assert code == 2
    data: dict[str, Any] = json.loads(output)
    assert (data["status"], data["exitCode"]) == ("critical", 2)
    assert set(data) == {"status", "exitCode", "summary", "checks", "checkedAt", "processes", "mailboxes", "review",
                         "outbox", "quarantine"}
    assert {"name": "review", "level": "critical",
            "message": "1 mail waiting for review longer than 240 min (oldest 5 h 0 min)"} in data["checks"]
    (mailbox,) = data["mailboxes"]
    assert mailbox["name"] == "info" and mailbox["states"]["te_beoordelen"] == 2 and mailbox["lastError"] == ""
    assert data["review"]["waiting"] == 2 and data["review"]["overWarning"] == 2
    assert data["review"]["overCritical"] == 1
    assert set(data["outbox"]["counts"]) == {"pending", "sending", "retry", "sent", "failed", "uncertain", "bounced"}
    assert data["processes"][0]["owner"] == "kcc01:4242:abcd1234" and data["processes"][0]["alive"] is True


def test_no_figures_is_critical_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "kcc-mail.toml").write_text('[database]\nurl = "postgresql+psycopg://kcc@127.0.0.1:1/kcc"\n')
    code, line, _ = status(tmp_path)
    assert code == 2
    assert line.startswith("KCC-MAIL CRITICAL - database postgresql+psycopg://kcc@127.0.0.1:1/kcc cannot be reached: ")

    (tmp_path / "kcc-mail.toml").write_text("[monitoring]\nreview_warning_minutes = 'lang'\n")
    code, line, output = status(tmp_path, "--json")
    assert code == 2 and json.loads(output)["checks"] == [{
        "name": "configuration", "level": "critical",
        "message": "configuration: kcc-mail.toml: monitoring.review_warning_minutes must be float, not str ('lang')",
    }]


def test_a_0001_database_makes_the_service_refuse_until_init_upgrades_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.upgrade(alembic, "0001")
    engine.dispose()
    cwd = configured(tmp_path, url)

    run = kcc_mail("run", cwd=cwd, timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"kcc-mail: the database at {url} has schema revision 0001, this kcc-mail needs {HEAD}: "
        "run `kcc-mail init` to create or upgrade it"
    )
    code, line, _ = status(cwd)
    assert code == 2 and line.endswith(f"schema revision 0001, this kcc-mail needs {HEAD}: run `kcc-mail init` "
                                       "to create or upgrade it")

    init = kcc_mail("init", cwd=cwd)
    assert f"database {url}: schema upgraded from 0001 at {HEAD}" in init.stdout
    code, line, _ = status(cwd)
    assert (code, line.split(";")[0]) == (2, "KCC-MAIL CRITICAL - service not running (never started, or stopped "
                                              "cleanly)")


# --- a real service ---------------------------------------------------------------------------------------------


@pytest.fixture
def services() -> Iterator[list[subprocess.Popen[str]]]:
    """The `kcc-mail run` processes a test starts; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start_service(cwd: Path, services: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "kcc", "run"], cwd=cwd, env=environment, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    services.append(process)
    return process


def owners(app: App) -> list[str]:
    """The heartbeat rows' owners, once the mailbox has been polled (else status rightly says it never was)."""
    with app.uow() as uow:
        if uow.session.scalar(select(MailboxState.last_success_at).where(MailboxState.mailbox == "info")) is None:
            return []
        return list(uow.session.scalars(select(ServiceHeartbeat.owner).order_by(ServiceHeartbeat.owner)))


def wait_until(what: str, condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def test_a_running_service_is_alive_a_killed_one_dead_a_stopped_one_stopped(
    empty: App, database_url: str, tmp_path: Path, services: list[subprocess.Popen[str]]
) -> None:
    cwd = configured(tmp_path, database_url, interval=0.2, critical=1.5)
    host = socket.gethostname()
    first = start_service(cwd, services)
    wait_until("the first heartbeat", lambda: any(o.startswith(f"{host}:{first.pid}:") for o in owners(empty)))
    code, line, output = status(cwd)
    assert code == 0, output
    assert line.startswith(f"KCC-MAIL OK - service running: {host}:{first.pid} (intake info; relay, heartbeat ")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(1.6)  # the heartbeat is now older than heartbeat_critical_seconds
    code, line, _ = status(cwd)
    assert code == 2
    assert line.startswith(f"KCC-MAIL CRITICAL - service not running: process {host}:{first.pid} died (last heartbeat ")

    second = start_service(cwd, services)  # forgets the dead process's row, so a restart is healthy again
    wait_until("the restart to replace the dead heartbeat",
               lambda: [o.rsplit(":", 1)[0] for o in owners(empty)] == [f"{host}:{second.pid}"])
    code, line, output = status(cwd)
    assert code == 0, output

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=20) == 0, second.stderr.read() if second.stderr else ""
    assert owners(empty) == []
    code, line, _ = status(cwd)
    assert code == 2
    assert line == "KCC-MAIL CRITICAL - service not running (never started, or stopped cleanly)"
