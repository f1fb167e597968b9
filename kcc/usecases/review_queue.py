"""The review queue as the KCC employee sees it: stored mails, oldest first, with what the parser found."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from kcc.errors import Refused
from kcc.usecases.mail_files import describe_message, is_message
from kcc.usecases.paging import Page
from kcc.usecases.review import MailNotFound
from store.blobs import get_blob
from store.klantinteracties import Actor
from store.mail import InboundAttachment, InboundMail
from store.states import MailState
from store.uow import UnitOfWork

__all__ = ["MailNotFound", "UnknownState", "list_mails", "show_mail", "summary"]


class UnknownState(Refused):
    """The state asked for does not exist."""


def list_mails(
    uow: UnitOfWork, *, state: str | None = MailState.TE_BEOORDELEN, mailbox: str | None = None,
    limit: int | None = 500, offset: int = 0,
) -> Page[dict[str, Any]]:
    """Mails in `state` (all states when None), oldest received first, one page of them with the total."""
    if state is not None and state not in tuple(MailState):
        raise UnknownState(f"unknown state {state!r}; choose one of {', '.join(MailState)} or all")
    conditions = []
    if state is not None:
        conditions.append(InboundMail.state == state)
    if mailbox is not None:
        conditions.append(InboundMail.mailbox == mailbox)
    with uow:
        counts = (
            select(InboundAttachment.inbound_mail_id, func.count().label("n"))
            .group_by(InboundAttachment.inbound_mail_id)
            .subquery()
        )
        query = (
            select(InboundMail, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.inbound_mail_id == InboundMail.id)
            .where(*conditions)
            .order_by(InboundMail.received_at, InboundMail.id)
            .offset(offset)
            .limit(limit)
        )
        total = uow.session.scalar(select(func.count()).select_from(InboundMail).where(*conditions)) or 0
        return Page((summary(mail, attachments) for mail, attachments in uow.session.execute(query)), total=total,
                    offset=offset, limit=limit)


def summary(mail: InboundMail, attachments: int) -> dict[str, Any]:
    return {
        "id": mail.id,
        "uuid": str(mail.uuid),
        "state": mail.state,
        "mailbox": mail.mailbox,
        "messageId": mail.message_id,
        "from": mail.from_address,
        "fromName": mail.from_name,
        "subject": mail.subject,
        "receivedAt": mail.received_at.isoformat(),
        "flags": list(mail.flags),
        "reason": mail.reason,
        "attachments": attachments,
    }


def show_mail(uow: UnitOfWork, mail_id: int) -> dict[str, Any]:
    """Everything the reviewer needs to decide: headers, text, attachments, flags, and any quarantine error."""
    with uow:
        mail = uow.session.scalar(
            select(InboundMail).where(InboundMail.id == mail_id).options(selectinload(InboundMail.attachments))
        )
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail queue list --state all` lists them")
        detail = summary(mail, len(mail.attachments))
        detail.update(
            {
                "to": list(mail.to_addresses),
                "cc": list(mail.cc_addresses),
                "replyTo": list(mail.reply_to),
                "sentAt": mail.sent_at.isoformat() if mail.sent_at else None,
                "messageIdSynthetic": mail.message_id_synthetic,
                "inReplyTo": mail.in_reply_to,
                "references": list(mail.references),
                "text": mail.text_body,
                "size": mail.size,
                "sha256": mail.raw_sha256,
                "uidvalidity": mail.uidvalidity,
                "uid": mail.uid,
                "classification": dict(mail.classification),
                "defects": list(mail.defects),
                "error": mail.error,
                "dismissReason": mail.dismiss_reason,
                "klantcontactId": mail.klantcontact_id,
                "hasHtml": mail.html_body is not None,
                "reviewedBy": _reviewer(uow, mail.reviewed_by_id),
                "reviewedAt": mail.reviewed_at.isoformat() if mail.reviewed_at else None,
                "attachmentList": [_attachment(uow, number, a) for number, a in enumerate(mail.attachments, 1)],
            }
        )
        return detail


def _reviewer(uow: UnitOfWork, actor_id: int | None) -> dict[str, str] | None:
    """Who decided on the mail (the medewerker's actor), so a second employee learns who was first."""
    if actor_id is None:
        return None
    actor = uow.session.get(Actor, actor_id)
    return None if actor is None else {"naam": actor.naam, "identificator": actor.actoridentificator_object_id}


def _attachment(uow: UnitOfWork, number: int, attachment: InboundAttachment) -> dict[str, Any]:
    """One attachment as listed; an attached message also shows its sender, subject and own attachments."""
    entry: dict[str, Any] = {
        "number": number, "bestandsnaam": attachment.bestandsnaam, "formaat": attachment.formaat,
        "size": attachment.size, "sha256": attachment.blob_sha256, "inline": attachment.inline,
    }
    if is_message(attachment.formaat):
        entry["message"] = describe_message(get_blob(uow.session, attachment.blob_sha256))
    return entry
