"""Network faults between the running service and its real peers: Dovecot, aiosmtpd and PostgreSQL.

A loopback TCP proxy (support/netproxy.py) sits in front of one peer and stalls or cuts connections at a chosen
point: IMAP in the middle of a FETCH, SMTP in the middle of DATA, PostgreSQL in the middle of a transaction (during
intake, during a reply decision, during the relay's finish). What a user would check afterwards: the service came
back by itself (with a backoff, no restart), nothing was lost, nothing stored or sent twice, no klantcontact without
its follow-up (`kcc-mail verify`), and a reply whose finish was cut is `sent` or visibly `uncertain` — never sent
again without an operator. The logs of these runs show no mail contents either.

The PostgreSQL cuts have no SQLite counterpart (SQLite has no connection to cut), so those tests take a
PostgreSQL database of their own instead of the SQLite/PostgreSQL `database_url`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import create_postgres_database, drop_postgres_database
from faultkit import (
    append_all,
    contents_in,
    half_written,
    question,
    sha256,
    stored_count,
    stored_digests,
    unmarked_count,
    wait_until,
)
from kcc_cli import end_session, kcc_mail, start_kcc_mail, write_config
from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import make_url
from support.dovecot import ImapUser
from support.netproxy import TcpProxy, running_proxy
from support.smtpfaults import running_faulty_server

from store.engine import make_engine
from store.klantinteracties import Klantcontact
from store.mail import InboundMail
from store.outbox import OutboxMessage
from store.schema import upgrade
from store.types import utcnow

ANSWER = "Het papier wordt elke tweede dinsdag van de maand opgehaald; zet de container voor 7.30 uur buiten.\n"
RUNNING = "kcc-mail running"


# --- fixtures and helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database with the schema, for one test (the PostgreSQL-only cuts)."""
    url = create_postgres_database(postgres_server)
    engine = make_engine(url)
    try:
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        drop_postgres_database(postgres_server, url)


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    """A fault proxy in front of the PostgreSQL server of `postgres_url`."""
    target = make_url(postgres_url)
    with running_proxy(target.port or 5432, _loopback(target.host or "127.0.0.1")) as proxy:
        yield proxy


def _loopback(host: str) -> str:
    address = socket.gethostbyname(host)
    if not address.startswith("127."):
        pytest.fail(f"the fault proxy only works on a loopback PostgreSQL; KCC_TEST_POSTGRES_URL names {host}")
    return address


def through(proxy: TcpProxy, url: str) -> str:
    """The same database URL, but through the proxy."""
    return make_url(url).set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)


def ok(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_service(cwd: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`kcc-mail --log-level INFO ARGS` (default `run`), returned once it says it runs."""
    before = log.read_text().count(RUNNING) if log.exists() else 0
    service = start_kcc_mail("--log-level", "INFO", *(args or ("run",)), cwd=cwd, log=log)
    wait_until(lambda: log.read_text().count(RUNNING) > before or service.poll() is not None, 60,
               "the service has started")
    assert service.poll() is None, log.read_text()[-3000:]
    return service


def stop_service(service: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM, exit 0, and the log without tracebacks or mail contents; returns the log."""
    service.send_signal(signal.SIGTERM)
    try:
        code = service.wait(timeout=30)
    finally:
        end_session(service)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert contents_in(text) == [], "mail contents in the log"
    return text


def reply_queued(cwd: Path, imap_user: ImapUser, *, answer_bytes: int = 0) -> tuple[int, int]:
    """A customer's question fetched and answered as an employee does it; returns (mail id, outbox id)."""
    imap_user.append(question(1, tag=imap_user.name))
    ok(cwd, "poll", "--once")
    (mail,) = json.loads(ok(cwd, "queue", "list", "--mailbox", imap_user.name, "--json"))
    text = cwd / "antwoord.txt"
    text.write_text(ANSWER * max(1, answer_bytes // len(ANSWER)), encoding="utf-8")
    replied = ok(cwd, "reply", str(mail["id"]), "--text-file", str(text), "--as", "anna@gemeente.nl")
    return int(mail["id"]), int(replied.rsplit("outbox message", 1)[1])


def outbox_row(cwd: Path, outbox_id: int) -> dict[str, Any]:
    """The reply as `kcc-mail outbox list --json` shows it to an operator."""
    (row,) = [r for r in json.loads(ok(cwd, "outbox", "list", "--json")) if r["id"] == outbox_id]
    return dict(row)


def outbox_status(engine: Engine, outbox_id: int) -> str:
    with engine.connect() as connection:
        return str(connection.scalar(select(OutboxMessage.status).where(OutboxMessage.id == outbox_id)))


def verified(cwd: Path) -> None:
    result = kcc_mail("verify", cwd=cwd)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stdout + result.stderr


# --- the proxy itself ------------------------------------------------------------------------------------------


def test_the_proxy_cuts_stalls_and_forwards_exactly_as_told() -> None:
    """The tool first: a fault test is only as good as the fault it makes."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
                    connection.sendall(chunk)
                received.append(data)

    threading.Thread(target=echo, daemon=True).start()
    try:
        with running_proxy(listener.getsockname()[1]) as proxy:
            with socket.create_connection((proxy.host, proxy.port), timeout=5) as client:
                client.sendall(b"hallo")
                assert client.recv(100) == b"hallo"
                proxy.cut_after(3, "upstream")
                client.sendall(b"0123456789")
                with pytest.raises(ConnectionResetError):
                    while client.recv(100):
                        pass
            wait_until(lambda: len(received) == 1, 5, "the server saw the cut")
            assert received == [b"hallo012"], "exactly 3 more bytes, then the cut"

            with socket.create_connection((proxy.host, proxy.port), timeout=5) as client:
                proxy.cut_at(b"COMMIT", "upstream", forward=True, after=b"BEGIN")
                client.sendall(b"COMMIT;")  # before BEGIN on this connection: not the one armed for
                assert client.recv(100) == b"COMMIT;"
                client.sendall(b"BEGIN;")
                assert client.recv(100) == b"BEGIN;"
                client.sendall(b"COMMIT;")
                with pytest.raises(ConnectionResetError):
                    client.recv(100)
            wait_until(lambda: len(received) == 2, 5, "the server saw the second cut")
            assert received[1] == b"COMMIT;BEGIN;COMMIT;", "forward=True: the server got the trigger"

            with socket.create_connection((proxy.host, proxy.port), timeout=0.5) as client:
                proxy.stall()
                client.sendall(b"stil")
                with pytest.raises(TimeoutError):
                    client.recv(100)
                proxy.resume()
                client.settimeout(5)
                assert client.recv(100) == b"stil"
                assert proxy.cut_all() == 1
                with pytest.raises(ConnectionResetError):
                    client.recv(100)
            assert (proxy.accepted, proxy.cuts) == (3, 3)
    finally:
        listener.close()


# --- IMAP ------------------------------------------------------------------------------------------------------


def test_imap_cut_mid_fetch_and_while_idle_the_service_reconnects_and_loses_nothing(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    mailbox = imap_user.name
    with running_proxy(imap_user.server.port) as proxy:
        write_config(tmp_path, database_url, imap=imap_user, imap_port=proxy.port, mailbox_name=mailbox,
                     mailbox_extra="batch_size = 4\n", timeout=5.0)
        ok(tmp_path, "init")
        log = tmp_path / "service.log"
        # 12 mails of 100 kB in FETCHes of 4: the cut at 600 kB falls in the middle of the second FETCH.
        proxy.cut_after(600_000, "downstream")
        service = start_service(tmp_path, log)
        try:
            first = [question(i, body_bytes=100_000, tag=mailbox) for i in range(12)]
            append_all(imap_user, first)
            assert proxy.cut_happened.wait(60), "the cut never came"
            wait_until(lambda: stored_count(engine, mailbox) == 12 and unmarked_count(imap_user) == 0, 120,
                       "every mail is stored and marked after the cut")
            assert proxy.accepted >= 2, "it reconnected"

            # A NAT box or a server restart drops every connection while the service waits in IDLE.
            wait_until(lambda: proxy.open_connections >= 1, 30, "the service is connected again")
            connections = proxy.accepted
            assert proxy.cut_all() >= 1
            later = [question(i, tag=mailbox) for i in range(100, 103)]
            append_all(imap_user, later)
            wait_until(lambda: stored_count(engine, mailbox) == 15 and unmarked_count(imap_user) == 0, 120,
                       "the mails after the second cut are stored and marked")
            assert proxy.accepted > connections
        finally:
            text = stop_service(service, log)
    assert "connection lost during UID FETCH" in text
    assert "retrying in" in text, "it waits (backs off) before reconnecting"
    assert Counter(stored_digests(engine, mailbox)) == Counter(sha256(m) for m in first + later)
    assert half_written(engine) == []


def test_a_stalled_imap_server_is_waited_for_then_given_up_on_and_reconnected(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    mailbox = imap_user.name
    with running_proxy(imap_user.server.port) as proxy:
        write_config(tmp_path, database_url, imap=imap_user, imap_port=proxy.port, mailbox_name=mailbox,
                     timeout=3.0)
        ok(tmp_path, "init")
        log = tmp_path / "service.log"
        service = start_service(tmp_path, log)
        try:
            append_all(imap_user, [question(1, tag=mailbox)])
            wait_until(lambda: stored_count(engine, mailbox) == 1, 60, "the first mail is stored")

            # Slow: a server that hangs for half a second (well within the 3 s timeout) is simply waited for.
            proxy.stall()
            append_all(imap_user, [question(2, tag=mailbox)])
            threading.Event().wait(0.5)
            proxy.resume()
            wait_until(lambda: stored_count(engine, mailbox) == 2, 60, "the mail that came during the stall")
            assert proxy.accepted == 1, "no reconnect for a short stall"

            # Dead: a server that stops answering is given up on after the timeout, and dialled again.
            proxy.stall()
            append_all(imap_user, [question(3, tag=mailbox)])
            wait_until(lambda: "retrying in" in log.read_text(), 60, "the service gives up on the silent server")
            proxy.resume()
            wait_until(lambda: stored_count(engine, mailbox) == 3 and unmarked_count(imap_user) == 0, 120,
                       "the mail that came during the long stall is stored and marked")
            assert proxy.accepted >= 2
        finally:
            text = stop_service(service, log)
    assert "timed out" in text
    assert half_written(engine) == []


# --- SMTP ------------------------------------------------------------------------------------------------------


def test_smtp_cut_before_the_end_of_data_the_reply_is_retried_and_arrives_once(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    with running_faulty_server() as server, running_proxy(server.port) as proxy:
        write_config(tmp_path, database_url, imap=imap_user, mailbox_name=imap_user.name, smtp_port=proxy.port,
                     extra="[replies]\nrelay_interval = 0.5\n")
        ok(tmp_path, "init")
        _, outbox_id = reply_queued(tmp_path, imap_user, answer_bytes=200_000)
        log = tmp_path / "service.log"
        # The connection dies when the relay sends DATA: the server never got the message, and the relay knows.
        proxy.cut_at(b"data\r\n", "upstream")
        service = start_service(tmp_path, log, "relay")
        try:
            assert proxy.cut_happened.wait(60), "the cut never came"
            wait_until(lambda: outbox_status(engine, outbox_id) != "sending", 60, "the relay recorded the attempt")
            row = outbox_row(tmp_path, outbox_id)
            assert (row["status"], row["attempts"]) == ("retry", 1), row
            assert "connection lost" in row["lastSmtpReply"]
            assert server.messages == [], "a message cut before its end did not arrive"
            with engine.begin() as connection:
                due = connection.scalar(select(OutboxMessage.next_attempt_at).where(OutboxMessage.id == outbox_id))
                assert due is not None and due > utcnow() + timedelta(seconds=30), "retried after a backoff"
                # The test plays the clock: the backoff (about a minute) has passed.
                connection.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                                   .values(next_attempt_at=utcnow()))
            wait_until(lambda: outbox_status(engine, outbox_id) == "sent", 60, "the retried reply is sent")
        finally:
            stop_service(service, log)
        row = outbox_row(tmp_path, outbox_id)
        assert (row["status"], row["attempts"]) == ("sent", 2)
        assert server.message_ids() == [row["messageId"]], "arrived exactly once"
        assert proxy.accepted == 2, "one connection cut, one new"
    verified(tmp_path)


def test_smtp_cut_after_the_end_of_data_the_reply_is_uncertain_and_never_sent_twice(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    with running_faulty_server() as server, running_proxy(server.port) as proxy:
        write_config(tmp_path, database_url, imap=imap_user, mailbox_name=imap_user.name, smtp_port=proxy.port,
                     extra="[replies]\nrelay_interval = 0.5\n")
        ok(tmp_path, "init")
        _, outbox_id = reply_queued(tmp_path, imap_user)
        log = tmp_path / "service.log"
        # The server gets the end of DATA and accepts the message; its 250 never reaches the relay.
        proxy.cut_at(b"\r\n.\r\n", "upstream", forward=True)
        service = start_service(tmp_path, log, "relay")
        try:
            assert proxy.cut_happened.wait(60), "the cut never came"
            wait_until(lambda: outbox_status(engine, outbox_id) == "uncertain", 60, "the relay recorded the attempt")
            time.sleep(2)  # four more relay rounds: none of them sends it again
        finally:
            stop_service(service, log)
        row = outbox_row(tmp_path, outbox_id)
        assert (row["status"], row["attempts"]) == ("uncertain", 1), row
        assert "may or may not have the message" in row["lastSmtpReply"]
        assert server.message_ids() == [row["messageId"]], "the customer got it once, and only once"
        ok(tmp_path, "outbox", "mark-sent", str(outbox_id), "--as", "beheer@gemeente.nl")
        assert outbox_row(tmp_path, outbox_id)["status"] == "sent"
    verified(tmp_path)


# --- PostgreSQL (its own database: SQLite has no connection to cut) --------------------------------------------


def test_postgres_cut_mid_transaction_during_intake_loses_and_duplicates_nothing(
    tmp_path: Path, postgres_url: str, postgres_proxy: TcpProxy, imap_user: ImapUser
) -> None:
    mailbox = imap_user.name
    engine = make_engine(postgres_url)
    write_config(tmp_path, through(postgres_proxy, postgres_url), imap=imap_user, mailbox_name=mailbox)
    log = tmp_path / "service.log"
    service = start_service(tmp_path, log)
    try:
        # Five mails of 300 kB: the cut at 400 kB falls inside the second mail's INSERT of its raw bytes.
        postgres_proxy.cut_after(400_000, "upstream")
        mails = [question(i, body_bytes=300_000, tag=mailbox) for i in range(5)]
        append_all(imap_user, mails)
        assert postgres_proxy.cut_happened.wait(60), "the cut never came"
        wait_until(lambda: stored_count(engine, mailbox) == 5 and unmarked_count(imap_user) == 0, 120,
                   "every mail is stored and marked after the cut")
    finally:
        text = stop_service(service, log)
    try:
        assert "poll failed" in text and "retrying in" in text
        assert Counter(stored_digests(engine, mailbox)) == Counter(sha256(m) for m in mails)
        assert half_written(engine) == [], "the cut transaction left nothing behind"
    finally:
        engine.dispose()
    verified(tmp_path)


@pytest.mark.parametrize("forward", [False, True], ids=["before-commit", "commit-answer-lost"])
def test_postgres_cut_during_a_reply_decision_leaves_all_or_nothing(
    tmp_path: Path, postgres_url: str, postgres_proxy: TcpProxy, imap_user: ImapUser, forward: bool
) -> None:
    engine = make_engine(postgres_url)
    write_config(tmp_path, through(postgres_proxy, postgres_url), imap=imap_user, mailbox_name=imap_user.name)
    imap_user.append(question(1))
    ok(tmp_path, "poll", "--once")
    (mail,) = json.loads(ok(tmp_path, "queue", "list", "--json"))
    (tmp_path / "antwoord.txt").write_text(ANSWER, encoding="utf-8")
    reply = ("reply", str(mail["id"]), "--text-file", "antwoord.txt", "--as", "anna@gemeente.nl")

    postgres_proxy.cut_at(b"COMMIT", "upstream", forward=forward, after=b"outbox_message")
    cut = kcc_mail(*reply, cwd=tmp_path)
    assert postgres_proxy.cuts == 1, "the decision's COMMIT was cut"
    assert cut.returncode != 0, "the employee is told the decision failed"
    print(f"\nwhat the employee saw: {cut.stderr.strip().splitlines()[-1]}")

    def counts() -> tuple[str, int, int]:
        with engine.connect() as connection:
            state = connection.scalar(select(InboundMail.state).where(InboundMail.id == mail["id"]))
            contacts = connection.scalar(select(func.count()).select_from(Klantcontact))
            outbox = connection.scalar(select(func.count()).select_from(OutboxMessage))
            return str(state), int(contacts or 0), int(outbox or 0)

    try:
        if not forward:  # the COMMIT never arrived: nothing of the decision exists; trying again works
            assert counts() == ("te_beoordelen", 0, 0)
            verified(tmp_path)
            again = kcc_mail(*reply, cwd=tmp_path)
            assert again.returncode == 0, again.stderr
        else:  # the server committed, the answer was lost: it is all there; trying again is refused
            assert counts() == ("geregistreerd", 2, 1)
            again = kcc_mail(*reply, cwd=tmp_path)
            assert again.returncode == 1 and "decided already" in again.stderr, again.stderr
        assert counts() == ("geregistreerd", 2, 1), "one incoming and one answer klantcontact, one reply to send"
    finally:
        engine.dispose()
    verified(tmp_path)


@pytest.mark.parametrize("forward", [False, True], ids=["before-commit", "commit-answer-lost"])
def test_postgres_cut_during_relay_finish_the_reply_ends_sent_or_uncertain_never_sent_twice(
    tmp_path: Path, postgres_url: str, postgres_proxy: TcpProxy, imap_user: ImapUser, forward: bool
) -> None:
    engine = make_engine(postgres_url)
    with running_faulty_server() as server:
        write_config(tmp_path, through(postgres_proxy, postgres_url), imap=imap_user, mailbox_name=imap_user.name,
                     smtp_port=server.port, timeout=3.0, smtp_extra="data_timeout = 3.0\n",
                     extra="[replies]\nrelay_interval = 0.5\nlease_seconds = 8.0\n")  # a lease outlasts a send
        _, outbox_id = reply_queued(tmp_path, imap_user)
        log = tmp_path / "service.log"
        server.hold_data()
        service = start_service(tmp_path, log, "relay")
        try:
            assert server.data_arrived.wait(60), "the relay never sent the reply"
            # The server has the message; the relay waits for its answer. Its next COMMIT is the finish.
            postgres_proxy.cut_at(b"COMMIT", "upstream", forward=forward, after=b"outbox_message")
            server.release()
            assert postgres_proxy.cut_happened.wait(60), "the finish was never cut"
            wait_until(lambda: outbox_status(engine, outbox_id) in ("sent", "uncertain"), 60,
                       "the reply is sent or uncertain")
        finally:
            text = stop_service(service, log)
        assert "relay round failed" in text
        again = ok(tmp_path, "relay", "--once")
        row = outbox_row(tmp_path, outbox_id)
        print(f"\ncut {'after' if forward else 'before'} the COMMIT reached PostgreSQL: the reply is {row['status']}")
        assert row["status"] == ("sent" if forward else "uncertain"), row
        if row["status"] == "uncertain":
            assert "may or may not have the message" in row["lastSmtpReply"]
        assert again.strip() == "sent=0 retry=0 failed=0 uncertain=0", "nothing is sent again by itself"
        assert server.message_ids() == [row["messageId"]], "the server has it exactly once"
    engine.dispose()
    verified(tmp_path)
