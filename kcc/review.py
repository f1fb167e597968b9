"""Review decisions: a mail an employee has looked at becomes a klantcontact with its follow-up, in one transaction.

A klantcontact has no status of its own, so it is only born here, together with what happens next. If any part
fails, nothing is stored and the mail stays `te_beoordelen`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kcc.actors import ActorRef, find_or_create, service_actor
from kcc.antwoord import Antwoord, refusal_to_answer, registreer_antwoord
from kcc.config import Config
from kcc.registratie import audit, registreer_inkomend
from kcc.taken import nieuwe_taak
from store.klantinteracties import Actor
from store.mail import DISMISS_REASON, InboundMail
from store.types import utcnow
from store.uow import UnitOfWork


class DecisionError(Exception):
    """The decision cannot be taken (unknown mail, already decided, bad input); nothing was changed."""


@dataclass(frozen=True, slots=True)
class Taak:
    """Follow-up by a colleague (C0534, C9167): an interne taak assigned to one or more actors."""

    gevraagde_handeling: str
    toegewezen_aan: tuple[ActorRef, ...]
    toelichting: str = ""


@dataclass(frozen=True, slots=True)
class GeenOpvolging:
    """The employee saw it and no action is needed."""


FollowUp = Taak | GeenOpvolging | Antwoord


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
    session: Session, mail_id: int, allowed: tuple[str, ...] = ("te_beoordelen",)
) -> InboundMail:
    """Lock the mail row so two employees deciding at once queue up; the second then sees it decided."""
    mail = session.scalar(
        select(InboundMail).where(InboundMail.id == mail_id).options(selectinload(InboundMail.attachments))
        .with_for_update()
    )
    if mail is None:
        raise DecisionError(f"no stored mail with id {mail_id}; `kcc-mail queue list` shows the waiting mails")
    if mail.state not in allowed:
        by = ""
        if mail.reviewed_by_id is not None:
            actor = session.get(Actor, mail.reviewed_by_id)
            when = mail.reviewed_at.isoformat(timespec="seconds") if mail.reviewed_at else "?"
            by = f" by {actor.naam if actor else '?'} at {when}"
        hint = {
            "quarantaine": "release it first with `kcc-mail quarantine release`",
        }.get(mail.state, "it was decided already; nothing was changed")
        raise DecisionError(f"mail {mail_id} is {mail.state}{by}: {hint}")
    return mail


def register(
    uow: UnitOfWork, config: Config, mail_id: int, follow_up: FollowUp, medewerker: ActorRef,
    *, now: datetime | None = None,
) -> Registered:
    """Register the mail as klantcontact with its follow-up (a task, an answer, or nothing), in one transaction."""
    now = now or utcnow()
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id)
        if isinstance(follow_up, Antwoord) and (refusal := refusal_to_answer(mail, follow_up)):
            raise DecisionError(refusal)
        beoordelaar = find_or_create(session, medewerker)
        actoren = [beoordelaar, service_actor(session)]
        contact = registreer_inkomend(session, mail, config.organisatie, actoren)
        result = Registered(mail.id, contact.id, str(contact.uuid), contact.referentienummer)
        details: dict[str, object] = {"klantcontact": str(contact.uuid), "opvolging": "geen"}
        if isinstance(follow_up, Taak):
            taak = nieuwe_taak(
                session, contact, follow_up.gevraagde_handeling, follow_up.toelichting,
                [find_or_create(session, ref) for ref in follow_up.toegewezen_aan], now=now,
            )
            result = replace(result, interne_taak_id=taak.id)
            details |= {"opvolging": "taak", "interneTaak": taak.id}
        elif isinstance(follow_up, Antwoord):
            verstuurd = registreer_antwoord(session, config, mail, contact, follow_up, actoren, now)
            result = replace(result, antwoord_klantcontact_id=verstuurd.klantcontact.id, outbox_id=verstuurd.outbox.id)
            details |= {
                "opvolging": "antwoord", "antwoordKlantcontact": str(verstuurd.klantcontact.uuid),
                "outbox": verstuurd.outbox.id, "template": follow_up.template, "geforceerd": follow_up.force,
            }
        mark_registered(session, mail, contact.id, beoordelaar, now)
        audit(session, str(medewerker), "mail.geregistreerd", "inbound_mail", mail.id, **details)
        uow.commit()
        return result


def mark_registered(
    session: Session, mail: InboundMail, klantcontact_id: int, beoordelaar: Actor, now: datetime
) -> None:
    mail.state, mail.klantcontact_id = "geregistreerd", klantcontact_id
    mail.reviewed_by_id, mail.reviewed_at = beoordelaar.id, now
    session.flush()


def dismiss(
    uow: UnitOfWork, mail_id: int, reason: str, medewerker: ActorRef, *, now: datetime | None = None,
    allowed: tuple[str, ...] = ("te_beoordelen",),
) -> None:
    """Not a customer contact (spam, auto-reply, bounce, duplicate): no klantcontact, the reason recorded."""
    if reason not in DISMISS_REASON:
        raise DecisionError(f"unknown reason {reason!r}; choose one of {', '.join(DISMISS_REASON)}")
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id, allowed)
        beoordelaar = find_or_create(session, medewerker)
        mail.state, mail.dismiss_reason = "afgewezen", reason
        mail.reviewed_by_id, mail.reviewed_at = beoordelaar.id, now or utcnow()
        audit(session, str(medewerker), "mail.afgewezen", "inbound_mail", mail.id, reden=reason)
        uow.commit()
