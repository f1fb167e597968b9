"""Nothing a mail contains stops the mailbox: every mail ends stored (te_beoordelen or quarantaine), exactly once,
and the mails after it are stored too, from a Maildir and from the real Dovecot, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from support.dovecot import ImapUser

from ingest.analysis import default_parser
from ingest.parse import ParsedMail
from ingest.poller import Poller
from ingest.sources.base import FolderStatus, MailRef
from kcc.bootstrap import App, build_app
from kcc.polling import make_poller, poll_once, process_owner
from store.mail import InboundMail, MailboxState

OUT_OF_RANGE_DATES = ("Fri, 31 Dec 9999 23:59:59 -1200", "Mon, 1 Jan 0001 00:00:00 +1200",
                      "Sat, 1 Jan 10000 00:00:00 +0000", "Thu, 31 Dec 9999 23:00:00 -1400")
_names = itertools.count(1)


def mail(subject: str, date: str = "Mon, 23 Nov 2026 09:00:00 +0100", extra: bytes = b"") -> bytes:
    return (f"From: Karel <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\nDate: {date}\r\n"
            ).encode() + extra + b"Content-Type: text/plain; charset=utf-8\r\n\r\nGoedemorgen.\r\n"


@pytest.fixture
def maildir_app(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[App]:
    """An app whose mailbox is a fresh Maildir of its own (the mailbox name is unique per test)."""
    from conftest import make_config

    config = make_config(database_url, tmp_path)
    name = f"hostile{next(_names)}"
    mailbox = dataclasses.replace(config.mailboxes[0], name=name, path=str(tmp_path / name))
    yield build_app(dataclasses.replace(config, mailboxes=(mailbox,)), engine=engine)


def deliver(app: App, raw: bytes) -> None:
    new = Path(app.config.mailboxes[0].path) / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / f"{next(_names):08d}.eml").write_bytes(raw)


def rows(app: App) -> list[InboundMail]:
    with app.uow() as uow:
        query = select(InboundMail).where(InboundMail.mailbox == app.config.mailboxes[0].name)
        return list(uow.session.scalars(query.order_by(InboundMail.id)))


def poll(app: App) -> str:
    summary, unreachable = poll_once(app, app.config.mailboxes)
    assert unreachable == []
    return summary.line()


def test_dates_outside_the_calendar_do_not_stop_the_maildir(maildir_app: App) -> None:
    for number, date in enumerate(OUT_OF_RANGE_DATES):
        deliver(maildir_app, mail(f"Datum {number}", date))
    deliver(maildir_app, mail("Daarna"))

    assert poll(maildir_app) == "fetched=5 stored=5 quarantined=0 duplicates=0"
    stored = rows(maildir_app)
    assert [r.subject for r in stored] == ["Datum 0", "Datum 1", "Datum 2", "Datum 3", "Daarna"]
    assert all(r.state == "te_beoordelen" for r in stored)
    assert stored[-1].sent_at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert stored[0].sent_at is None and any("Date header" in d for d in stored[0].defects)


def test_dates_outside_the_calendar_do_not_stop_the_imap_mailbox(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser
) -> None:
    from conftest import make_config

    app = build_app(make_config(database_url, tmp_path, mailboxes=(imap_user.mailbox_config(name=imap_user.name),)),
                    engine=engine)
    for number, date in enumerate(OUT_OF_RANGE_DATES):
        imap_user.append(mail(f"Datum {number}", date))
    imap_user.append(mail("Daarna"))

    assert poll(app) == "fetched=5 stored=5 quarantined=0 duplicates=0"
    assert [r.state for r in rows(app)] == ["te_beoordelen"] * 5
    assert poll(app) == "fetched=0 stored=0 quarantined=0 duplicates=0"


def storing_fails(raw: bytes, received_at: datetime) -> ParsedMail:
    """A parser with yesterday's bug: a Date whose UTC moment does not exist reaches the database unconverted."""
    parsed = default_parser(raw, received_at)
    if b"Vergiftigd" in raw:
        far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12)))
        return dataclasses.replace(parsed, date=far, date_from_header=True)
    return parsed


def test_a_mail_whose_row_the_database_refuses_is_quarantined_and_the_loop_goes_on(maildir_app: App) -> None:
    deliver(maildir_app, mail("Ervoor"))
    deliver(maildir_app, mail("Vergiftigd"))
    deliver(maildir_app, mail("Erna"))
    mailbox = maildir_app.config.mailboxes[0]
    poller = make_poller(maildir_app, mailbox, process_owner())
    poller._parser = storing_fails  # the intake as it ran with the buggy parser
    try:
        assert poller.run_once().line() == "fetched=3 stored=2 quarantined=1 duplicates=0"
    finally:
        poller.close()

    by_subject = {r.subject: r for r in rows(maildir_app)}
    assert list(by_subject) == ["Ervoor", "Vergiftigd", "Erna"]
    poisoned = by_subject["Vergiftigd"]
    assert (poisoned.state, poisoned.reason) == ("quarantaine", "internal_error")
    assert "OverflowError" in poisoned.error and "kcc-mail quarantine export" in poisoned.error
    assert "Goedemorgen" not in poisoned.error and "karel@example.nl" not in poisoned.error
    assert poisoned.from_address == "karel@example.nl", "the reviewer still sees who sent it"
    assert list(Path(mailbox.path, "new").iterdir()) == [], "all three marked processed, after their commit"
    assert poll(maildir_app) == "fetched=0 stored=0 quarantined=0 duplicates=0"


class _Broken:
    """A mailbox source with a bug: listing raises something that is not a SourceError."""

    mailbox = "kapot"

    def open(self) -> FolderStatus:
        return FolderStatus(uidvalidity=1, uidnext=None, exists=0)

    def list_new(self, above_uid: int) -> list[MailRef]:
        raise RuntimeError("a bug in a mailbox source")

    def fetch(self, refs: object) -> Iterator[object]:
        return iter(())

    def mark_processed(self, refs: object) -> None: ...

    def wait(self, timeout: float) -> bool:
        return False

    def close(self) -> None: ...


def test_a_poll_that_fails_for_another_reason_is_recorded_for_status(maildir_app: App) -> None:
    settings_ = make_poller(maildir_app, maildir_app.config.mailboxes[0], "x")._settings
    stop = threading.Event()
    poller = Poller(maildir_app.intake(), _Broken(), dataclasses.replace(settings_, mailbox="kapot"),  # type: ignore[arg-type]
                    process_owner(), stop=stop)
    thread = threading.Thread(target=poller.run_forever, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            with maildir_app.uow() as uow:
                state = uow.session.get(MailboxState, "kapot")
                if state is not None and state.last_error:
                    break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert state is not None and "RuntimeError" in state.last_error and "a bug in a mailbox source" in state.last_error


# --- property: generated hostile headers through the whole intake ----------------------------------------------

HEADER_NAMES = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version", "Return-Path",
                "Auto-Submitted", "X-Spam-Flag", "List-Id", "Sender")
CHARSETS = ("utf-8", "iso-8859-1", "uft-8", "x-mac-cyrillic", "utf-7", "utf-16", "fakescii", "", "gb2312", "zlib")


offsets = st.one_of(st.sampled_from([-1200, -1400, -1, 0, 1, 1200, 1400, 9959, -9959]), st.integers(-9999, 9999))


@st.composite
def calendar_edges(draw: st.DrawFn) -> bytes:
    """The first and last moments the calendar holds, in any offset: some have no UTC moment at all."""
    day = draw(st.sampled_from(["Fri, 31 Dec 9999", "Mon, 1 Jan 0001", "Mon, 1 Jan 1", "Sat, 1 Jan 100"]))
    hour = draw(st.one_of(st.sampled_from([23, 0, 12]), st.integers(0, 23)))
    clock = f"{hour:02d}:{draw(st.integers(0, 59)):02d}:{draw(st.integers(0, 59)):02d}"
    return f"{day} {clock} {draw(offsets):+05d}".encode()


@st.composite
def dates(draw: st.DrawFn) -> bytes:
    """Date values in any shape a sender can write: valid, impossible, and at the calendar's edges."""
    year = draw(st.sampled_from([0, 1, 99, 100, 1900, 1969, 2026, 9999, 10000, 99999]))
    month = draw(st.sampled_from(["Jan", "Feb", "Dec", "Foo"]))
    day = draw(st.integers(0, 32))
    return f"Fri, {day} {month} {year} 23:59:{draw(st.integers(0, 61))} {draw(offsets):+05d}".encode()


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    charset = draw(st.sampled_from(CHARSETS)).encode()
    kind = draw(st.sampled_from([b"Q", b"B", b"q", b"x"]))
    return b"=?" + charset + b"?" + kind + b"?" + draw(st.binary(max_size=40)).replace(b"?=", b"") + b"?="


header_values = st.one_of(
    st.binary(max_size=300), dates(), encoded_words(),
    st.lists(st.one_of(encoded_words(), st.binary(max_size=20)), max_size=5).map(b" ".join),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"<" * 2000, b"a@" * 500, b"\x00" * 50, b"=?utf-8?b?" + b"A" * 5000 + b"?=", b"\xff\xfe\x00"]),
)
extra_headers = st.lists(st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=30)),
                                   header_values), max_size=10)
headers = st.tuples(
    st.one_of(calendar_edges(), dates(), header_values), header_values, header_values, extra_headers,
).map(lambda parts: [("Date", parts[0]), ("From", parts[1]), ("Subject", parts[2]), *parts[3]])


def hostile_mail(lines: list[tuple[str | bytes, bytes]], body: bytes) -> bytes:
    out = []
    for name, value in lines:
        label = name.encode() if isinstance(name, str) else name.replace(b":", b"").replace(b"\n", b"") or b"X"
        out.append(label + b": " + value.replace(b"\r\n", b"\r\n ").replace(b"\n", b"\n "))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=headers, body=st.binary(max_size=2000))
def test_generated_hostile_headers_end_stored_exactly_once(
    maildir_app: App, lines: list[tuple[str | bytes, bytes]], body: bytes
) -> None:
    raw = hostile_mail(lines, body) + f"\r\n{next(_names)}".encode()  # unique bytes, so never a duplicate
    before = count(maildir_app)
    deliver(maildir_app, raw)
    line = poll(maildir_app)
    assert line.startswith("fetched=1 ") and line.endswith(" duplicates=0")
    assert count(maildir_app) == before + 1
    (last,) = rows(maildir_app)[-1:]
    assert last.state in ("te_beoordelen", "quarantaine")
    assert poll(maildir_app) == "fetched=0 stored=0 quarantined=0 duplicates=0"


def count(app: App) -> int:
    with app.uow() as uow:
        mailbox = app.config.mailboxes[0].name
        return int(uow.session.scalar(select(func.count()).where(InboundMail.mailbox == mailbox)) or 0)
