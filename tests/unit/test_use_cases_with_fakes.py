"""The use cases with fake adapters, built through the one composition root (kcc.bootstrap.build_app).

The mailbox and the SMTP server are fakes here (fast, no peer to start); the database is a SQLite file, the real
one. What the fakes cannot show (protocol behaviour) is in tests/integration against Dovecot and aiosmtpd.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.mails import customer_mail

from ingest.sources.base import FetchedMail, FolderStatus, MailCommandError, MailRef
from kcc.bootstrap import App, build_app, relay_settings
from kcc.config import Config, DatabaseConfig, MailboxConfig, SmtpConfig
from kcc.monitoring import Backlog, Figures, Level, MailboxFigures, evaluate
from kcc.polling import poll_once
from kcc.records.actor import medewerker
from kcc.service import relay_once
from kcc.usecases.contacts import show_contact
from kcc.usecases.reply import Reply, reply
from kcc.usecases.review_queue import list_mails
from replies.compose import reply_subject
from replies.delivery import Claim, RelaySettings, backoff, decide
from replies.smtp import LOST, NO_ANSWER, Delivery
from store.schema import upgrade
from store.types import utcnow

ANNA = medewerker("anna@gemeente.nl")
CUSTOMER = "karel@example.nl"


class FakeMailbox:
    """A mailbox folder in memory: UIDs, bytes, and the mails marked processed."""

    def __init__(self, mailbox: str, mails: Sequence[bytes]) -> None:
        self.mailbox = mailbox
        self.mails = {uid: raw for uid, raw in enumerate(mails, start=1)}
        self.marked: set[int] = set()
        self.failing_marks = 0

    def open(self) -> FolderStatus:
        return FolderStatus(uidvalidity=7, uidnext=len(self.mails) + 1, exists=len(self.mails))

    def list_new(self, above_uid: int) -> list[MailRef]:
        return [MailRef(uid, str(uid), len(raw)) for uid, raw in self.mails.items()
                if uid > above_uid and uid not in self.marked]

    def fetch(self, refs: Sequence[MailRef]) -> Iterator[FetchedMail | MailCommandError]:
        for ref in refs:
            yield FetchedMail(ref, self.mails[ref.uid or 0], datetime(2026, 11, 23, 8, 0, tzinfo=UTC))

    def mark_processed(self, refs: Sequence[MailRef]) -> None:
        if self.failing_marks:
            self.failing_marks -= 1
            raise MailCommandError("the server refused to mark the mail (as a cut connection would)")
        self.marked |= {ref.uid for ref in refs if ref.uid is not None}

    def wait(self, timeout: float) -> bool:
        return False

    def close(self) -> None: ...


class FakeServer:
    """An SMTP transport in memory that answers each message with the next scripted code (250 when none)."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def open(self) -> None: ...

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> Delivery:
        code = self.answers.pop(0) if self.answers else 250
        if code in (250, NO_ANSWER):
            self.sent.append(data)
        accepted_at = utcnow() if code == 250 else None
        return Delivery.same_for_all(recipients, code, f"fake answer {code}", accepted_at=accepted_at)

    def close(self) -> None: ...


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[App, FakeMailbox, FakeServer]]:
    config = Config(
        database=DatabaseConfig(url=f"sqlite:///{tmp_path / 'kcc.db'}"),
        mailboxes=(MailboxConfig(name="info", kind="imap", host="imap.example.nl"),),
        smtp=SmtpConfig(kind="smtp", host="smtp.example.nl"),
    )
    mailbox = FakeMailbox("info", [customer_mail("Vraag over de afvalkalender", sender=f"Karel <{CUSTOMER}>")])
    server = FakeServer()
    application = build_app(config, source_factory=lambda _m: mailbox, transport_factory=lambda: server)
    upgrade(application.engine)
    yield application, mailbox, server
    application.close()


def test_a_mail_not_marked_after_its_commit_is_fetched_again_and_stored_once(
    app: tuple[App, FakeMailbox, FakeServer],
) -> None:
    application, mailbox, _server = app
    mailbox.failing_marks = 1
    _summary, unreachable = poll_once(application, application.config.mailboxes)
    assert len(unreachable) == 1 and mailbox.marked == set()
    assert len(list_mails(application.uow())) == 1, "committed before the marking failed"
    summary, unreachable = poll_once(application, application.config.mailboxes)
    assert (summary.line(), unreachable) == ("fetched=1 stored=0 quarantined=0 duplicates=1", [])
    assert mailbox.marked == {1}
    assert [m["subject"] for m in list_mails(application.uow())] == ["Vraag over de afvalkalender"]


def test_a_reply_goes_out_once_and_its_klantcontact_succeeds(app: tuple[App, FakeMailbox, FakeServer]) -> None:
    application, _mailbox, server = app
    poll_once(application, application.config.mailboxes)
    decided = reply(application.uow(), application.config, 1, Reply(variables=(("tekst", "Woensdag."),)), ANNA)
    assert relay_once(application).line() == "sent=1 retry=0 failed=0 uncertain=0"
    assert relay_once(application).total == 0
    assert len(server.sent) == 1 and b"Woensdag." in server.sent[0]
    assert decided.antwoord_klantcontact_id is not None
    assert show_contact(application.uow(), decided.antwoord_klantcontact_id)["indicatieContactGelukt"] is True


def test_no_answer_after_the_end_of_data_is_uncertain_not_resent(app: tuple[App, FakeMailbox, FakeServer]) -> None:
    application, _mailbox, server = app
    server.answers = [NO_ANSWER]
    poll_once(application, application.config.mailboxes)
    reply(application.uow(), application.config, 1, Reply(variables=(("tekst", "Woensdag."),)), ANNA)
    assert relay_once(application).line() == "sent=0 retry=0 failed=0 uncertain=1"
    assert relay_once(application).total == 0
    assert len(server.sent) == 1


def test_a_permanent_refusal_fails_and_gives_the_kcc_a_task(app: tuple[App, FakeMailbox, FakeServer]) -> None:
    application, _mailbox, server = app
    server.answers = [550]
    poll_once(application, application.config.mailboxes)
    decided = reply(application.uow(), application.config, 1, Reply(variables=(("tekst", "Woensdag."),)), ANNA)
    assert relay_once(application).failed == 1
    assert decided.antwoord_klantcontact_id is not None
    contact = show_contact(application.uow(), decided.antwoord_klantcontact_id)
    assert contact["indicatieContactGelukt"] is False
    assert [t["gevraagdeHandeling"] for t in contact["leiddeTotInterneTaken"]] == ["Antwoord niet afgeleverd"]


# --- pure rules --------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def claim(attempt: int = 1, deliver_until: datetime = NOW + timedelta(hours=72)) -> Claim:
    return Claim(1, 1, "lease", NOW + timedelta(minutes=15), attempt, deliver_until, "info@gemeente.nl",
                 (CUSTOMER,), b"")


@pytest.mark.parametrize(("code", "status"), [
    (250, "sent"), (550, "failed"), (451, "retry"), (LOST, "retry"), (NO_ANSWER, "uncertain"),
])
def test_the_relay_decides_by_the_servers_answer(code: int, status: str) -> None:
    delivery = Delivery.same_for_all([CUSTOMER], code, "antwoord")
    assert decide(delivery, claim(), now=NOW, settings=RelaySettings()).status == status


def test_a_temporary_refusal_after_the_deadline_fails_and_retries_stop_at_the_deadline() -> None:
    delivery = Delivery.same_for_all([CUSTOMER], 451, "later")
    late = decide(delivery, claim(3, NOW), now=NOW, settings=RelaySettings())
    assert late.status == "failed" and "delivery deadline" in late.undelivered
    soon = decide(delivery, claim(9, NOW + timedelta(minutes=5)), now=NOW, settings=RelaySettings(jitter=0))
    assert soon.next_attempt_at == NOW + timedelta(minutes=5)


def test_backoff_doubles_and_is_capped() -> None:
    settings = RelaySettings(jitter=0.0)
    assert [backoff(n, settings).total_seconds() for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]


def test_the_relay_settings_come_from_the_configuration() -> None:
    config = Config()
    assert relay_settings(replace(config, replies=replace(config.replies, lease_seconds=42))).lease_seconds == 42


@pytest.mark.parametrize(("original", "expected"), [
    ("Vraag", "Re: Vraag"), ("RE: Re: AW: Vraag", "Re: Vraag"), ("", "Re: (geen onderwerp)"),
])
def test_a_reply_subject_does_not_pile_up_prefixes(original: str, expected: str) -> None:
    assert reply_subject(original) == expected


def test_a_mailbox_never_polled_is_critical_and_a_recent_one_ok() -> None:
    config = Config()
    never = Figures(NOW, (), (MailboxFigures("info", True),), Backlog(), dict.fromkeys(
        ["pending", "sending", "retry", "sent", "failed", "uncertain", "bounced"], 0), Backlog(), {})
    checks = {c.name: c.level for c in evaluate(never, config)}
    assert checks["mailbox info"] == Level.CRITICAL
    recent = replace(never, mailboxes=(MailboxFigures("info", True, last_success_at=NOW - timedelta(minutes=1)),))
    assert {c.name: c.level for c in evaluate(recent, config)}["mailbox info"] == Level.OK
