"""What a reply's delivery means for its klantcontact: the one place indicatieContactGelukt changes.

Delivered: the outgoing klantcontact took place at the moment the server accepted it (`true`). Not delivered:
`false` (unless some recipients got it) and an interne taak "Antwoord niet afgeleverd" for the KCC. Called inside
the outbox transactions of kcc.usecases.outbox (relay outcome, operator's mark-sent, a bounce); never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from kcc.records.actor import find_or_create, parse_actor
from kcc.records.interne_taak import TOELICHTING_MAX, create_interne_taak
from store import export
from store.klantinteracties import InterneTaak, Klantcontact
from store.outbox import OutboxMessage
from store.states import OutboxStatus, TaakStatus
from store.types import UTCDateTime, utcnow

GEVRAAGDE_HANDELING = "Antwoord niet afgeleverd"
KCC = parse_actor("afdeling:KCC")

_klantcontact = cast(Table, Klantcontact.__table__)
_DELIVERED = (
    update(_klantcontact).where(_klantcontact.c.id == bindparam("contact"))
    .values(indicatie_contact_gelukt=True, plaatsgevonden_op=bindparam("at", type_=UTCDateTime()))
)


def delivered(session: Session, contacts: Sequence[tuple[int, datetime]]) -> None:
    """The replies arrived: each (klantcontact id, accepted at) took place then, and succeeded (one statement)."""
    if contacts:
        session.execute(_DELIVERED, [{"contact": contact, "at": at} for contact, at in contacts])
        export.enqueue(session, [contact for contact, _ in contacts], "antwoord_afgeleverd")


def undelivered(session: Session, outbox: OutboxMessage, reason: str) -> None:
    """`indicatieContactGelukt = false` (unless the reply reached some recipients) and a task for the KCC.

    A reply that was `sent` but refused for one of several recipients did take place, so its klantcontact keeps
    `true`; the task still tells the KCC who did not get it.
    """
    contact = session.get(Klantcontact, outbox.klantcontact_id)
    if contact is None:  # a foreign key guarantees it; refuse loudly rather than lose the follow-up
        raise LookupError(f"outbox {outbox.id} points at klantcontact {outbox.klantcontact_id}, which is missing")
    if outbox.status != OutboxStatus.SENT:
        contact.indicatie_contact_gelukt = False
    text = toelichting(outbox, reason)
    open_task = session.scalar(select(InterneTaak).where(
        InterneTaak.aanleidinggevend_klantcontact_id == contact.id,
        InterneTaak.gevraagde_handeling == GEVRAAGDE_HANDELING, InterneTaak.status == TaakStatus.TE_VERWERKEN,
    ).limit(1))
    export.enqueue(session, contact.id, "antwoord_niet_afgeleverd")
    if open_task is not None:  # a resend that failed again: the KCC's open task says so, no second one
        open_task.toelichting = text
        return
    kcc = find_or_create(session, KCC)
    create_interne_taak(session, contact, GEVRAAGDE_HANDELING, text, [kcc], now=utcnow())


def toelichting(outbox: OutboxMessage, reason: str) -> str:
    """What the colleague needs: to whom, which message, what the mail server said, and what to do next."""
    if outbox.status == OutboxStatus.SENT:
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
