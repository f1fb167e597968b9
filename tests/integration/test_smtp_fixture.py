"""The recording SMTP test server: smtplib sees exactly the answers and failures the relay tests script."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.smtpserver import SmtpTestServer

MESSAGE = (
    b"From: info@gemeente.example\r\nTo: burger@example.nl\r\nSubject: Uw vraag\r\n"
    b"Message-ID: <antwoord-1@gemeente.example>\r\n\r\nBeste burger,\r\n.punt aan het begin\r\n"
)


def send(server: SmtpTestServer, rcpts: list[str], message: bytes = MESSAGE) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
        return smtp.sendmail("info@gemeente.example", rcpts, message)


def test_a_sent_message_is_recorded_byte_for_byte(smtp_server: SmtpTestServer) -> None:
    refused = send(smtp_server, ["burger@example.nl"])

    assert refused == {}
    [got] = smtp_server.messages
    assert got.mail_from == "info@gemeente.example"
    assert got.rcpt_tos == ("burger@example.nl",)
    assert got.data == MESSAGE, "dot-stuffing undone, CRLF kept"


def test_a_scripted_550_refuses_that_recipient_only(smtp_server: SmtpTestServer) -> None:
    smtp_server.script(rcpt={"bad@x.nl": "550 5.1.1 no such user"})

    refused = send(smtp_server, ["bad@x.nl", "burger@example.nl"])

    assert refused == {"bad@x.nl": (550, b"5.1.1 no such user")}
    assert [m.rcpt_tos for m in smtp_server.messages] == [("burger@example.nl",)]
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtp_server, ["bad@x.nl"])


def test_scripted_data_answers_are_used_in_order(smtp_server: SmtpTestServer) -> None:
    smtp_server.script(data=["451 4.3.0 try later", "250 OK"])

    with pytest.raises(smtplib.SMTPDataError) as error:
        send(smtp_server, ["burger@example.nl"])
    assert error.value.smtp_code == 451
    assert smtp_server.messages == []

    send(smtp_server, ["burger@example.nl"])
    send(smtp_server, ["burger@example.nl"])
    assert len(smtp_server.messages) == 2


def test_drop_on_data_closes_the_connection_before_the_reply(smtp_server: SmtpTestServer) -> None:
    smtp_server.script(drop_on_data=1)

    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(smtp_server, ["burger@example.nl"])
    assert smtp_server.messages == []
    assert smtp_server.dropped == 1

    send(smtp_server, ["burger@example.nl"])
    assert len(smtp_server.messages) == 1


def test_reset_forgets_messages_and_scripts(smtp_server: SmtpTestServer) -> None:
    send(smtp_server, ["burger@example.nl"])
    smtp_server.script(rcpt={"burger@example.nl": "550 nope"}, data=["554 no"], drop_on_data=2)

    smtp_server.reset()

    assert smtp_server.messages == []
    send(smtp_server, ["burger@example.nl"])
    assert len(smtp_server.messages) == 1


@pytest.fixture
def secure_server(tmp_path: Path) -> Iterator[SmtpTestServer]:
    server = SmtpTestServer(auth=("kcc", "geheim"), starttls=True, cert_dir=tmp_path)
    server.start()
    yield server
    server.stop()


def test_starttls_and_auth(secure_server: SmtpTestServer) -> None:
    with smtplib.SMTP(secure_server.host, secure_server.port, timeout=5) as smtp:
        smtp.starttls(context=secure_server.ssl_context())
        smtp.login("kcc", "geheim")
        smtp.sendmail("info@gemeente.example", ["burger@example.nl"], MESSAGE)

    assert [m.data for m in secure_server.messages] == [MESSAGE]


def test_auth_with_a_wrong_password_is_refused(secure_server: SmtpTestServer) -> None:
    with smtplib.SMTP(secure_server.host, secure_server.port, timeout=5) as smtp:
        smtp.starttls(context=secure_server.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as error:
            smtp.login("kcc", "fout")
    assert error.value.smtp_code == 535


def test_auth_is_only_offered_after_starttls(secure_server: SmtpTestServer) -> None:
    with smtplib.SMTP(secure_server.host, secure_server.port, timeout=5) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        assert smtp.has_extn("starttls")
