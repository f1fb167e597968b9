"""A mail's history: what came before from the same address or in the same thread, so the employee answers with
the whole conversation in view (the earlier mails, their klantcontacten, and our answers to them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import load_only

from kcc.usecases.review import MailNotFound
from store.klantinteracties import Klantcontact, Onderwerpobject
from store.mail import InboundMail
from store.outbox import OutboxMessage
from store.uow import UnitOfWork

__all__ = ["HISTORY_LIMIT", "history"]

HISTORY_LIMIT = 25
"""Entries shown per mail; an address that mailed more often shows its newest."""


SHOWN = (InboundMail.subject, InboundMail.received_at, InboundMail.state, InboundMail.from_address,
         InboundMail.klantcontact_id, InboundMail.message_id, InboundMail.in_reply_to)
"""What a row of the history shows or needs: never the bodies."""


def history(uow: UnitOfWork, mail_id: int, *, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """Other mails of the same sender or thread, newest first, each with its klantcontact and our answer, if any."""
    with uow:
        session = uow.session
        mail = session.get(InboundMail, mail_id)
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}")
        thread_ids = [i for i in (mail.in_reply_to, *mail.references) if i]
        # Every branch of the OR below is an indexed equality, so PostgreSQL combines indexes instead of reading
        # all mail: the mails our answers in this thread were about are looked up first, as plain ids.
        related: list[ColumnElement[bool]] = []
        if thread_ids:
            answered = select(OutboxMessage.klantcontact_id).where(OutboxMessage.message_id.in_(thread_ids))
            answered_mails = list(session.scalars(select(InboundMail.id).join(
                Onderwerpobject, Onderwerpobject.was_klantcontact_id == InboundMail.klantcontact_id
            ).where(Onderwerpobject.klantcontact_id.in_(answered))))
            related.append(InboundMail.message_id.in_(thread_ids))
            if answered_mails:
                related.append(InboundMail.id.in_(answered_mails))
        if mail.message_id:
            related.append(InboundMail.in_reply_to == mail.message_id)
        our_answers: list[str] = []
        if mail.klantcontact_id is not None:  # the mails that answer our answer to this one
            our_answers = list(session.scalars(
                select(OutboxMessage.message_id).join(Onderwerpobject,
                                                      Onderwerpobject.klantcontact_id == OutboxMessage.klantcontact_id)
                .where(Onderwerpobject.was_klantcontact_id == mail.klantcontact_id)))
            if our_answers:
                related.append(InboundMail.in_reply_to.in_(our_answers))
        if mail.from_address:
            related.append(func.lower(InboundMail.from_address) == mail.from_address.lower())
        if not related:
            return []
        rows = session.scalars(
            select(InboundMail).options(load_only(*SHOWN)).where(InboundMail.id != mail.id, or_(*related))
            .order_by(InboundMail.received_at.desc(), InboundMail.id.desc()).limit(limit)
        ).all()
        contact_ids = [r.klantcontact_id for r in rows if r.klantcontact_id is not None]
        contacts = {c.id: c for c in session.scalars(select(Klantcontact).where(Klantcontact.id.in_(contact_ids)))}
        answers = _answers(session, contact_ids)
        entries = []
        for row in rows:
            contact = contacts.get(row.klantcontact_id) if row.klantcontact_id is not None else None
            answer = answers.get(row.klantcontact_id) if row.klantcontact_id is not None else None
            answers_thread = answer is not None and answer["messageId"] in thread_ids
            in_thread = (row.message_id in thread_ids or row.in_reply_to == mail.message_id or answers_thread
                         or row.in_reply_to in our_answers)
            entries.append({
                "id": row.id, "subject": row.subject, "receivedAt": row.received_at, "state": row.state,
                "from": row.from_address, "waarom": "zelfde gesprek" if in_thread else "zelfde afzender",
                "klantcontact": None if contact is None else {
                    "id": contact.id, "uuid": str(contact.uuid), "referentienummer": contact.referentienummer,
                },
                "antwoord": answer,
            })
        return entries


def _answers(session: Any, contact_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Our answer to each of these klantcontacten (its onderwerpobject names the incoming one)."""
    if not contact_ids:
        return {}
    rows = session.execute(
        select(Onderwerpobject.was_klantcontact_id, Klantcontact, OutboxMessage)
        .join(Klantcontact, Klantcontact.id == Onderwerpobject.klantcontact_id)
        .join(OutboxMessage, OutboxMessage.klantcontact_id == Klantcontact.id)
        .where(Onderwerpobject.was_klantcontact_id.in_(contact_ids))
    ).all()
    return {
        incoming: {"referentienummer": contact.referentienummer, "onderwerp": contact.onderwerp,
                   "status": outbox.status, "messageId": outbox.message_id, "at": contact.plaatsgevonden_op}
        for incoming, contact, outbox in rows
    }
