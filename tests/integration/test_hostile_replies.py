"""Who gets the reply is decided by the address in angle brackets, never by a name the sender chose; our own mail
coming back is not answered without saying so; a huge mail does not make a huge reply. Real aiosmtpd, both DBs."""

from __future__ import annotations

import dataclasses
import email
from collections.abc import Iterator
from email.policy import default as default_policy

import pytest
from sqlalchemy import delete
from support.mails import customer_mail, queue_mail
from support.smtpserver import SmtpTestServer

from kcc.bootstrap import App
from kcc.config import SmtpConfig
from kcc.records.actor import medewerker
from kcc.service import relay_once
from kcc.usecases.reply import Reply, reply
from kcc.usecases.review import DecisionError
from kcc.usecases.review_queue import show_mail
from store.outbox import OutboxMessage

ANNA = medewerker("anna@gemeente.nl")
TEKST = Reply(variables=(("tekst", "Dank voor uw bericht."),))


@pytest.fixture
def sending(app: App, smtp_server: SmtpTestServer) -> Iterator[App]:
    """The app sending to this test's server, with an outbox no earlier test left messages in."""
    with app.uow() as uow:
        uow.session.execute(delete(OutboxMessage))
        uow.commit()
    smtp = SmtpConfig(kind="smtp", host=smtp_server.host, port=smtp_server.port, security="none", timeout=5,
                      from_address="info@gemeente.example")
    yield dataclasses.replace(app, config=dataclasses.replace(app.config, smtp=smtp))


@pytest.mark.parametrize("sender", [
    "boss@gemeente.nl <jan@example.nl>",
    "Jan\u2028Bcc: evil@attacker.example <jan@example.nl>",
    '"boss@gemeente.nl" <jan@example.nl>',
])
def test_the_reply_goes_to_the_address_in_brackets_never_to_a_display_name(
    sending: App, smtp_server: SmtpTestServer, sender: str
) -> None:
    mail_id = queue_mail(sending, customer_mail(sender=sender))
    assert show_mail(sending.uow(), mail_id)["from"] == "jan@example.nl"
    reply(sending.uow(), sending.config, mail_id, TEKST, ANNA)
    assert relay_once(sending).sent == 1
    (got,) = smtp_server.messages
    assert got.rcpt_tos == ("jan@example.nl",)
    message = email.message_from_bytes(got.data, policy=default_policy)
    assert [a.addr_spec for a in message["To"].addresses] == ["jan@example.nl"]
    assert message["Bcc"] is None and message["Cc"] is None
    assert "@" not in message["To"].addresses[0].display_name, "a name that looks like an address is left out"


def test_our_own_mail_coming_back_is_only_answered_with_force(sending: App) -> None:
    ours = customer_mail(sender="Gemeente <info@gemeente.example>")
    mail_id = queue_mail(sending, ours)
    with pytest.raises(DecisionError, match="own_loop"):
        reply(sending.uow(), sending.config, mail_id, TEKST, ANNA)
    assert show_mail(sending.uow(), mail_id)["state"] == "te_beoordelen"
    forced = reply(sending.uow(), sending.config, mail_id, dataclasses.replace(TEKST, force=True), ANNA)
    assert forced.outbox_id is not None


def test_a_mail_of_one_20_mb_line_gets_a_reply_of_normal_size(sending: App, smtp_server: SmtpTestServer) -> None:
    mail_id = queue_mail(sending, customer_mail(body="x" * 20_000_000))
    reply(sending.uow(), sending.config, mail_id, TEKST, ANNA)
    assert relay_once(sending).sent == 1
    (got,) = smtp_server.messages
    assert len(got.data) < 200_000
    assert "niet geciteerd" in email.message_from_bytes(got.data, policy=default_policy).get_body(
        ("plain",)).get_content()
