"""`kcc-mail verify`: prove the no-orphan invariant on the data as it is, not as the code hopes it is.

Every incoming klantcontact has the registered mail it came from, the decision's audit event and the follow-up
that decision named; every registered mail has its klantcontact; every answer has its outbox message and the
onderwerpobject that ties it to the customer's mail.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from store.audit import AuditEvent
from store.klantinteracties import Betrokkene, InterneTaak, Klantcontact, Onderwerpobject
from store.mail import InboundMail
from store.outbox import OutboxMessage
from store.states import MailState
from store.uow import UnitOfWork


def verify(uow: UnitOfWork) -> list[str]:
    """All violations found, one line each; an empty list means the data is whole."""
    with uow:
        return list(_violations(uow.session))


def _violations(session: Session) -> Iterator[str]:
    yield from _contacts_without_customer(session)
    yield from _incoming_without_mail(session)
    yield from _registered_without_contact_or_follow_up(session)
    yield from _replies_without_outbox_or_subject(session)


def _contacts_without_customer(session: Session) -> Iterator[str]:
    query = select(Klantcontact.id).where(~exists().where(Betrokkene.klantcontact_id == Klantcontact.id))
    for contact_id in session.scalars(query):
        yield f"klantcontact {contact_id} has no betrokkene: no customer is recorded for it"


def _incoming_without_mail(session: Session) -> Iterator[str]:
    incoming = select(Betrokkene.klantcontact_id).where(Betrokkene.initiator.is_(True))
    query = select(Klantcontact.id).where(
        Klantcontact.id.in_(incoming), ~exists().where(InboundMail.klantcontact_id == Klantcontact.id)
    )
    for contact_id in session.scalars(query):
        yield f"klantcontact {contact_id} is an incoming contact without the registered mail it came from"


def _registered_without_contact_or_follow_up(session: Session) -> Iterator[str]:
    query = select(InboundMail).where(InboundMail.state == MailState.GEREGISTREERD)
    for mail in session.scalars(query.execution_options(yield_per=500)):
        if mail.klantcontact_id is None or session.get(Klantcontact, mail.klantcontact_id) is None:
            yield f"mail {mail.id} is geregistreerd but has no klantcontact"
            continue
        event = session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "mail.geregistreerd", AuditEvent.object_type == "inbound_mail",
                AuditEvent.object_id == str(mail.id),
            ).limit(1)
        )
        if event is None:
            yield f"mail {mail.id} (klantcontact {mail.klantcontact_id}) has no audit event of its registration"
            continue
        opvolging = event.details.get("opvolging")
        if opvolging == "taak" and not session.scalar(
            select(exists().where(InterneTaak.aanleidinggevend_klantcontact_id == mail.klantcontact_id))
        ):
            yield f"klantcontact {mail.klantcontact_id} was registered with a task, but has no interne taak"
        if opvolging == "antwoord" and not session.scalar(
            select(exists().where(Onderwerpobject.was_klantcontact_id == mail.klantcontact_id))
        ):
            yield f"klantcontact {mail.klantcontact_id} was registered with an answer, but no answer is about it"


def _replies_without_outbox_or_subject(session: Session) -> Iterator[str]:
    """Our answers: a klantcontact whose only betrokkenen are not the initiator."""
    outgoing = select(Betrokkene.klantcontact_id).where(Betrokkene.initiator.is_(False))
    incoming = select(Betrokkene.klantcontact_id).where(Betrokkene.initiator.is_(True))
    query = select(Klantcontact.id).where(Klantcontact.id.in_(outgoing), Klantcontact.id.not_in(incoming))
    for contact_id in session.scalars(query):
        if not session.scalar(select(exists().where(OutboxMessage.klantcontact_id == contact_id))):
            yield f"answer klantcontact {contact_id} has no outbox message: it was never sent nor queued"
        if not session.scalar(select(exists().where(Onderwerpobject.klantcontact_id == contact_id))):
            yield f"answer klantcontact {contact_id} has no onderwerpobject linking it to the customer's mail"
