"""C1199 variant A end to end: a mail in Dovecot, `poll --once`, `reply`, `relay --once`, the answer at the server."""

from __future__ import annotations

import email
import json
from email.policy import default as default_policy
from pathlib import Path

from kcc_cli import kcc_mail, write_config
from sqlalchemy import select
from support.dovecot import ImapUser
from support.smtpserver import SmtpTestServer

from kcc.bootstrap import build_app
from kcc.config import Config, DatabaseConfig
from kcc.usecases.contacts import show_contact
from kcc.usecases.review_queue import show_mail
from store.blobs import get_blob
from store.outbox import OutboxMessage

QUESTION = (
    b"From: =?utf-8?q?Jos=C3=A9_van_der_Wittewiek?= <jose@example.nl>\r\nReply-To: jose.prive@example.nl\r\n"
    b"To: info@gemeente.example\r\nSubject: RE: Re: Vraag over de afvalkalender\r\n"
    b"Message-ID: <vraag-7@example.nl>\r\nReferences: <eerder-1@gemeente.example>\r\n"
    b"Date: Mon, 23 Nov 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"\r\nWanneer wordt het oud papier opgehaald?\r\n"
)


def ok(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_question_answered_and_delivered(
    tmp_path: Path, database_url: str, imap_user: ImapUser, smtp_server: SmtpTestServer
) -> None:
    write_config(tmp_path, database_url, imap=imap_user, smtp_port=smtp_server.port)
    ok(tmp_path, "init")
    imap_user.append(QUESTION)
    assert ok(tmp_path, "poll", "--once").strip() == "fetched=1 stored=1 quarantined=0 duplicates=0"
    (mail,) = json.loads(ok(tmp_path, "queue", "list", "--json"))

    (tmp_path / "antwoord.txt").write_text("Het oud papier wordt elke tweede dinsdag opgehaald.\n")
    replied = ok(tmp_path, "reply", str(mail["id"]), "--text-file", "antwoord.txt", "--as", "anna@gemeente.nl")
    assert "queued as outbox message" in replied
    assert smtp_server.messages == []  # nothing leaves before the relay runs

    assert ok(tmp_path, "relay", "--once").strip() == "sent=1 retry=0 failed=0 uncertain=0"
    (received,) = smtp_server.messages
    assert received.mail_from == "info@gemeente.example"
    assert list(received.rcpt_tos) == ["jose.prive@example.nl"]
    message = email.message_from_bytes(received.data, policy=default_policy)
    assert message["From"] == "Gemeente Voorbeeld <info@gemeente.example>"
    assert message["To"] == "jose.prive@example.nl"
    assert message["Subject"] == "Re: Vraag over de afvalkalender"
    assert message["In-Reply-To"] == "<vraag-7@example.nl>"
    assert message["References"].split() == ["<eerder-1@gemeente.example>", "<vraag-7@example.nl>"]
    assert message["Auto-Submitted"] == "no"
    assert message["Message-ID"].endswith("@gemeente.example>")
    assert message["Date"] is not None
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert text.startswith("Beste José van der Wittewiek,")
    assert "elke tweede dinsdag" in text and "> Wanneer wordt het oud papier opgehaald?" in text

    app = build_app(Config(database=DatabaseConfig(url=database_url)))
    try:
        with app.uow() as uow:
            outbox = uow.session.scalars(select(OutboxMessage)).one()
            assert (outbox.status, outbox.message_id) == ("sent", message["Message-ID"])
            assert get_blob(uow.session, outbox.blob_sha256) == received.data  # the stored bytes went out
        answer = show_contact(app.uow(), outbox.klantcontact_id)
        assert answer["indicatieContactGelukt"] is True
        (link,) = answer["gingOverOnderwerpobjecten"]
        question = show_contact(app.uow(), show_mail(app.uow(), mail["id"])["klantcontactId"])
        assert link["wasKlantcontact"]["uuid"] == question["uuid"]
        assert [b["informatieobject"]["formaat"] for b in answer["omvatteBijlagen"]] == ["message/rfc822"]
        assert [b["informatieobject"]["formaat"] for b in question["omvatteBijlagen"]] == ["message/rfc822"]
    finally:
        app.close()
    assert ok(tmp_path, "verify").startswith("ok")
