"""Documents of a klantcontact: an informatieobject for stored bytes, and the bijlage pointing at it."""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from kcc.config import OrganisatieConfig
from kcc.records.fields import fit_onderwerp
from store.klantinteracties import Bijlage, Informatieobject, Klantcontact
from store.mail import InboundMail
from store.states import Vertrouwelijkheidaanduiding

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


def add_bijlage(
    session: Session, contact: Klantcontact, document: Document, org: OrganisatieConfig, *, auteur: str,
    creatiedatum: datetime,
) -> Bijlage:
    """An informatieobject for the stored bytes (no copy) and the bijlage that points at it by its uuid (added, not
    flushed; the uuid is set here because the bijlage names it)."""
    vertrouwelijkheid = (Vertrouwelijkheidaanduiding.VERTROUWELIJK if org.vertrouwelijk
                         else Vertrouwelijkheidaanduiding.INTERN)
    informatieobject = Informatieobject(
        uuid=uuid_module.uuid4(), titel=fit_onderwerp(document.titel), bestandsnaam=document.bestandsnaam[:255],
        formaat=document.formaat[:255], bestandsomvang=document.bestandsomvang, blob_sha256=document.sha256,
        creatiedatum=creatiedatum.date(), taal=org.taal[:3], vertrouwelijkheidaanduiding=vertrouwelijkheid,
        auteur=(auteur or "onbekend")[:200], integriteit_algoritme="sha_256", integriteit_waarde=document.sha256,
    )
    session.add(informatieobject)
    bijlage = Bijlage(
        klantcontact=contact, informatieobject=informatieobject,
        bijlageidentificator_object_id=str(informatieobject.uuid),
        bijlageidentificator_code_objecttype=DOCUMENT_OBJECTTYPE,
        bijlageidentificator_code_register=DOCUMENT_REGISTER, bijlageidentificator_code_soort_object_id="uuid",
    )
    session.add(bijlage)
    return bijlage


def mail_documents(mail: InboundMail) -> list[Document]:
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
