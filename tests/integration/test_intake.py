"""Intake against the real Dovecot: every mail stored exactly once, parsed or quarantined, and only then marked."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from support.dbfaults import MESSAGE, refuse_inserts
from support.dovecot import ImapUser

from ingest.poller import Poller
from ingest.sources.base import SourceError
from kcc.bootstrap import App, build_app
from kcc.config import StorageConfig
from kcc.polling import make_poller, poll_once, process_owner
from kcc.usecases.intake import acquire_lease, release_lease
from kcc.usecases.review_queue import list_mails, show_mail
from store.blobs import get_blob
from store.mail import InboundMail, MailboxState

KEYWORD = "$KccOpgeslagen"


def mail(subject: str, body: str = "Goedemorgen, ik heb een vraag.", **headers: str) -> bytes:
    lines = [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines = ["From: Karel van der Wittewiek <karel@example.nl>", "To: info@gemeente.nl", f"Subject: {subject}",
             "Date: Mon, 23 Nov 2026 09:00:00 +0100", *lines, "Content-Type: text/plain; charset=utf-8", ""]
    return ("\r\n".join(lines) + "\r\n" + body + "\r\n").encode()


@pytest.fixture
def intake(engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser) -> Iterator[App]:
    """An app whose one mailbox is this test's own fresh IMAP user (the mailbox name is the user's name)."""
    from conftest import make_config

    config = make_config(
        database_url, tmp_path, mailboxes=(imap_user.mailbox_config(name=imap_user.name),),
        storage=StorageConfig(max_mail_bytes=25 * 1024 * 1024),
    )
    yield build_app(config, engine=engine)


def stored(app: App) -> list[InboundMail]:
    with app.uow() as uow:
        mailbox = app.config.mailboxes[0].name
        query = select(InboundMail).where(InboundMail.mailbox == mailbox).order_by(InboundMail.id)
        return list(uow.session.scalars(query))


def server_mails(user: ImapUser, folder: str = "INBOX") -> dict[int, tuple[str, set[str]]]:
    """UID → (sha256 of the bytes as the server gives them, flags), read without setting \\Seen."""
    client = user.client()
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        result = {}
        for start in range(0, len(uids), 100):
            for uid, data in client.fetch(uids[start:start + 100], ["BODY.PEEK[]", "FLAGS"]).items():
                flags = {f.decode() for f in data[b"FLAGS"]}
                result[uid] = (hashlib.sha256(data[b"BODY[]"]).hexdigest(), flags)
        return result
    finally:
        client.logout()


def poll(app: App) -> str:
    summary, unreachable = poll_once(app, app.config.mailboxes)
    assert unreachable == []
    return summary.line()


def test_a_mail_is_stored_parsed_queued_and_then_marked_processed(intake: App, imap_user: ImapUser) -> None:
    imap_user.append(mail("Vraag over de afvalkalender", Message_ID="<vraag-1@example.nl>"))
    assert poll(intake) == "fetched=1 stored=1 quarantined=0 duplicates=0"

    (row,) = stored(intake)
    assert (row.state, row.message_id) == ("te_beoordelen", "<vraag-1@example.nl>")
    assert row.from_address == "karel@example.nl"
    assert row.subject == "Vraag over de afvalkalender"
    assert "ik heb een vraag" in row.text_body
    ((sha, flags),) = server_mails(imap_user).values()
    assert KEYWORD in flags and "\\Seen" not in flags  # the employee still sees it as unread
    with intake.uow() as uow:
        assert hashlib.sha256(get_blob(uow.session, row.raw_sha256)).hexdigest() == sha == row.raw_sha256

    queued = list_mails(intake.uow(), mailbox=imap_user.name)
    assert [(m["messageId"], m["state"], m["attachments"]) for m in queued] == [
        ("<vraag-1@example.nl>", "te_beoordelen", 0)
    ]
    assert poll(intake) == "fetched=0 stored=0 quarantined=0 duplicates=0"


def test_the_whole_corpus_is_stored_exactly_once(intake: App, imap_user: ImapUser, corpus: Path) -> None:
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and "_meta" not in p.parts and p.name != "README.md")
    refused = 0
    client = imap_user.client()
    for path in files:
        try:
            client.append("INBOX", path.read_bytes())
        except Exception:  # the server may refuse a mail; then it never was in the mailbox
            refused += 1
    client.logout()
    assert refused < len(files) // 20

    poll(intake)
    on_server = server_mails(imap_user)
    rows = stored(intake)
    assert len(on_server) == len(files) - refused
    assert sorted(r.raw_sha256 for r in rows) == sorted({sha for sha, _ in on_server.values()})
    assert all(KEYWORD in flags and "\\Seen" not in flags for _, flags in on_server.values())
    assert {r.state for r in rows} <= {"te_beoordelen", "quarantaine"}
    assert sum(r.state == "te_beoordelen" for r in rows) > 0.9 * len(rows)

    assert poll(intake) == "fetched=0 stored=0 quarantined=0 duplicates=0"
    assert len(stored(intake)) == len(rows)


def test_mails_without_or_with_shared_message_ids_are_all_kept(intake: App, imap_user: ImapUser) -> None:
    imap_user.append(mail("Geen Message-ID"))
    imap_user.append(mail("Eerste", Message_ID="<zelfde@example.nl>"))
    imap_user.append(mail("Tweede", Message_ID="<zelfde@example.nl>"))
    assert poll(intake) == "fetched=3 stored=3 quarantined=0 duplicates=0"
    rows = stored(intake)
    assert [r.message_id for r in rows[1:]] == ["<zelfde@example.nl>"] * 2
    assert rows[0].message_id_synthetic and rows[0].message_id.startswith("<")


def test_the_same_bytes_twice_are_stored_once_and_both_marked(intake: App, imap_user: ImapUser) -> None:
    raw = mail("Twee keer verstuurd", Message_ID="<dubbel@example.nl>")
    imap_user.append(raw)
    imap_user.append(raw)
    assert poll(intake) == "fetched=2 stored=1 quarantined=0 duplicates=1"
    assert len(stored(intake)) == 1
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user).values())


def test_hostile_mails_end_stored(intake: App, imap_user: ImapUser) -> None:
    nul = mail("Met NUL", body="tekst\x00met nul")
    passwd = (
        b"From: a@example.nl\r\nSubject: bijlage\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nzie bijlage\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=\"../../etc/passwd\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\ncm9vdDp4OjA6MA==\r\n--b--\r\n"
    )
    eight_bit = "From: José <jose@example.nl>\r\nSubject: Aanvraag rijbewijs — spoed ë\r\n\r\nTekst\r\n".encode()
    nested = b"From: a@example.nl\r\nSubject: diep\r\nMIME-Version: 1.0\r\n"
    nested += b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(200))
    nested += b"Content-Type: text/plain\r\n\r\nbodem\r\n"
    for raw in (nul, passwd, eight_bit, nested):
        imap_user.append(raw)
    summary = poll(intake)
    assert summary.startswith("fetched=4 ")
    rows = stored(intake)
    assert len(rows) == 4
    by_subject = {r.subject: r for r in rows}
    assert "\x00" not in by_subject["Met NUL"].text_body
    attachment_names = [a["bestandsnaam"] for a in show_mail(intake.uow(), by_subject["bijlage"].id)["attachmentList"]]
    assert attachment_names and all("/" not in n and ".." not in n for n in attachment_names)
    assert by_subject["Aanvraag rijbewijs — spoed ë"].from_name == "José"
    deep = next(r for r in rows if r.subject == "diep")
    assert deep.state == "quarantaine" and deep.reason == "limits"
    assert "depth" in deep.error or "nest" in deep.error


def test_a_mail_over_the_size_limit_is_stored_and_quarantined(intake: App, imap_user: ImapUser) -> None:
    big = mail("Grote bijlage", body="A" * 76 + "\r\n") + (b"B" * 76 + b"\r\n") * (30 * 1024 * 1024 // 78)
    imap_user.append(big)
    assert poll(intake) == "fetched=1 stored=0 quarantined=1 duplicates=0"
    (row,) = stored(intake)
    assert (row.state, row.reason, row.size) == ("quarantaine", "too_large", len(big))
    assert row.subject == "Grote bijlage"  # the reviewer still sees what it is about
    assert "max_mail_bytes" in row.error


def test_a_uidvalidity_change_imports_nothing_twice(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser
) -> None:
    from conftest import make_config

    mailbox = imap_user.mailbox_config(name=imap_user.name, folder="Aanvragen")
    app = build_app(make_config(database_url, tmp_path, mailboxes=(mailbox,)), engine=engine)
    first, second = mail("Een", Message_ID="<een@x>"), mail("Twee", Message_ID="<twee@x>")
    client = imap_user.client()
    client.create_folder("Aanvragen")
    imap_user.append(first, folder="Aanvragen")
    poll(app)
    client.delete_folder("Aanvragen")  # recreated, it gets a new UIDVALIDITY
    client.create_folder("Aanvragen")
    imap_user.append(first, folder="Aanvragen")
    imap_user.append(second, folder="Aanvragen")
    assert poll(app) == "fetched=2 stored=1 quarantined=0 duplicates=1"
    assert [r.subject for r in stored(app)] == ["Een", "Twee"]
    new_uidvalidity = client.select_folder("Aanvragen", readonly=True)[b"UIDVALIDITY"]
    client.logout()
    with app.uow() as uow:
        state = uow.session.get(MailboxState, imap_user.name)
        assert state is not None and state.uidvalidity == new_uidvalidity
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user, "Aanvragen").values())


def test_a_rescanned_backlog_goes_through_the_parse_workers_and_stores_only_the_new_mails(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser
) -> None:
    """A folder recreated with 40 stored mails among 12 new ones: the known ones pass the workers' chunks unparsed,
    in order with the new ones, and each new mail is stored once with its own subject."""
    from conftest import make_config

    mailbox = imap_user.mailbox_config(name=imap_user.name, folder="Archief")
    app = build_app(make_config(database_url, tmp_path, mailboxes=(mailbox,)), engine=engine)
    known = [mail(f"Bekend {i}", Message_ID=f"<bekend-{i}@x>") for i in range(40)]
    client = imap_user.client()
    client.create_folder("Archief")
    client.multiappend("Archief", known)
    assert poll(app) == "fetched=40 stored=40 quarantined=0 duplicates=0"
    client.delete_folder("Archief")
    client.create_folder("Archief")
    mixed = [*known[:20], *(mail(f"Nieuw {i}", Message_ID=f"<nieuw-{i}@x>") for i in range(12)), *known[20:]]
    client.multiappend("Archief", mixed)
    client.logout()
    assert poll(app) == "fetched=52 stored=12 quarantined=0 duplicates=40"
    subjects = [r.subject for r in stored(app)]
    assert sorted(subjects) == sorted([*(f"Bekend {i}" for i in range(40)), *(f"Nieuw {i}" for i in range(12))])
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user, "Archief").values())


def test_a_connection_dropped_mid_fetch_loses_nothing(intake: App, imap_user: ImapUser) -> None:
    for i in range(30):
        imap_user.append(mail(f"Mail {i}", body="x" * 200_000))
    poller = make_poller(intake, intake.config.mailboxes[0], process_owner())
    source = intake.config.mailboxes[0]
    killed = False

    original_fetch = poller._source.fetch

    def fetch_and_cut(refs):  # type: ignore[no-untyped-def]
        nonlocal killed
        for i, item in enumerate(original_fetch(refs)):
            if i == 5 and not killed:
                killed = imap_user.server.kill_sessions(imap_user.name) > 0
            yield item

    poller._source.fetch = fetch_and_cut  # type: ignore[method-assign]
    with pytest.raises(SourceError):
        poller.run_once()
    assert killed
    poller.close()
    assert source.name == imap_user.name
    poll(intake)
    rows = stored(intake)
    assert sorted(r.subject for r in rows) == sorted(f"Mail {i}" for i in range(30))
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user).values())


def test_a_mail_whose_row_the_database_refuses_ends_in_quarantine_and_the_others_go_on(
    intake: App, imap_user: ImapUser
) -> None:
    for subject in ("Voor", "Weiger mij", "Na"):
        imap_user.append(mail(subject))
    refused = "NEW.subject = 'Weiger mij' AND NEW.state = 'te_beoordelen'"  # the parsed row, not the quarantined one
    with refuse_inserts(intake.engine, "inbound_mail", refused):
        assert poll(intake) == "fetched=3 stored=2 quarantined=1 duplicates=0"
    rows = stored(intake)
    assert [(r.subject, r.state) for r in rows] == [
        ("Voor", "te_beoordelen"), ("Weiger mij", "quarantaine"), ("Na", "te_beoordelen")
    ]
    assert rows[1].reason == "internal_error" and MESSAGE in rows[1].error
    marked = {sha for sha, flags in server_mails(imap_user).values() if KEYWORD in flags}
    assert marked == {r.raw_sha256 for r in rows}, "each marked, after its commit"
    assert poll(intake) == "fetched=0 stored=0 quarantined=0 duplicates=0"


def test_two_processes_on_one_mailbox_store_each_mail_once(intake: App, imap_user: ImapUser) -> None:
    for i in range(40):
        imap_user.append(mail(f"Gelijktijdig {i}", Message_ID=f"<tegelijk-{i}@example.nl>"))
    mailbox = intake.config.mailboxes[0]
    pollers = [make_poller(intake, mailbox, f"proces-{n}") for n in range(2)]
    start = threading.Barrier(2)
    summaries: list[str] = []

    def poll_as(poller: Poller) -> None:
        start.wait()
        summaries.append(poller.run_once().line())
        poller.close()

    threads = [threading.Thread(target=poll_as, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(r.subject for r in stored(intake)) == sorted(f"Gelijktijdig {i}" for i in range(40))
    assert "fetched=0 stored=0 quarantined=0 duplicates=0" in summaries  # the lease kept the second one out
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user).values())


def test_a_standby_instance_waits_quietly_and_takes_over_when_the_lease_is_given_up(
    intake: App, imap_user: ImapUser, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox = replace(intake.config.mailboxes[0], poll_interval=0.1)
    other = "kcc02:77:actief01"  # a live instance on another host holds the mailbox
    assert acquire_lease(intake.uow(), mailbox.name, other, seconds=3600) is not None
    imap_user.append(mail("Wacht op de overname"))
    stop = threading.Event()
    poller = make_poller(intake, mailbox, process_owner(), stop=stop)
    standby = threading.Thread(target=poller.run_forever)
    with caplog.at_level(logging.INFO, logger="ingest"):
        standby.start()
        try:
            time.sleep(1.0)  # about ten rounds: each only asks for the lease
            assert poller.standing_by and stored(intake) == []
            release_lease(intake.uow(), mailbox.name, other)  # the active instance stops cleanly
            deadline = time.monotonic() + 20
            while not stored(intake) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            standby.join(timeout=30)
    assert [r.subject for r in stored(intake)] == ["Wacht op de overname"]
    ours = [r for r in caplog.records if r.name.startswith("ingest")]
    assert [r for r in ours if r.levelno >= logging.WARNING] == []
    assert [r.getMessage() for r in ours if "another process" in r.getMessage()] == [
        f"mailbox={mailbox.name} is polled by another process; this one stands by and takes over when that "
        "process's lease runs out"
    ]
    assert f"mailbox={mailbox.name} taken over from the other process" in [r.getMessage() for r in ours]


def test_a_refused_login_is_recorded_for_status(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser
) -> None:
    from conftest import make_config

    wrong = tmp_path / "verkeerd-wachtwoord"
    wrong.write_text("dit-is-niet-het-wachtwoord")
    mailbox = imap_user.mailbox_config(name=imap_user.name, password_file=str(wrong))
    app = build_app(make_config(database_url, tmp_path, mailboxes=(mailbox,)), engine=engine)
    _, unreachable = poll_once(app, app.config.mailboxes)
    assert len(unreachable) == 1 and imap_user.name in unreachable[0]
    with app.uow() as uow:
        state = uow.session.get(MailboxState, imap_user.name)
        assert state is not None and state.last_success_at is None
        assert "login" in state.last_error.lower() or "auth" in state.last_error.lower()
        assert "dit-is-niet-het-wachtwoord" not in state.last_error


def test_mails_are_committed_in_groups_and_each_group_is_marked_only_after_its_commit(
    intake: App, imap_user: ImapUser
) -> None:
    for i in range(12):
        imap_user.append(mail(f"Groep {i}"))
    mailbox = replace(intake.config.mailboxes[0], commit_group_mails=5, commit_group_ms=60_000.0)
    poller = make_poller(intake, mailbox, process_owner())
    ledger, source = poller._ledger, poller._source
    groups: list[int] = []
    marked: list[int] = []
    original_store_group, original_mark = ledger.store_group, source.mark_processed

    def store_group(mailbox_name, mails, uidvalidity):  # type: ignore[no-untyped-def]
        groups.append(len(mails))
        return original_store_group(mailbox_name, mails, uidvalidity)

    def mark_processed(refs):  # type: ignore[no-untyped-def]
        committed = {r.uid for r in stored(intake)}  # a session of its own: sees committed rows only
        assert {ref.uid for ref in refs} <= committed, "a mail was marked before the commit that stored it"
        marked.extend(ref.uid for ref in refs)
        original_mark(refs)

    ledger.store_group = store_group  # type: ignore[method-assign]
    source.mark_processed = mark_processed  # type: ignore[method-assign]
    try:
        assert poller.run_once().line() == "fetched=12 stored=12 quarantined=0 duplicates=0"
    finally:
        poller.close()
    assert groups == [5, 5, 2], "up to commit_group_mails per transaction, the rest at the end of the FETCH"
    assert sorted(marked) == sorted(r.uid for r in stored(intake))
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user).values())


def test_a_mail_stored_before_does_not_cost_its_group_anything(intake: App, imap_user: ImapUser) -> None:
    """A mail stored before (a crash between commit and mark) is a duplicate inside its group; the others are stored."""
    imap_user.append(mail("Al bekend"))
    assert poll(intake) == "fetched=1 stored=1 quarantined=0 duplicates=0"
    client = imap_user.client()
    client.select_folder("INBOX")
    client.remove_flags(client.search(["ALL"]), [KEYWORD])  # as after a crash between commit and mark
    client.logout()
    with intake.uow() as uow:
        uow.session.get(MailboxState, imap_user.name).high_water_uid = 0  # type: ignore[union-attr]
        uow.commit()
    for subject in ("Nieuw 1", "Nieuw 2"):
        imap_user.append(mail(subject))
    assert poll(intake) == "fetched=3 stored=2 quarantined=0 duplicates=1"
    assert sorted(r.subject for r in stored(intake)) == ["Al bekend", "Nieuw 1", "Nieuw 2"]
    assert all(KEYWORD in flags for _, flags in server_mails(imap_user).values())
