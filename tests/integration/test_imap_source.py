"""ImapSource against a real, private Dovecot: what an employee and an operator would check in the mailbox."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.dovecot import ImapUser, PrivateDovecot
from support.smtpserver import SmtpTestServer

from ingest.sources.base import FetchedMail, MailCommandError, MailRef, SourceError
from ingest.sources.imap import ImapSource
from kcc.bootstrap import imap_settings
from kcc.config import MailboxConfig

KEYWORD = "$KccOpgeslagen"
MakeSource = Callable[..., ImapSource]


def mail(n: int, body_bytes: int = 0) -> bytes:
    """A small, distinct RFC 5322 mail with CRLF line ends (as IMAP servers return it)."""
    body = f"Beste gemeente, vraag nummer {n}.\r\n".encode()
    filler = b"".join(b"y" * 76 + b"\r\n" for _ in range(body_bytes // 78))
    return (
        f"From: burger{n}@example.nl\r\nTo: info@gemeente.example\r\nSubject: Vraag {n}\r\n"
        f"Message-ID: <vraag-{n}@example.nl>\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\r\n"
    ).encode() + body + b"\r\n" + filler


@pytest.fixture
def make_source(imap_user: ImapUser) -> Iterator[MakeSource]:
    """Build ImapSources for the test's user (config overrides as keywords); all are closed afterwards."""
    made: list[ImapSource] = []

    def build(user: ImapUser | None = None, *, max_mail_bytes: int = 10_000_000, source_kwargs: Any = None,
              **config: Any) -> ImapSource:
        account = user or imap_user
        source = ImapSource(imap_settings(account.mailbox_config(**config)), max_mail_bytes=max_mail_bytes,
                            **(source_kwargs or {}))
        made.append(source)
        return source

    yield build
    for source in made:
        source.close()


def flags_of(user: ImapUser, folder: str = "INBOX") -> dict[int, set[str]]:
    """The flags per UID as another mail client (the employee's) sees them."""
    client = user.client()
    try:
        client.select_folder(folder, readonly=True)
        response = client.get_flags(client.search("ALL"))
        return {uid: {f.decode() for f in flags} for uid, flags in response.items()}
    finally:
        client.logout()


def fetched(items: Iterator[FetchedMail | MailCommandError]) -> list[FetchedMail]:
    result = list(items)
    errors = [item for item in result if isinstance(item, MailCommandError)]
    assert not errors, errors
    return [item for item in result if isinstance(item, FetchedMail)]


# --- open / list / fetch ------------------------------------------------------------------------------------


def test_open_reports_uidvalidity_uidnext_and_exists(imap_user: ImapUser, make_source: MakeSource) -> None:
    imap_user.append(mail(1))
    imap_user.append(mail(2))

    status = make_source().open()

    assert status.uidvalidity > 0
    assert status.uidnext == 3
    assert status.exists == 2


def test_list_new_is_oldest_first_with_server_sizes(imap_user: ImapUser, make_source: MakeSource) -> None:
    raws = [mail(n, body_bytes=n * 300) for n in range(1, 4)]
    for raw in raws:
        imap_user.append(raw)
    source = make_source()
    source.open()

    refs = source.list_new(0)

    assert [r.uid for r in refs] == [1, 2, 3]
    assert [r.size for r in refs] == [len(raw) for raw in raws]


def test_list_new_only_returns_uids_above_the_high_water_mark(imap_user: ImapUser, make_source: MakeSource) -> None:
    for n in range(3):
        imap_user.append(mail(n))
    source = make_source()
    source.open()

    assert [r.uid for r in source.list_new(2)] == [3]
    # "4:*" matches UID 3 on the server (the highest UID is always in N:*); it is not new.
    assert source.list_new(3) == []
    assert source.list_new(100) == []


def test_fetch_returns_the_exact_bytes_and_leaves_the_mail_unread(imap_user: ImapUser, make_source: MakeSource) -> None:
    raw = mail(7)
    sent_at = datetime.now(UTC).replace(microsecond=0)
    imap_user.append(raw)
    source = make_source()
    source.open()

    [got] = fetched(source.fetch(source.list_new(0)))

    assert got.raw == raw
    assert got.ref.uid == 1
    assert got.internaldate is not None and got.internaldate.tzinfo is not None
    assert abs(got.internaldate - sent_at) < timedelta(seconds=5)
    assert "\\Seen" not in flags_of(imap_user)[1], "BODY.PEEK[] must not mark the mail read for the employee"


def test_a_mail_above_max_mail_bytes_is_still_fetched(imap_user: ImapUser, make_source: MakeSource) -> None:
    big = mail(1, body_bytes=50_000)
    imap_user.append(big)
    source = make_source(max_mail_bytes=10_000)
    source.open()

    [ref] = source.list_new(0)
    [got] = fetched(source.fetch([ref]))

    assert ref.size == len(big) > 10_000
    assert got.raw == big


def test_batches_are_bounded_by_count_and_bytes_and_all_mails_arrive_in_order(
    imap_user: ImapUser, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    raws = [mail(n, body_bytes=2_000) for n in range(40)]
    raws[20] = mail(20, body_bytes=30_000)  # larger than a whole batch: must travel alone
    with imap_user.server.session(imap_user.name) as client:
        client.multiappend("INBOX", raws)
    source = make_source(batch_size=7, source_kwargs={"batch_bytes": 10_000})
    source.open()
    refs = source.list_new(0)

    with caplog.at_level(logging.DEBUG, logger="imapclient.imaplib"):
        got = fetched(source.fetch(refs))

    assert [m.raw for m in got] == raws
    assert [m.ref.uid for m in got] == list(range(1, 41))
    batches = [_uids_in(line) for line in caplog.messages if "BODY.PEEK[]" in line and "FETCH" in line]
    assert sum(len(b) for b in batches) == 40
    assert max(len(b) for b in batches) <= 7
    assert [21] in batches, "the oversized mail is fetched on its own"
    for batch in batches:
        if len(batch) > 1:
            assert sum(len(raws[uid - 1]) for uid in batch) <= 10_000


def _uids_in(logged_command: str) -> list[int]:
    """The UIDs of a logged `UID FETCH 1,2,3 (...)` (imapclient sends explicit lists)."""
    match = re.search(r"UID FETCH ([\d,:]+) ", logged_command)
    assert match, logged_command
    return [int(x) for x in match.group(1).split(",")]


def test_a_mail_expunged_meanwhile_yields_an_error_for_that_mail_only(
    imap_user: ImapUser, make_source: MakeSource
) -> None:
    for n in range(3):
        imap_user.append(mail(n))
    source = make_source()
    source.open()
    refs = source.list_new(0)
    with imap_user.server.session(imap_user.name) as other:
        other.select_folder("INBOX")
        other.delete_messages([2])
        other.expunge()

    results = list(source.fetch(refs))

    assert [type(r) for r in results] == [FetchedMail, MailCommandError, FetchedMail]
    assert "UID 2" in str(results[1])


def test_uidvalidity_changes_when_the_folder_is_deleted_and_recreated(
    imap_user: ImapUser, make_source: MakeSource
) -> None:
    imap_user.append(mail(1), folder="Intake")
    source = make_source(folder="Intake")
    before = source.open()
    source.close()
    imap_user.server.delete_folder(imap_user.name, "Intake")
    imap_user.append(mail(2), folder="Intake")

    after = source.open()

    assert after.uidvalidity != before.uidvalidity
    assert [r.uid for r in source.list_new(0)] == [1]


def test_open_names_the_folder_when_it_does_not_exist(make_source: MakeSource) -> None:
    with pytest.raises(SourceError, match="Bestaatniet"):
        make_source(folder="Bestaatniet").open()


# --- marking ------------------------------------------------------------------------------------------------


def test_keyword_mode_marks_with_the_keyword_keeps_the_mail_and_hides_it_from_list(
    imap_user: ImapUser, make_source: MakeSource
) -> None:
    imap_user.append(mail(1))
    imap_user.append(mail(2), flags=["\\Seen"])  # the employee already read this one
    imap_user.append(mail(3))
    source = make_source()
    source.open()
    refs = source.list_new(0)

    source.mark_processed(refs[:2])

    flags = flags_of(imap_user)
    assert flags[1] == {KEYWORD}
    assert flags[2] == {KEYWORD, "\\Seen"}
    assert flags[3] == set()
    assert [r.uid for r in source.list_new(0)] == [3]


def test_move_mode_moves_to_the_processed_folder_creating_it(imap_user: ImapUser, make_source: MakeSource) -> None:
    for n in range(3):
        imap_user.append(mail(n))
    source = make_source(processed_folder="Verwerkt")
    source.open()
    refs = source.list_new(0)

    source.mark_processed(refs[:2])

    assert sorted(flags_of(imap_user)) == [3]
    moved = flags_of(imap_user, "Verwerkt")
    assert len(moved) == 2
    assert all("\\Seen" not in f for f in moved.values())
    assert [r.uid for r in source.list_new(0)] == [3]


def test_without_move_the_fallback_copies_and_expunges_only_our_mails() -> None:
    with PrivateDovecot(extra_config="imap_capability = IMAP4rev1 UIDPLUS") as server:
        user = server.new_user()
        user.append(mail(1))
        user.append(mail(2), flags=["\\Deleted"])  # an employee's deletion we must not expunge
        source = ImapSource(imap_settings(user.mailbox_config(processed_folder="Verwerkt")), max_mail_bytes=10_000_000)
        source.open()
        [ours, _theirs] = source.list_new(0)

        source.mark_processed([ours])
        source.close()

        assert flags_of(user) == {2: {"\\Deleted"}}
        assert len(flags_of(user, "Verwerkt")) == 1


def test_without_move_and_uidplus_moving_is_refused_and_polling_replaces_idle() -> None:
    with PrivateDovecot(extra_config="imap_capability = IMAP4rev1") as server:
        user = server.new_user()
        user.append(mail(1))
        source = ImapSource(imap_settings(user.mailbox_config(processed_folder="Verwerkt")), max_mail_bytes=10_000_000)
        source.open()
        refs = source.list_new(0)

        with pytest.raises(SourceError, match="neither MOVE nor UIDPLUS"):
            source.mark_processed(refs)
        started = time.monotonic()
        assert source.wait(0.3) is False
        assert time.monotonic() - started >= 0.3
        source.close()
        assert sorted(flags_of(user)) == [1], "nothing was expunged"


# --- security and login -------------------------------------------------------------------------------------


@pytest.fixture
def tls_user(dovecot_tls: PrivateDovecot) -> ImapUser:
    user = dovecot_tls.new_user("tls")
    user.append(mail(1))
    return user


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls_connect_verifying_the_private_certificate(
    tls_user: ImapUser, make_source: MakeSource, security: str
) -> None:
    source = make_source(tls_user, security=security,
                         source_kwargs={"ssl_context": tls_user.server.ssl_context()})

    assert source.open().exists == 1
    assert [r.uid for r in source.list_new(0)] == [1]


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_an_unknown_certificate_is_refused_at_once_with_a_clear_message(
    tls_user: ImapUser, make_source: MakeSource, security: str
) -> None:
    source = make_source(tls_user, security=security)  # system CAs only: our self-signed cert is unknown
    started = time.monotonic()

    with pytest.raises(SourceError, match="certificate could not be verified") as error:
        source.open()

    assert time.monotonic() - started < 2, "a certificate problem is not retried"
    assert f"127.0.0.1:{tls_user.server.ssl_port if security == 'tls' else tls_user.server.port}" in str(error.value)


def test_starttls_to_a_server_without_it_is_refused(make_source: MakeSource) -> None:
    with pytest.raises(SourceError, match="STARTTLS"):
        make_source(security="starttls").open()


def test_a_wrong_password_gives_a_source_error_without_the_password(
    imap_user: ImapUser, make_source: MakeSource, tmp_path: Path
) -> None:
    wrong = "Fout-Wachtwoord-8123"
    secret = tmp_path / "password"
    secret.write_text(wrong)
    source = make_source(password_file=str(secret))

    with pytest.raises(SourceError) as error:
        source.open()

    message = str(error.value)
    assert "login refused" in message and imap_user.name in message and str(secret) in message
    assert wrong not in message
    assert wrong not in repr(error.value.__cause__) and error.value.__cause__ is None


def test_password_from_the_environment(imap_user: ImapUser) -> None:
    config = imap_user.mailbox_config(password_file="", password_env="KCC_TEST_IMAP_PASSWORD")
    source = ImapSource(imap_settings(config, {"KCC_TEST_IMAP_PASSWORD": imap_user.password}), max_mail_bytes=1000)
    try:
        assert source.open().exists == 0
    finally:
        source.close()


def test_xoauth2_login_with_a_token_file(imap_user: ImapUser, make_source: MakeSource, tmp_path: Path) -> None:
    # The private Dovecot checks an XOAUTH2 token against the passdb, so the user's password acts as token.
    token = tmp_path / "token"
    token.write_text(imap_user.password + "\n")
    imap_user.append(mail(1))
    source = make_source(auth="xoauth2", password_file="", token_file=str(token))

    assert source.open().exists == 1


# --- lost connections and reconnects ------------------------------------------------------------------------


def test_connection_dropped_mid_fetch_raises_source_error_and_open_recovers(
    imap_user: ImapUser, make_source: MakeSource
) -> None:
    for n in range(4):
        imap_user.append(mail(n))
    source = make_source(batch_size=1)
    source.open()
    refs = source.list_new(0)
    mails = source.fetch(refs)
    first = next(mails)
    assert isinstance(first, FetchedMail)

    assert imap_user.server.kill_sessions(imap_user.name) >= 1
    with pytest.raises(SourceError, match="connection lost"):
        list(mails)

    status = source.open()
    assert status.exists == 4
    again = source.list_new(0)
    assert again == refs, "nothing was marked, so everything is listed again"
    assert len(fetched(source.fetch(again))) == 4


def test_open_retries_with_backoff_then_names_the_server() -> None:
    with PrivateDovecot() as server:
        user = server.new_user()
        server.stop()
        source = ImapSource(imap_settings(user.mailbox_config()), max_mail_bytes=1000,
                            connect_attempts=3, backoff_base=0.05, backoff_cap=0.1)
        started = time.monotonic()

        with pytest.raises(SourceError) as error:
            source.open()

    message = str(error.value)
    assert f"127.0.0.1:{server.port}" in message and "'test'" in message and "3 tries" in message
    assert "Connection refused" in message
    assert time.monotonic() - started >= 0.05, "it waited between tries"


def test_open_after_a_server_restart_reconnects() -> None:
    with PrivateDovecot() as server:
        user = server.new_user()
        user.append(mail(1))
        source = ImapSource(imap_settings(user.mailbox_config()), max_mail_bytes=1000, backoff_base=0.05,
                            backoff_cap=0.2)
        first = source.open()
        server.restart()  # same ports: a server reboot as the connected client sees it

        again = source.open()

        assert (again.uidvalidity, again.exists) == (first.uidvalidity, 1)
        assert [r.uid for r in source.list_new(0)] == [1]
        source.close()


def test_close_is_idempotent_and_a_closed_source_must_be_opened_again(make_source: MakeSource) -> None:
    source = make_source()
    source.open()
    source.close()
    source.close()

    with pytest.raises(SourceError, match="not connected"):
        source.list_new(0)
    assert source.open().exists == 0


# --- waiting for mail ---------------------------------------------------------------------------------------


def test_idle_wakes_within_a_second_when_another_client_appends(imap_user: ImapUser, make_source: MakeSource) -> None:
    source = make_source()
    source.open()
    assert source.list_new(0) == []
    deliver = threading.Timer(0.3, imap_user.append, args=(mail(1),))
    deliver.start()
    started = time.monotonic()

    woke = source.wait(10)

    elapsed = time.monotonic() - started
    deliver.join()
    assert woke is True
    assert elapsed < 2.0, f"IDLE took {elapsed:.2f}s to notice the new mail"
    assert [r.uid for r in source.list_new(0)] == [1]


def test_idle_times_out_quietly_without_mail(make_source: MakeSource) -> None:
    source = make_source()
    source.open()
    started = time.monotonic()

    assert source.wait(0.5) is False
    assert 0.45 <= time.monotonic() - started < 2
    assert source.list_new(0) == [], "the connection is usable after IDLE"


def test_mail_that_arrived_since_listing_wakes_at_once(imap_user: ImapUser, make_source: MakeSource) -> None:
    imap_user.append(mail(1))
    source = make_source()
    source.open()
    refs: list[MailRef] = source.list_new(0)
    imap_user.append(mail(2))
    source.mark_processed(refs)  # the server may announce the new mail in this command's response
    started = time.monotonic()

    assert source.wait(10) is True
    assert time.monotonic() - started < 1


def test_a_mail_that_already_carries_the_keyword_does_not_keep_waking_us(
    imap_user: ImapUser, make_source: MakeSource
) -> None:
    source = make_source()
    source.open()
    assert source.list_new(0) == []
    imap_user.append(mail(1), flags=[KEYWORD])  # e.g. put back by a colleague after it was processed
    source.wait(0.5)  # the server may or may not announce it during IDLE
    assert source.list_new(0) == [], "not new to us"
    started = time.monotonic()

    assert source.wait(0.5) is False, "no busy loop on a mail that is already processed"
    assert time.monotonic() - started >= 0.45


def test_a_port_that_is_not_imap_gives_a_source_error(imap_user: ImapUser, smtp_server: SmtpTestServer) -> None:
    config = imap_user.mailbox_config(port=smtp_server.port)
    source = ImapSource(imap_settings(config), max_mail_bytes=1000, connect_attempts=2, backoff_base=0.01,
                        backoff_cap=0.01)

    with pytest.raises(SourceError, match=rf"127\.0\.0\.1:{smtp_server.port}.*2 tries.*220"):
        source.open()


def test_a_password_with_non_ascii_characters_logs_in(dovecot: PrivateDovecot, tmp_path: Path) -> None:
    password = "Wachtwoord-é€ß-42"
    dovecot.add_user("umlaut-gebruiker", password)
    secret = tmp_path / "wachtwoord"
    secret.write_text(password, encoding="utf-8")
    config = MailboxConfig(name="info", kind="imap", host=dovecot.host, port=dovecot.port, security="none",
                           username="umlaut-gebruiker", password_file=str(secret), timeout=5)
    source = ImapSource(imap_settings(config), max_mail_bytes=1000)
    try:
        assert source.open().uidvalidity > 0, "IMAP LOGIN cannot carry it; AUTHENTICATE PLAIN (UTF-8) does"
    finally:
        source.close()
