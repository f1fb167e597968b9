"""The relay as an operator runs it: `kcc-mail relay` processes against a real aiosmtpd server.

A relay killed between send and finish leaves its reply `uncertain` (never resent by itself); the operator resends
it with the same bytes and Message-ID. Two relays at once send each reply exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kcc_cli import kcc_mail
from sqlalchemy import delete, select
from support.outbox import QueuedReply, queue_replies, queue_reply
from support.smtpfaults import FaultySmtpServer, running_faulty_server

from kcc.bootstrap import App
from store.blobs import get_blob
from store.outbox import OutboxMessage
from store.types import utcnow


@pytest.fixture
def server() -> Iterator[FaultySmtpServer]:
    with running_faulty_server() as smtp:
        yield smtp


@pytest.fixture
def empty_outbox(app: App) -> App:
    with app.uow() as uow:
        uow.session.execute(delete(OutboxMessage))
        uow.commit()
    return app


def write_config(directory: Path, database_url: str, server: FaultySmtpServer, *, lease_seconds: float) -> Path:
    """kcc-mail.toml for the test database and the test server, plain SMTP on loopback.

    The SMTP timeouts are a third of the lease each: kcc-mail refuses a lease a send could outlast.
    """
    (directory / "kcc-mail.toml").write_text(
        f"""
[database]
url = "{database_url}"

[[mailbox]]
name = "info"
kind = "maildir"
path = "{directory / 'mail'}"

[smtp]
kind = "smtp"
host = "127.0.0.1"
port = {server.port}
security = "none"
from_address = "info@gemeente.example"
timeout = {lease_seconds / 3:.3f}
data_timeout = {lease_seconds / 3:.3f}

[replies]
lease_seconds = {lease_seconds}
relay_interval = 0.5

[web]
enabled = false
""",
        encoding="utf-8",
    )
    return directory


def start_relay(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`kcc-mail relay ARGS` in the background, with the environment cleared of KCC_ variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    return subprocess.Popen(
        [sys.executable, "-m", "kcc", "relay", *args], cwd=cwd, env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def ok(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def row(app: App, queued: QueuedReply) -> OutboxMessage:
    with app.uow() as uow:
        found = uow.session.get(OutboxMessage, queued.outbox_id)
        assert found is not None
        return found


def test_a_relay_killed_between_send_and_finish_leaves_the_reply_uncertain_until_resent(
    empty_outbox: App, database_url: str, server: FaultySmtpServer, tmp_path: Path
) -> None:
    app = empty_outbox
    cwd = write_config(tmp_path, database_url, server, lease_seconds=2.0)
    queued = queue_reply(app.uow())
    server.hold_data()

    relay = start_relay(cwd, "--once")
    try:
        assert server.data_arrived.wait(30), "the relay never sent the message"
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.communicate(timeout=30)
    server.release()

    killed = row(app, queued)
    assert killed.status == "sending", "killed before it could record anything"
    assert killed.lease_until is not None
    time.sleep(max((killed.lease_until - utcnow()).total_seconds(), 0) + 0.2)

    assert ok(cwd, "relay", "--once").strip() == "sent=0 retry=0 failed=0 uncertain=1"
    assert ok(cwd, "relay", "--once").strip() == "sent=0 retry=0 failed=0 uncertain=0", "never resent by itself"
    (listed,) = json.loads(ok(cwd, "outbox", "list", "--status", "uncertain", "--json"))
    assert (listed["id"], listed["messageId"], listed["attempts"]) == (queued.outbox_id, queued.message_id, 1)
    assert "may or may not have the message" in listed["lastSmtpReply"]
    assert len(server.messages) == 1

    resent = ok(cwd, "outbox", "resend", str(queued.outbox_id), "--as", "anna@gemeente.nl")
    assert resent.strip() == (
        f"outbox {queued.outbox_id}: queued again with the same bytes and Message-ID {queued.message_id}; "
        "the relay sends it on its next round (or run `kcc-mail relay --once`)"
    )
    assert ok(cwd, "relay", "--once").strip() == "sent=1 retry=0 failed=0 uncertain=0"

    with app.uow() as uow:
        stored = get_blob(uow.session, row(app, queued).blob_sha256)
    first, second = server.messages
    assert first.data == second.data == stored == queued.data, "byte-identical"
    assert server.message_ids() == [queued.message_id, queued.message_id]
    header, *lines = ok(cwd, "outbox", "list").splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "POG"]
    assert len(lines) == 1 and lines[0].split()[:3] == [str(queued.outbox_id), "sent", "2x"]


def test_outbox_commands_refuse_what_cannot_be_done_with_one_clear_line(
    empty_outbox: App, database_url: str, server: FaultySmtpServer, tmp_path: Path
) -> None:
    cwd = write_config(tmp_path, database_url, server, lease_seconds=60.0)
    queued = queue_reply(empty_outbox.uow())

    pending = kcc_mail("outbox", "mark-sent", str(queued.outbox_id), "--as", "anna@gemeente.nl", cwd=cwd)
    assert pending.returncode == 1
    assert pending.stderr.strip() == (
        f"kcc-mail: outbox {queued.outbox_id} is pending; only an uncertain reply can be marked sent"
    )
    missing = kcc_mail("outbox", "resend", "999999", "--as", "anna@gemeente.nl", cwd=cwd)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "kcc-mail: no outbox message with id 999999; `kcc-mail outbox list` shows them"
    )
    wrong = kcc_mail("outbox", "list", "--status", "verzonden", cwd=cwd)
    assert wrong.returncode == 1
    assert "unknown outbox status 'verzonden'; choose one of pending, sending" in wrong.stderr


def test_two_relays_at_once_send_each_reply_exactly_once(
    empty_outbox: App, database_url: str, server: FaultySmtpServer, tmp_path: Path
) -> None:
    app = empty_outbox
    cwd = write_config(tmp_path, database_url, server, lease_seconds=60.0)
    queued = queue_replies(app.uow(), 200)
    server.delay = 0.02  # so one relay alone would need seconds: the two really overlap

    relays = [start_relay(cwd, "--once") for _ in range(2)]
    outputs = [relay.communicate(timeout=120) for relay in relays]

    counts: list[dict[str, int]] = []
    for (stdout, stderr), relay in zip(outputs, relays, strict=True):
        assert relay.returncode == 0, stderr
        counts.append({k: int(v) for k, v in (part.split("=") for part in stdout.split())})
    assert sum(c["sent"] for c in counts) == 200
    assert all(c["sent"] > 0 for c in counts), f"both relays took part: {counts}"
    assert all(c["retry"] == c["failed"] == c["uncertain"] == 0 for c in counts)
    ids = server.message_ids()
    assert len(ids) == 200 and sorted(ids) == sorted(q.message_id for q in queued), "each exactly once"
    with app.uow() as uow:
        statuses: Any = uow.session.scalars(select(OutboxMessage.status)).all()
        attempts = uow.session.scalars(select(OutboxMessage.attempts)).all()
    assert set(statuses) == {"sent"} and set(attempts) == {1}


def test_run_relays_next_to_intake_and_stops_cleanly_on_sigterm(
    empty_outbox: App, database_url: str, server: FaultySmtpServer, tmp_path: Path
) -> None:
    app = empty_outbox
    cwd = write_config(tmp_path, database_url, server, lease_seconds=60.0)
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "mail" / sub).mkdir(parents=True)
    queued = queue_reply(app.uow())
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    service = subprocess.Popen([sys.executable, "-m", "kcc", "run"], cwd=cwd, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not server.messages and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.1)
        assert [m.data for m in server.messages] == [queued.data]
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert row(app, queued).status == "sent"
