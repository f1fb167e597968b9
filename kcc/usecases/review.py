"""Review decisions: a mail an employee has looked at becomes a klantcontact with its follow-up, in one transaction.

A klantcontact has no status of its own, so it is only born here, together with what happens next: an interne taak
(C0534, C9167), nothing (register only), or an answer (C1199 A, kcc.usecases.reply). If any part fails, nothing is
stored and the mail stays `te_beoordelen`. Dismissing records that a mail is no customer contact at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kcc.config import Config
from kcc.errors import NotFound, Refused
from kcc.records.actor import ActorRef, find_or_create, with_service_actor
from kcc.records.betrokkene import left_out_adres
from kcc.records.interne_taak import create_interne_taak
from kcc.records.klantcontact import register_incoming
from store import audit, export
from store.klantinteracties import Actor, Klantcontact
from store.mail import InboundMail
from store.states import DismissReason, MailState
from store.types import utcnow
from store.uow import UnitOfWork


class DecisionError(Refused):
    """The decision cannot be taken (already decided, in quarantine, bad input); nothing was changed."""


class MailNotFound(DecisionError, NotFound):
    """No stored mail has that id (so no decision can be taken on it either)."""


@dataclass(frozen=True, slots=True)
class HandOff:
    """Follow-up by a colleague (C0534, C9167): an interne taak assigned to one or more actors."""

    gevraagde_handeling: str
    toegewezen_aan: tuple[ActorRef, ...]
    toelichting: str = ""


@dataclass(frozen=True, slots=True)
class NoFollowUp:
    """The employee saw it and no action is needed."""


@dataclass(frozen=True, slots=True)
class Registered:
    mail_id: int
    klantcontact_id: int
    klantcontact_uuid: str
    referentienummer: str
    interne_taak_id: int | None = None
    antwoord_klantcontact_id: int | None = None
    outbox_id: int | None = None


def lock_mail_for_decision(
    session: Session, mail_id: int, allowed: tuple[str, ...] = (MailState.TE_BEOORDELEN,), *, attachments: bool = True,
) -> InboundMail:
    """Lock the mail row so two employees deciding at once queue up; the second then sees it decided.

    `attachments=False` when the caller only looks at the mail (one statement less): they are not loaded then.
    """
    query = select(InboundMail).where(InboundMail.id == mail_id).with_for_update()
    if attachments:
        query = query.options(selectinload(InboundMail.attachments))
    mail = session.scalar(query)
    if mail is None:
        raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail queue list` shows the waiting mails")
    if mail.state not in allowed:
        by = ""
        if mail.reviewed_by_id is not None:
            actor = session.get(Actor, mail.reviewed_by_id)
            when = mail.reviewed_at.isoformat(timespec="seconds") if mail.reviewed_at else "?"
            by = f" by {actor.naam if actor else '?'} at {when}"
        hint = {
            MailState.QUARANTAINE: "release it first with `kcc-mail quarantine release`",
        }.get(MailState(mail.state), "it was decided already; nothing was changed")
        raise DecisionError(f"mail {mail_id} is {mail.state}{by}: {hint}")
    return mail


def register(
    uow: UnitOfWork, config: Config, mail_id: int, follow_up: HandOff | NoFollowUp, medewerker: ActorRef,
    *, now: datetime | None = None,
) -> Registered:
    """Register the mail as klantcontact with an interne taak or no follow-up, in one transaction."""
    now = now or utcnow()
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id)
        contact, beoordelaar, _actoren = register_mail(session, config, mail, medewerker)
        session.flush()  # the klantcontact's id, which the task, the mail and the export job refer to
        result = Registered(mail.id, contact.id, str(contact.uuid), contact.referentienummer)
        details: dict[str, object] = {"klantcontact": str(contact.uuid), "opvolging": "geen", **left_out_adres(mail)}
        if isinstance(follow_up, HandOff):
            taak = create_interne_taak(
                session, contact, follow_up.gevraagde_handeling, follow_up.toelichting,
                [find_or_create(session, ref) for ref in follow_up.toegewezen_aan], now=now,
            )
            result = replace(result, interne_taak_id=taak.id)
            details |= {"opvolging": "taak", "interneTaak": taak.id}
        mark_registered(session, mail, contact.id, beoordelaar, now)
        export.enqueue(session, contact.id, "registreren")
        audit.record(session, str(medewerker), "mail.geregistreerd", "inbound_mail", mail.id, **details)
        uow.commit()
        return result


def register_mail(
    session: Session, config: Config, mail: InboundMail, medewerker: ActorRef, *, referentienummer: str | None = None,
) -> tuple[Klantcontact, Actor, list[Actor]]:
    """The incoming klantcontact of a locked mail, with the reviewing medewerker and this service as actors.

    Added, not flushed (the caller flushes once for all it records; see create_klantcontact)."""
    beoordelaar, service = with_service_actor(session, medewerker)
    actoren = [beoordelaar, service]
    contact = register_incoming(session, mail, config.organisatie, actoren, referentienummer=referentienummer)
    return contact, beoordelaar, actoren


def mark_registered(
    session: Session, mail: InboundMail, klantcontact_id: int, beoordelaar: Actor, now: datetime
) -> None:
    mail.state, mail.klantcontact_id = MailState.GEREGISTREERD, klantcontact_id
    mail.reviewed_by_id, mail.reviewed_at = beoordelaar.id, now
    session.flush()


def dismiss(
    uow: UnitOfWork, mail_id: int, reason: str, medewerker: ActorRef, *, now: datetime | None = None,
    allowed: tuple[str, ...] = (MailState.TE_BEOORDELEN,),
) -> None:
    """Not a customer contact (spam, auto-reply, bounce, duplicate): no klantcontact, the reason recorded."""
    if reason not in tuple(DismissReason):
        raise DecisionError(f"unknown reason {reason!r}; choose one of {', '.join(DismissReason)}")
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id, allowed)
        beoordelaar = find_or_create(session, medewerker)
        mail.state, mail.dismiss_reason = MailState.AFGEWEZEN, reason
        mail.reviewed_by_id, mail.reviewed_at = beoordelaar.id, now or utcnow()
        audit.record(session, str(medewerker), "mail.afgewezen", "inbound_mail", mail.id, reden=reason)
        uow.commit()
