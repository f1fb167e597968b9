"""A reply that did not reach the customer: the klantcontact says so, and the KCC gets a task to follow it up.

Called by the relay inside its finishing transaction (and later by bounce handling), after the outbox status has
been set; this module only does the Klantinteracties part.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from kcc.actors import find_or_create, parse_actor
from kcc.taken import nieuwe_taak
from store.klantinteracties import Klantcontact
from store.outbox import OutboxMessage
from store.types import utcnow

GEVRAAGDE_HANDELING = "Antwoord niet afgeleverd"
KCC = parse_actor("afdeling:KCC")
TOELICHTING_MAX = 1000


def report_undelivered(session: Session, outbox: OutboxMessage, reason: str) -> None:
    """`indicatieContactGelukt = false` (unless the reply reached some recipients) and a task for the KCC.

    A reply that was `sent` but refused for one of several recipients did take place, so its klantcontact keeps
    `true`; the task still tells the KCC who did not get it.
    """
    contact = session.get(Klantcontact, outbox.klantcontact_id)
    if contact is None:  # a foreign key guarantees it; refuse loudly rather than lose the follow-up
        raise LookupError(f"outbox {outbox.id} points at klantcontact {outbox.klantcontact_id}, which is missing")
    if outbox.status != "sent":
        contact.indicatie_contact_gelukt = False
    kcc = find_or_create(session, KCC)
    nieuwe_taak(session, contact, GEVRAAGDE_HANDELING, toelichting(outbox, reason), [kcc], now=utcnow())


def toelichting(outbox: OutboxMessage, reason: str) -> str:
    """What the colleague needs: to whom, which message, what the mail server said, and what to do next."""
    if outbox.status == "sent":
        wat = "Het antwoord is verstuurd, maar niet aan alle geadresseerden afgeleverd."
        slot = " Neem op een andere manier contact op met wie het niet kreeg."
    else:
        wat = "Het antwoord is niet afgeleverd."
        slot = (
            " Neem op een andere manier contact op met de klant, of verstuur het opnieuw met "
            f"`kcc-mail outbox resend {outbox.id}`."
        )
    aan = ", ".join(outbox.envelope_to) or "(geen geadresseerde)"
    kop = f"{wat} Aan: {aan}. Message-ID: {outbox.message_id}. Antwoord van de mailserver: "
    ruimte = TOELICHTING_MAX - len(kop) - len(slot)
    melding = " ".join(reason.split())
    if len(melding) > ruimte:
        melding = melding[: max(ruimte - 1, 0)] + "…"
    return (kop + melding + slot)[:TOELICHTING_MAX]
