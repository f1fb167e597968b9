"""Bounces of our own replies: the answer did not arrive, so a human must follow up.

Intake only classifies (a bounce, naming the Message-ID it is about); this use case joins that to the outbox
through the database, as DESIGN.md wants ingest and replies to meet: the outbox message becomes `bounced`, the
answer klantcontact `indicatieContactGelukt = false` with a task for the KCC, and the bounce itself is
dismissed with reason `bounce`, linked in its audit event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Text, cast, select

from kcc.records.actor import service_actor
from kcc.usecases.outbox import OutboxNotFound, mark_bounced
from kcc.usecases.review import DecisionError, lock_mail_for_decision
from store import audit
from store.mail import InboundMail
from store.outbox import OutboxMessage
from store.states import DismissReason, MailState
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

SERVICE = "geautomatiseerde_actor:kcc-mail"


def bounces_of_our_replies(uow: UnitOfWork) -> list[tuple[int, int]]:
    """(mail id, outbox id) for each waiting bounce that names one of our Message-IDs."""
    with uow:
        waiting = uow.session.execute(  # the flag is looked for by the database: a poll does not read the queue
            select(InboundMail.id, InboundMail.flags, InboundMail.classification).where(
                InboundMail.state == MailState.TE_BEOORDELEN, cast(InboundMail.flags, Text).like('%"bounce"%')
            )
        ).all()
        named = {
            str(classification.get("bounceOriginalMessageId")): mail_id
            for mail_id, flags, classification in waiting
            if "bounce" in flags and classification.get("bounceOriginalMessageId")
        }
        if not named:
            return []
        matches = uow.session.execute(
            select(OutboxMessage.message_id, OutboxMessage.id).where(OutboxMessage.message_id.in_(named))
        ).all()
        return [(named[message_id], outbox_id) for message_id, outbox_id in matches]


def process_bounces(make_uow: Callable[[], UnitOfWork], *, now: datetime | None = None) -> int:
    """Handle every waiting bounce of one of our replies; returns how many were handled."""
    handled = 0
    for mail_id, outbox_id in bounces_of_our_replies(make_uow()):
        try:
            handle_bounce(make_uow(), mail_id, outbox_id, now=now)
            handled += 1
        except DecisionError:
            continue  # an employee decided on the bounce meanwhile; theirs stands
    return handled


def handle_bounce(uow: UnitOfWork, mail_id: int, outbox_id: int, *, now: datetime | None = None) -> None:
    """One bounce, in one transaction: outbox bounced, klantcontact false + task, bounce dismissed."""
    now = now or utcnow()
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id)
        outbox = session.scalar(select(OutboxMessage).where(OutboxMessage.id == outbox_id).with_for_update())
        if outbox is None:
            raise OutboxNotFound(f"outbox {outbox_id} disappeared while its bounce (mail {mail_id}) was handled")
        recipient = mail.classification.get("bounceRecipient") or ", ".join(outbox.envelope_to)
        mark_bounced(session, outbox, mail.id, recipient)
        kcc_mail = service_actor(session)
        mail.state, mail.dismiss_reason = MailState.AFGEWEZEN, DismissReason.BOUNCE
        mail.reviewed_by_id, mail.reviewed_at = kcc_mail.id, now
        audit.record(session, SERVICE, "mail.afgewezen", "inbound_mail", mail.id, reden="bounce", outbox=outbox.id,
                     automatisch=True)
        uow.commit()
    log.info("bounce mail=%s matched outbox=%s; reply marked bounced, task for the KCC", mail_id, outbox_id)
