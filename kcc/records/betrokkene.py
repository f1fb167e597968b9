"""The customer as betrokkene of a klantcontact, with the e-mail address to reach them (never commits)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from kcc.errors import Refused
from kcc.records.contactnaam import contactnaam_from
from store.klantinteracties import Betrokkene, DigitaalAdres, Klantcontact
from store.mail import InboundMail
from store.states import Rol, SoortDigitaalAdres

ADRES_MAX = 80


class BetrokkeneError(Refused):
    """The mail's customer cannot be recorded as it is; the message says why and what to do."""


def klant_adres(mail: InboundMail) -> str:
    """Where the customer wants an answer: the Reply-To address if the mail has one, else From."""
    return (mail.reply_to[0] if mail.reply_to else mail.from_address).strip()


def add_klant(session: Session, contact: Klantcontact, mail: InboundMail, *, initiator: bool) -> Betrokkene:
    """The customer as betrokkene (not identified as a partij) with the e-mail address to reach them."""
    naam = contactnaam_from(mail.from_name)
    betrokkene = Betrokkene(
        klantcontact_id=contact.id, was_partij_uuid=None, rol=Rol.KLANT, initiator=initiator,
        organisatienaam=naam.organisatienaam, contactnaam_voorletters=naam.voorletters,
        contactnaam_voornaam=naam.voornaam, contactnaam_voorvoegsel_achternaam=naam.voorvoegsel_achternaam,
        contactnaam_achternaam=naam.achternaam,
    )
    session.add(betrokkene)
    session.flush()
    adres = klant_adres(mail)
    if adres:
        if len(adres) > ADRES_MAX:
            raise BetrokkeneError(
                f"the customer's address {len(adres)} characters long does not fit DigitaalAdres.adres "
                f"({ADRES_MAX}); dismiss the mail or answer it outside kcc-mail"
            )
        session.add(DigitaalAdres(
            betrokkene_id=betrokkene.id, soort_digitaal_adres=SoortDigitaalAdres.EMAIL, adres=adres,
            omschrijving="e-mail uit bericht",
        ))
    return betrokkene
