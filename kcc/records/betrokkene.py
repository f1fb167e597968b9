"""The customer as betrokkene of a klantcontact, with the e-mail address to reach them (never commits)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from kcc.records.contactnaam import contactnaam_from
from store.klantinteracties import Betrokkene, DigitaalAdres, Klantcontact
from store.mail import InboundMail
from store.states import Rol, SoortDigitaalAdres

ADRES_MAX = 80


def fits(adres: str) -> bool:
    """Does the address fit DigitaalAdres.adres (80 characters)?

    Decided: an address that does not (a sender can make a Reply-To as long as they like) is left out of the
    betrokkene, and the decision's audit event says so; the mail is still registered, and a reply still goes to
    it: the outbox keeps the whole address.
    """
    return len(adres) <= ADRES_MAX


def left_out_adres(mail: InboundMail) -> dict[str, str]:
    """What the decision's audit event notes when the customer's address was left out of the betrokkene."""
    adres = klant_adres(mail)
    if adres and not fits(adres):
        return {"digitaalAdres": f"weggelaten: {len(adres)} tekens, langer dan {ADRES_MAX}"}
    return {}


def klant_adres(mail: InboundMail) -> str:
    """Where the customer wants an answer: the Reply-To address if the mail has one, else From."""
    return (mail.reply_to[0] if mail.reply_to else mail.from_address).strip()


def add_klant(session: Session, contact: Klantcontact, mail: InboundMail, *, initiator: bool) -> Betrokkene:
    """The customer as betrokkene (not identified as a partij) with the e-mail address to reach them (added, not
    flushed)."""
    naam = contactnaam_from(mail.from_name)
    betrokkene = Betrokkene(
        klantcontact=contact, was_partij_uuid=None, rol=Rol.KLANT, initiator=initiator,
        organisatienaam=naam.organisatienaam, contactnaam_voorletters=naam.voorletters,
        contactnaam_voornaam=naam.voornaam, contactnaam_voorvoegsel_achternaam=naam.voorvoegsel_achternaam,
        contactnaam_achternaam=naam.achternaam,
    )
    session.add(betrokkene)
    adres = klant_adres(mail)
    if adres and fits(adres):
        session.add(DigitaalAdres(
            betrokkene=betrokkene, soort_digitaal_adres=SoortDigitaalAdres.EMAIL, adres=adres,
            omschrijving="e-mail uit bericht",
        ))
    return betrokkene
