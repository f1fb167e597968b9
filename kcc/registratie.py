"""Building Klantinteracties records from a stored mail, inside the caller's transaction (never commits).

Shared by every decision that registers a mail (register with a task or nothing, reply), so the incoming
klantcontact is built the same way whatever the follow-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kcc.config import OrganisatieConfig
from kcc.namen import contactnaam_uit
from kcc.teksten import inhoud_uit, onderwerp_uit
from store.audit import AuditEvent
from store.klantinteracties import (
    Actor,
    ActorKlantcontact,
    Betrokkene,
    Bijlage,
    DigitaalAdres,
    Informatieobject,
    Klantcontact,
    Onderwerpobject,
    Referentieteller,
)
from store.mail import InboundMail
from store.outbox import OutboxMessage

DOCUMENT_REGISTER = "kcc-mail"
DOCUMENT_OBJECTTYPE = "enkelvoudiginformatieobject"


@dataclass(frozen=True, slots=True)
class Document:
    """What a bijlage points at: bytes already stored as a blob, with the metadata of the document."""

    titel: str
    bestandsnaam: str
    formaat: str
    bestandsomvang: int
    sha256: str


def volgend_referentienummer(session: Session) -> str:
    """The next referentienummer (10 digits), counted inside this transaction so it is never handed out twice."""
    waarde = session.execute(
        update(Referentieteller)
        .where(Referentieteller.naam == "klantcontact")
        .values(waarde=Referentieteller.waarde + 1)
        .returning(Referentieteller.waarde)
    ).scalar_one()
    return f"{waarde:010d}"


def nieuw_klantcontact(
    session: Session, org: OrganisatieConfig, *, onderwerp: str, inhoud: str, plaatsgevonden_op: datetime,
    indicatie_contact_gelukt: bool | None,
) -> Klantcontact:
    contact = Klantcontact(
        referentienummer=volgend_referentienummer(session), kanaal=org.kanaal[:50], onderwerp=onderwerp_uit(onderwerp),
        inhoud=inhoud_uit(inhoud), taal=org.taal[:3], vertrouwelijk=org.vertrouwelijk,
        plaatsgevonden_op=plaatsgevonden_op, indicatie_contact_gelukt=indicatie_contact_gelukt,
    )
    session.add(contact)
    session.flush()
    return contact


def klant_adres(mail: InboundMail) -> str:
    """Where the customer wants an answer: the Reply-To address if the mail has one, else From."""
    return (mail.reply_to[0] if mail.reply_to else mail.from_address).strip()


def voeg_klant_toe(session: Session, contact: Klantcontact, mail: InboundMail, *, initiator: bool) -> Betrokkene:
    """The customer as betrokkene (not identified as a partij) with the e-mail address to reach them."""
    naam = contactnaam_uit(mail.from_name)
    betrokkene = Betrokkene(
        klantcontact_id=contact.id, was_partij_uuid=None, rol="klant", initiator=initiator,
        organisatienaam=naam.organisatienaam, contactnaam_voorletters=naam.voorletters,
        contactnaam_voornaam=naam.voornaam, contactnaam_voorvoegsel_achternaam=naam.voorvoegsel_achternaam,
        contactnaam_achternaam=naam.achternaam,
    )
    session.add(betrokkene)
    session.flush()
    adres = klant_adres(mail)
    if adres:
        if len(adres) > 80:
            raise RegistratieError(
                f"the customer's address {len(adres)} characters long does not fit DigitaalAdres.adres (80); "
                "dismiss the mail or answer it outside kcc-mail"
            )
        session.add(DigitaalAdres(
            betrokkene_id=betrokkene.id, soort_digitaal_adres="email", adres=adres, omschrijving="e-mail uit bericht",
        ))
    return betrokkene


class RegistratieError(ValueError):
    """The mail cannot be registered as it is; the message says why and what to do."""


def koppel_actoren(session: Session, contact: Klantcontact, actoren: Iterable[Actor]) -> None:
    for actor in actoren:
        session.add(ActorKlantcontact(actor_id=actor.id, klantcontact_id=contact.id))


def voeg_bijlage_toe(
    session: Session, contact: Klantcontact, document: Document, org: OrganisatieConfig, *, auteur: str,
    creatiedatum: datetime,
) -> Bijlage:
    """An informatieobject for the stored bytes (no copy) and the bijlage that points at it by its uuid."""
    informatieobject = Informatieobject(
        titel=onderwerp_uit(document.titel), bestandsnaam=document.bestandsnaam[:255], formaat=document.formaat[:255],
        bestandsomvang=document.bestandsomvang, blob_sha256=document.sha256, creatiedatum=creatiedatum.date(),
        taal=org.taal[:3], vertrouwelijkheidaanduiding="vertrouwelijk" if org.vertrouwelijk else "intern",
        auteur=(auteur or "onbekend")[:200], integriteit_algoritme="sha_256", integriteit_waarde=document.sha256,
    )
    session.add(informatieobject)
    session.flush()
    bijlage = Bijlage(
        klantcontact_id=contact.id, informatieobject_id=informatieobject.id,
        bijlageidentificator_object_id=str(informatieobject.uuid),
        bijlageidentificator_code_objecttype=DOCUMENT_OBJECTTYPE,
        bijlageidentificator_code_register=DOCUMENT_REGISTER, bijlageidentificator_code_soort_object_id="uuid",
    )
    session.add(bijlage)
    return bijlage


def mail_documenten(mail: InboundMail) -> list[Document]:
    """The original mail as .eml, then each attachment the parser found (none for a released quarantined mail)."""
    origineel = Document(
        titel=mail.subject or "(geen onderwerp)", bestandsnaam=f"mail-{mail.id}.eml", formaat="message/rfc822",
        bestandsomvang=mail.size, sha256=mail.raw_sha256,
    )
    return [origineel] + [
        Document(titel=a.bestandsnaam, bestandsnaam=a.bestandsnaam, formaat=a.formaat, bestandsomvang=a.size,
                 sha256=a.blob_sha256)
        for a in mail.attachments
    ]


def eerder_klantcontact(session: Session, mail: InboundMail) -> Klantcontact | None:
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


def koppel_onderwerp(session: Session, over: Klantcontact, was: Klantcontact) -> Onderwerpobject:
    """`over` is about `was`: a reply about the customer's mail, or a new mail about an earlier exchange."""
    onderwerp = Onderwerpobject(
        klantcontact_id=over.id, was_klantcontact_id=was.id,
        onderwerpobjectidentificator_object_id=str(was.uuid),
        onderwerpobjectidentificator_code_objecttype="klantcontact",
        onderwerpobjectidentificator_code_register="openklant",
        onderwerpobjectidentificator_code_soort_object_id="uuid",
    )
    session.add(onderwerp)
    return onderwerp


def registreer_inkomend(
    session: Session, mail: InboundMail, org: OrganisatieConfig, actoren: Iterable[Actor]
) -> Klantcontact:
    """The customer's mail as klantcontact, with its betrokkene, actors, documents and earlier exchange."""
    contact = nieuw_klantcontact(
        session, org, onderwerp=mail.subject, inhoud=mail.text_body, plaatsgevonden_op=mail.received_at,
        indicatie_contact_gelukt=True,
    )
    voeg_klant_toe(session, contact, mail, initiator=True)
    koppel_actoren(session, contact, actoren)
    auteur = mail.from_name or mail.from_address
    for document in mail_documenten(mail):
        voeg_bijlage_toe(session, contact, document, org, auteur=auteur, creatiedatum=mail.received_at)
    earlier = eerder_klantcontact(session, mail)
    if earlier is not None:
        koppel_onderwerp(session, contact, earlier)
    return contact


def audit(session: Session, who: str, action: str, object_type: str, object_id: object, **details: object) -> None:
    session.add(AuditEvent(
        who=who[:320], action=action, object_type=object_type, object_id=str(object_id), details=dict(details),
    ))
