"""LMTP intake over a real socket: smtplib.LMTP against our aiosmtpd server, on SQLite and PostgreSQL.

Each test serves one LMTP mailbox of its own (its own name, so the module's database holds every test's mail
apart) and talks to it as an MTA does.
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from support import lmtp
from support.dovecot import free_port

from kcc.bootstrap import App, build_app
from kcc.config import MailboxConfig, StorageConfig
from kcc.lmtp import LmtpListener
from store.blobs import get_blob
from store.engine import make_engine
from store.mail import InboundMail, MailboxState
from store.schema import upgrade

INFO = "info@gemeente.example"
WMO = "wmo@gemeente.example"


def mail(subject: str, body: str = "Goedemorgen, ik heb een vraag over mijn aanvraag.") -> bytes:
    lines = ["From: Karel van der Wittewiek <karel@example.nl>", f"To: {INFO}", f"Subject: {subject}",
             "Date: Mon, 23 Nov 2026 09:00:00 +0100", "Content-Type: text/plain; charset=utf-8", ""]
    return ("\r\n".join(lines) + "\r\n" + body + "\r\n").encode()


def lmtp_mailbox(name: str, **keys: object) -> MailboxConfig:
    values: dict[str, object] = {"listen": f"127.0.0.1:{free_port()}", "recipients": (INFO, WMO)}
    values.update(keys)
    return MailboxConfig(name=name, kind="lmtp", **values)  # type: ignore[arg-type]


def serve(app: App, mailbox: MailboxConfig, **storage: int) -> LmtpListener:
    config = replace(app.config, mailboxes=(mailbox,), storage=StorageConfig(**storage))
    listener = LmtpListener(replace(app, config=config), mailbox)
    listener.start()
    return listener


@pytest.fixture
def mailbox_name(request: pytest.FixtureRequest) -> str:
    return hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def listener(app: App, mailbox_name: str) -> Iterator[LmtpListener]:
    server = serve(app, lmtp_mailbox(mailbox_name))
    yield server
    server.stop()


def port_of(listener: LmtpListener) -> int:
    return int(listener.server.address[1])


def stored(app: App, mailbox: str) -> list[InboundMail]:
    with app.uow() as uow:
        query = select(InboundMail).where(InboundMail.mailbox == mailbox).order_by(InboundMail.id)
        return list(uow.session.scalars(query))


def test_a_mail_is_answered_per_recipient_once_stored_bytes_and_envelope_as_received(
    app: App, listener: LmtpListener, mailbox_name: str,
) -> None:
    raw = mail("Vraag over mijn paspoort")
    outcome = lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO, "iemand@elders.example", WMO], raw)

    assert outcome.refused == {"iemand@elders.example": (550, "5.1.1 no kcc-mail mailbox accepts this recipient")}
    assert outcome.codes == [250, 250], "one reply per accepted recipient"
    [row] = stored(app, mailbox_name)
    assert all(f"stored as mail {row.id}" in reply for _, reply in outcome.replies)
    assert row.state == "te_beoordelen" and row.subject == "Vraag over mijn paspoort"
    assert (row.envelope_from, row.envelope_to, row.client_address) == ("karel@example.nl", [INFO, WMO], "127.0.0.1")
    assert row.uid is None and row.uidvalidity is None
    with app.uow() as uow:
        assert get_blob(uow.session, row.raw_sha256) == raw, "stored byte for byte, no Received header added"


def test_dot_stuffed_lines_and_8bit_bytes_are_stored_as_the_mta_meant_them(
    app: App, listener: LmtpListener, mailbox_name: str,
) -> None:
    raw = mail("Punt", body=".begint met een punt\r\n..twee punten\r\nTschüß, ça va — 8 bit") .replace(
        "ü".encode(), b"\xfc")  # latin-1 bytes in a mail that says utf-8: data, not an error
    outcome = lmtp.send("127.0.0.1", port_of(listener), "", [INFO], raw)  # MAIL FROM:<> as for a bounce
    assert outcome.codes == [250]
    [row] = stored(app, mailbox_name)
    assert row.envelope_from == ""
    with app.uow() as uow:
        assert get_blob(uow.session, row.raw_sha256) == raw


def test_a_retry_of_the_same_bytes_is_acknowledged_without_a_second_row(
    app: App, listener: LmtpListener, mailbox_name: str,
) -> None:
    raw = mail("Tweemaal afgeleverd")
    client = lmtp.connect("127.0.0.1", port_of(listener))
    first = lmtp.deliver(client, "karel@example.nl", [INFO], raw)
    second = lmtp.deliver(client, "karel@example.nl", [INFO, WMO], raw)  # the MTA lost our 250 and retries
    other = lmtp.deliver(client, "karel@example.nl", [INFO], mail("Een andere vraag"))
    client.quit()

    assert first.codes == [250] and second.codes == [250, 250] and other.codes == [250]
    assert all("already stored" in reply for _, reply in second.replies)
    assert [row.subject for row in stored(app, mailbox_name)] == ["Tweemaal afgeleverd", "Een andere vraag"]


def test_too_many_recipients_are_refused_with_452_and_the_mail_still_stored_once(
    app: App, mailbox_name: str,
) -> None:
    listener = serve(app, lmtp_mailbox(mailbox_name, max_recipients=1))
    try:
        outcome = lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO, WMO], mail("Twee"))
    finally:
        listener.stop()
    assert outcome.refused[WMO][0] == 452 and outcome.codes == [250]
    assert len(stored(app, mailbox_name)) == 1


def test_a_mail_over_max_message_bytes_is_refused_552_for_each_recipient_and_not_stored(
    app: App, mailbox_name: str,
) -> None:
    listener = serve(app, lmtp_mailbox(mailbox_name, max_message_bytes=4000))
    try:
        client = lmtp.connect("127.0.0.1", port_of(listener))
        big = lmtp.deliver(client, "karel@example.nl", [INFO, WMO], mail("Groot", body=("x" * 70 + "\r\n") * 80))
        small = lmtp.deliver(client, "karel@example.nl", [INFO], mail("Klein"))  # the session goes on
        client.quit()
    finally:
        listener.stop()
    assert big.codes == [552, 552], "a refusal after DATA is repeated for each recipient"
    assert small.codes == [250]
    assert [row.subject for row in stored(app, mailbox_name)] == ["Klein"]


def test_a_mail_over_storage_max_mail_bytes_and_with_a_long_line_is_kept_in_quarantine_and_answered_250(
    app: App, mailbox_name: str,
) -> None:
    listener = serve(app, lmtp_mailbox(mailbox_name), max_mail_bytes=1000)
    try:
        outcome = lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO],
                            mail("Te groot voor de opslag", body="tekst " * 400))  # one 2,400-byte line
    finally:
        listener.stop()
    assert outcome.codes == [250]
    [row] = stored(app, mailbox_name)
    assert (row.state, row.reason) == ("quarantaine", "too_large")


def test_a_connection_cut_in_the_middle_of_data_stores_nothing(
    app: App, listener: LmtpListener, mailbox_name: str,
) -> None:
    with socket.create_connection(("127.0.0.1", port_of(listener)), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        for command in (b"LHLO mta.gemeente.example", b"MAIL FROM:<karel@example.nl>", f"RCPT TO:<{INFO}>".encode(),
                        b"DATA"):
            sock.sendall(command + b"\r\n")
            while (line := reader.readline())[3:4] == b"-":
                pass
        assert line.startswith(b"354")
        sock.sendall(mail("Halverwege")[:120])
    time.sleep(0.5)
    assert stored(app, mailbox_name) == []
    assert lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO], mail("Daarna")).codes == [250]
    assert [row.subject for row in stored(app, mailbox_name)] == ["Daarna"]


def test_connections_over_max_connections_get_421_and_idle_ones_are_closed(app: App, mailbox_name: str) -> None:
    listener = serve(app, lmtp_mailbox(mailbox_name, max_connections=1, idle_timeout=1.0))
    try:
        first = lmtp.connect("127.0.0.1", port_of(listener))
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.LMTP("127.0.0.1", port_of(listener), timeout=10)
        assert refused.value.smtp_code == 421
        time.sleep(2.0)  # longer than idle_timeout
        with pytest.raises(smtplib.SMTPServerDisconnected):
            first.noop()
        again = lmtp.connect("127.0.0.1", port_of(listener))  # the idle one was closed: there is room again
        assert lmtp.deliver(again, "karel@example.nl", [INFO], mail("Na de wachttijd")).codes == [250]
        again.quit()
    finally:
        listener.stop()


def test_a_unix_socket_gets_its_mode_and_is_removed_at_stop(app: App, mailbox_name: str, tmp_path: Path) -> None:
    path = tmp_path / "lmtp.sock"
    listener = serve(app, lmtp_mailbox(mailbox_name, listen=f"unix:{path}", socket_mode=0o660))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert listener.where == f"unix:{path}"
        outcome = lmtp.send(str(path), 0, "karel@example.nl", [INFO], mail("Via de socket"))
        assert outcome.codes == [250]
        [row] = stored(app, mailbox_name)
        assert row.client_address == "unix"
    finally:
        listener.stop()
    assert not path.exists()


def test_an_address_in_use_stops_the_start_with_what_to_change(app: App, listener: LmtpListener) -> None:
    from kcc.errors import ConfigurationError

    taken = replace(listener.mailbox, name="tweede")
    with pytest.raises(ConfigurationError, match=r"cannot listen for LMTP on 127\.0\.0\.1:\d+ .*set another listen"):
        LmtpListener(app, taken)


def test_a_delivery_is_noted_for_status(app: App, listener: LmtpListener, mailbox_name: str) -> None:
    assert lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO], mail("Voor de status")).codes == [250]
    with app.uow() as uow:
        state = uow.session.get(MailboxState, mailbox_name)
        assert state is not None and state.last_success_at is not None and state.last_error == ""


def test_a_database_outage_is_answered_451_and_the_retry_stores_the_mail(
    postgres_server: str, tmp_path: Path,
) -> None:
    """PostgreSQL refuses every connection to the database for a while (as when it restarts): the MTA hears 451,
    keeps the mail, and its retry after the outage is stored once. (SQLite has no server that can go away.)"""
    from conftest import create_postgres_database, drop_postgres_database, make_config

    url = create_postgres_database(postgres_server)
    engine = make_engine(url)
    database = engine.url.database
    try:
        upgrade(engine)
        app = build_app(make_config(url, tmp_path), engine=engine)
        listener = serve(app, lmtp_mailbox("storing"))
        admin = make_engine(postgres_server)
        try:
            raw = mail("Tijdens de storing")
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": database})
                during = lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO, WMO], raw)
                connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
            assert during.codes == [451, 451]
            after = lmtp.send("127.0.0.1", port_of(listener), "karel@example.nl", [INFO, WMO], raw)
            assert after.codes == [250, 250]
            assert [row.subject for row in stored(app, "storing")] == ["Tijdens de storing"]
        finally:
            listener.stop()
            admin.dispose()
    finally:
        engine.dispose()
        drop_postgres_database(postgres_server, url)


def test_a_stop_lets_the_mail_being_stored_finish_with_250_and_answers_a_new_one_451(
    app: App, engine: Engine, mailbox_name: str,
) -> None:
    """While a mail waits for a locked database, the service is told to stop: that mail is still committed and
    answered 250; a transaction that reaches DATA after the stop began is answered 451 (the MTA keeps it)."""
    listener = serve(app, lmtp_mailbox(mailbox_name))
    port = port_of(listener)
    outcomes: dict[str, lmtp.Outcome] = {}
    lock = engine.connect()
    if engine.dialect.name == "sqlite":
        lock.execute(text("SELECT 1"))  # kcc-mail's engine begins with BEGIN IMMEDIATE: the write lock
    else:
        lock.execute(text("LOCK TABLE inbound_mail IN SHARE ROW EXCLUSIVE MODE"))
    stopper = threading.Thread(target=listener.stop)
    try:
        first = threading.Thread(target=lambda: outcomes.setdefault(
            "first", lmtp.send("127.0.0.1", port, "karel@example.nl", [INFO], mail("Tijdens het stoppen"))))
        first.start()
        late = lmtp.connect("127.0.0.1", port)
        late.mail("karel@example.nl")
        late.rcpt(INFO)
        time.sleep(0.5)  # the first mail is now waiting for the lock
        stopper.start()
        time.sleep(0.5)  # the stop has begun: it waits for the first mail
        code, reply = late.data(mail("Na het stoppen"))
        assert (code, reply.decode()) == (451, "4.3.2 kcc-mail is stopping; try again later")
    finally:
        lock.rollback()
        lock.close()
    first.join(timeout=60)
    stopper.join(timeout=60)
    assert outcomes["first"].codes == [250]
    assert [row.subject for row in stored(app, mailbox_name)] == ["Tijdens het stoppen"]


def test_check_names_where_an_lmtp_mailbox_listens_and_poll_leaves_it_to_the_mta(app: App, mailbox_name: str) -> None:
    from kcc.polling import poll_once
    from kcc.usecases.check import check_mailbox

    mailbox = lmtp_mailbox(mailbox_name, listen="127.0.0.1:2424", recipients=(INFO,))
    configured = replace(app, config=replace(app.config, mailboxes=(mailbox,)))
    result = check_mailbox(configured, mailbox_name)
    assert result.ok and result.detail == ("LMTP on 127.0.0.1:2424 for 1 recipient: `kcc-mail run` listens there, "
                                           "the MTA delivers")
    summary, unreachable = poll_once(configured, [mailbox])
    assert (summary.line(), unreachable) == ("fetched=0 stored=0 quarantined=0 duplicates=0", [])
