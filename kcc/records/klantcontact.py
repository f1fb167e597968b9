"""Klantcontacten: numbered, filled from a mail, linked to what they are about (never commits)."""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kcc.config import OrganisatieConfig
from kcc.records.betrokkene import add_klant
from kcc.records.bijlage import add_bijlage, mail_documents
from kcc.records.fields import fit_inhoud, fit_onderwerp
from store.klantinteracties import Actor, ActorKlantcontact, Klantcontact, Onderwerpobject, Referentieteller
from store.mail import InboundMail
from store.outbox import OutboxMessage


def next_referentienummer(session: Session) -> str:
    """The next referentienummer (10 digits), counted inside this transaction so it is never handed out twice."""
    return next_referentienummers(session, 1)[0]


def next_referentienummers(session: Session, count: int) -> list[str]:
    """The next `count` referentienummers in order, with one statement (a reply reserves both of its numbers at once,
    so the decision's own transaction does not hold the counter's row lock)."""
    waarde = session.execute(
        update(Referentieteller)
        .where(Referentieteller.naam == "klantcontact")
        .values(waarde=Referentieteller.waarde + count)
        .returning(Referentieteller.waarde)
    ).scalar_one()
    return [f"{n:010d}" for n in range(waarde - count + 1, waarde + 1)]


def create_klantcontact(
    session: Session, org: OrganisatieConfig, *, onderwerp: str, inhoud: str, plaatsgevonden_op: datetime,
    indicatie_contact_gelukt: bool | None, referentienummer: str | None = None,
) -> Klantcontact:
    """A klantcontact with the organisation's kanaal and taal; numbered now unless a number was reserved.

    Not flushed: a decision adds everything it records and flushes once, so the rows of one table go in one
    statement (a reply's two klantcontacten, betrokkenen, documents …); its uuid is set here, as others name it.
    """
    contact = Klantcontact(
        uuid=uuid_module.uuid4(),
        referentienummer=referentienummer or next_referentienummer(session), kanaal=org.kanaal[:50],
        onderwerp=fit_onderwerp(onderwerp), inhoud=fit_inhoud(inhoud), taal=org.taal[:3],
        vertrouwelijk=org.vertrouwelijk, plaatsgevonden_op=plaatsgevonden_op,
        indicatie_contact_gelukt=indicatie_contact_gelukt,
    )
    session.add(contact)
    return contact


def link_actoren(session: Session, contact: Klantcontact, actoren: Iterable[Actor]) -> None:
    for actor in actoren:
        contact.actoren.append(ActorKlantcontact(actor_id=actor.id))


def earlier_klantcontact(session: Session, mail: InboundMail) -> Klantcontact | None:
    """The klantcontact this mail follows up: a registered mail or a sent reply named in In-Reply-To/References."""
    ids = [i for i in [mail.in_reply_to, *reversed(mail.references)] if i]
    if not ids:
        return None
    from_mail = select(InboundMail.klantcontact_id, InboundMail.message_id).where(
        InboundMail.message_id.in_(ids), InboundMail.klantcontact_id.is_not(None)
    )
    from_reply = select(OutboxMessage.klantcontact_id, OutboxMessage.message_id).where(
        OutboxMessage.message_id.in_(ids)
    )
    found = {message_id: kc for kc, message_id in [*session.execute(from_mail), *session.execute(from_reply)]}
    for message_id in ids:  # In-Reply-To first, then the newest reference
        if message_id in found and found[message_id] is not None:
            return session.get(Klantcontact, found[message_id])
    return None


def link_onderwerp(session: Session, over: Klantcontact, was: Klantcontact) -> Onderwerpobject:
    """`over` is about `was`: a reply about the customer's mail, or a new mail about an earlier exchange."""
    onderwerp = Onderwerpobject(
        klantcontact=over, was_klantcontact=was,
        onderwerpobjectidentificator_object_id=str(was.uuid),
        onderwerpobjectidentificator_code_objecttype="klantcontact",
        onderwerpobjectidentificator_code_register="openklant",
        onderwerpobjectidentificator_code_soort_object_id="uuid",
    )
    session.add(onderwerp)
    return onderwerp


def register_incoming(
    session: Session, mail: InboundMail, org: OrganisatieConfig, actoren: Iterable[Actor],
    *, referentienummer: str | None = None,
) -> Klantcontact:
    """The customer's mail as klantcontact, with its betrokkene, actors, documents and earlier exchange (added,
    not flushed: see create_klantcontact)."""
    earlier = earlier_klantcontact(session, mail)  # a query: before anything is added, so nothing is flushed yet
    contact = create_klantcontact(
        session, org, onderwerp=mail.subject, inhoud=mail.text_body, plaatsgevonden_op=mail.received_at,
        indicatie_contact_gelukt=True, referentienummer=referentienummer,
    )
    add_klant(session, contact, mail, initiator=True)
    link_actoren(session, contact, actoren)
    auteur = mail.from_name or mail.from_address
    for document in mail_documents(mail):
        add_bijlage(session, contact, document, org, auteur=auteur, creatiedatum=mail.received_at)
    if earlier is not None:
        link_onderwerp(session, contact, earlier)
    return contact
