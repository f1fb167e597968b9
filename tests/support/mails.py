"""Test mails and a direct way to put one in the review queue (through the real intake use case)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from ingest.analysis import Parser, analyse, default_parser
from ingest.sources.base import FetchedMail, MailRef
from kcc.bootstrap import App, classify_options
from kcc.usecases.intake import store_mail

RECEIVED = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)
_uids = itertools.count(1)


def customer_mail(
    subject: str = "Vraag over de afvalkalender", body: str = "Goedemorgen,\r\n\r\nWanneer wordt het papier opgehaald?",
    *, sender: str = "Karel van der Wittewiek <karel@example.nl>", extra_headers: str = "",
    message_id: str | None = None,
) -> bytes:
    mid = message_id or f"<vraag-{next(_uids)}@example.nl>"
    return (
        f"From: {sender}\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 23 Nov 2026 09:15:00 +0100\r\n{extra_headers}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def with_attachment(text: str = "Zie de foto.", filename: str = "container.jpg") -> bytes:
    return (
        "From: Karel van der Wittewiek <karel@example.nl>\r\nReply-To: karel.prive@example.nl\r\n"
        f"To: info@gemeente.nl\r\nSubject: Kapotte container\r\nMessage-ID: <foto-{next(_uids)}@example.nl>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=grens\r\n\r\n"
        f"--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--grens\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"{filename}\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQSkZJRgABAQ==\r\n--grens--\r\n"
    ).encode()


def queue_mail(
    app: App, raw: bytes, mailbox: str = "info", *, received_at: datetime = RECEIVED,
    parser: Parser = default_parser, max_mail_bytes: int | None = None,
) -> int:
    """Store `raw` exactly as intake does after a fetch (with the parser of that day); returns the InboundMail id."""
    uid = next(_uids)
    fetched = FetchedMail(ref=MailRef(uid=uid, key=str(uid), size=len(raw)), raw=raw, internaldate=received_at)
    limit = max_mail_bytes or app.config.storage.max_mail_bytes
    analysis = analyse(raw, received_at, max_mail_bytes=limit, options=classify_options(app.config), parser=parser)
    mail = store_mail(app.uow(), mailbox, fetched, 1, analysis)
    assert mail is not None, "the test mail was stored before"
    return mail.id


def dsn_for(message_id: str, recipient: str) -> bytes:
    """A standard delivery status notification (RFC 3464), as Postfix sends one."""
    return (
        "From: MAILER-DAEMON@mx.example.nl (Mail Delivery System)\r\nTo: info@gemeente.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.nl>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="rapport"\r\n\r\n'
        "--rapport\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not "
        f"be delivered to one or more recipients.\r\n\r\n<{recipient}>: host said: 550 5.1.1 User unknown\r\n"
        "--rapport\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.nl\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        "--rapport\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Gemeente Voorbeeld <info@gemeente.example>\r\nTo: {recipient}\r\nSubject: Re: Vraag\r\n"
        f"Message-ID: {message_id}\r\n\r\n--rapport--\r\n"
    ).encode()
