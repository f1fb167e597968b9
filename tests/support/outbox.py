"""Queued replies for relay tests and benchmarks, stored the way a reply decision stores them.

An outgoing klantcontact (not yet gelukt) with the customer as betrokkene (initiator = false) and their e-mail
address, the exact message bytes as a blob, and the outbox row that points at both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from kcc.config import OrganisatieConfig
from kcc.records.klantcontact import create_klantcontact
from store.blobs import put_blob
from store.klantinteracties import Betrokkene, DigitaalAdres
from store.outbox import OutboxMessage
from store.types import utcnow
from store.uow import UnitOfWork

SENDER = "info@gemeente.example"
CUSTOMER = "burger@example.nl"

_ANSWER = (
    "Beste meneer Van der Wittewiek,\r\n\r\n"
    "Dank voor uw bericht over de afvalkalender. Het oud papier wordt in uw wijk elke tweede en vierde woensdag "
    "van de maand opgehaald. Zet de container op de ophaaldag voor 7.30 uur aan de weg, met de handgreep naar de "
    "woning. Op feestdagen kan de ophaaldag verschuiven; de actuele kalender staat in de app van de gemeente en op "
    "onze website onder Afval en recycling.\r\n\r\n"
    "Heeft u nog vragen? Beantwoord dan deze e-mail, of bel ons op werkdagen tussen 8.30 en 17.00 uur op 14 0123."
    "\r\n\r\nMet vriendelijke groet,\r\n\r\nKlantcontactcentrum\r\nGemeente Voorbeeld\r\n\r\n"
)
_QUOTE = "> Goedemorgen,\r\n>\r\n> Wanneer wordt bij ons in de straat het oud papier opgehaald? " * 8


@dataclass(frozen=True, slots=True)
class QueuedReply:
    outbox_id: int
    klantcontact_id: int
    message_id: str
    data: bytes


def reply_bytes(message_id: str, to: str = CUSTOMER, *, subject: str = "Re: Vraag over de afvalkalender") -> bytes:
    """A realistic reply of about 5 kB, as compose writes one: text and HTML alternatives, the question quoted.

    CRLF line ends and a final CRLF, as SMTP carries it; one text line starts with a dot (dot-stuffing).
    """
    html_answer = "".join(f"<p>{alinea}</p>\r\n" for alinea in _ANSWER.split("\r\n\r\n") if alinea)
    html_quote = "<blockquote>" + _QUOTE.replace("> ", "").replace("\r\n", "<br>\r\n") + "</blockquote>\r\n"
    return (
        f"From: Gemeente Voorbeeld <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: {message_id}\r\n"
        "In-Reply-To: <vraag-1@example.nl>\r\nReferences: <vraag-1@example.nl>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="=_kcc_grens"\r\n\r\n'
        "--=_kcc_grens\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{_ANSWER}{_QUOTE}\r\n.Een regel die met een punt begint (dot-stuffing).\r\n"
        "--=_kcc_grens\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"<!DOCTYPE html>\r\n<html lang=\"nl\"><head><meta charset=\"utf-8\"><title>{subject}</title></head>\r\n"
        f"<body style=\"font-family: Arial, sans-serif; font-size: 14px\">\r\n{html_answer}{html_quote}"
        "</body></html>\r\n--=_kcc_grens--\r\n"
    ).encode()


def queue_replies(
    uow: UnitOfWork, count: int, *, to: tuple[str, ...] = (CUSTOMER,), now: datetime | None = None,
    deliver_until: datetime | None = None,
) -> list[QueuedReply]:
    """`count` pending replies in one transaction, due at `now`, with a deadline (default three days later)."""
    now = now or utcnow()
    queued = []
    with uow:
        session = uow.session
        for _ in range(count):
            contact = create_klantcontact(
                session, OrganisatieConfig(), onderwerp="Re: Vraag over de afvalkalender", inhoud=_ANSWER,
                plaatsgevonden_op=now, indicatie_contact_gelukt=None,
            )
            betrokkene = Betrokkene(klantcontact=contact, rol="klant", initiator=False,
                                    contactnaam_achternaam="Wittewiek")
            session.add(betrokkene)
            session.add(DigitaalAdres(betrokkene=betrokkene, soort_digitaal_adres="email", adres=to[0],
                                      omschrijving="e-mail uit bericht"))
            session.flush()
            message_id = f"<antwoord-{uuid.uuid4().hex}@gemeente.example>"
            data = reply_bytes(message_id, ", ".join(to))
            outbox = OutboxMessage(
                klantcontact_id=contact.id, message_id=message_id, blob_sha256=put_blob(session, data),
                envelope_from=SENDER, envelope_to=list(to), status="pending", attempts=0, next_attempt_at=now,
                deliver_until=deliver_until or now + timedelta(hours=72),
            )
            session.add(outbox)
            session.flush()
            queued.append(QueuedReply(outbox.id, contact.id, message_id, data))
        uow.commit()
    return queued


def queue_reply(uow: UnitOfWork, **kwargs: object) -> QueuedReply:
    return queue_replies(uow, 1, **kwargs)[0]  # type: ignore[arg-type]
