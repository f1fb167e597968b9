"""How `kcc-mail status` judges an LMTP mailbox: it waits for the MTA, so only a deferred delivery is a warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kcc.config import Config, MailboxConfig
from kcc.monitoring import Backlog, Figures, Level, MailboxFigures, ProcessFigures, evaluate

NOW = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
LMTP = MailboxConfig(name="balie", kind="lmtp", listen="127.0.0.1:2424", recipients=("info@gemeente.nl",))


def figures(mailbox: MailboxFigures, intake: tuple[str, ...] = ("balie",)) -> Figures:
    process = ProcessFigures(owner="host:1:abc", started_at=NOW, beat_at=NOW, version="0.1.0", intake=intake,
                             relay=True, alive=True)
    return Figures(now=NOW, processes=(process,), mailboxes=(mailbox,), review=Backlog(),
                   outbox={"uncertain": 0, "failed": 0}, sending=Backlog(), quarantine={})


def checks_of(mailbox: MailboxFigures, intake: tuple[str, ...] = ("balie",)) -> dict[str, tuple[Level, str]]:
    checks = evaluate(figures(mailbox, intake), Config(mailboxes=(LMTP,)))
    return {c.message.split(":")[0]: (c.level, c.message) for c in checks if c.name != "review"}


def test_a_quiet_lmtp_mailbox_is_ok_and_says_when_it_last_stored_a_mail() -> None:
    quiet = MailboxFigures(name="balie", configured=True, last_success_at=NOW - timedelta(hours=5))
    level, message = checks_of(quiet)["mailbox balie"]
    assert level == Level.OK
    assert message == "mailbox balie: LMTP on 127.0.0.1:2424, last mail stored 5 h 0 min ago"
    never = checks_of(MailboxFigures(name="balie", configured=True))["mailbox balie"]
    assert never == (Level.OK, "mailbox balie: LMTP on 127.0.0.1:2424, no mail delivered yet")


def test_a_deferred_delivery_warns_with_its_reason() -> None:
    deferred = MailboxFigures(name="balie", configured=True, last_error="the database could not be reached")
    level, message = checks_of(deferred)["mailbox balie"]
    assert level == Level.WARNING and message.endswith("last delivery deferred: the database could not be reached")


def test_no_process_listening_for_an_lmtp_mailbox_is_named() -> None:
    checks = evaluate(figures(MailboxFigures(name="balie", configured=True), intake=()), Config(mailboxes=(LMTP,)))
    assert any(c.level == Level.WARNING and c.message == "no running process listens for LMTP to mailbox balie"
               for c in checks)
