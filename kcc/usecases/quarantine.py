"""Quarantine: the stored mails the parser could not handle, and what an operator can do with each.

A quarantined mail is kept whole (its raw bytes are a blob), so nothing is lost while the parser is fixed:
`reprocess` brings it back automatically; `release` puts it in the review queue as it is (the raw mail then
becomes its only bijlage when registered); `dismiss` records that it is not a customer contact; `export`
hands the exact bytes to a developer for a bug report.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from kcc.errors import Refused
from kcc.records.actor import ActorRef
from kcc.usecases.review import MailNotFound, dismiss, lock_mail_for_decision
from store import audit
from store.blobs import get_blob
from store.mail import InboundMail
from store.states import MailState, QuarantineReason
from store.uow import UnitOfWork

__all__ = [
    "MAX_HEADER_CHARS",
    "QuarantineError",
    "dismiss_quarantined",
    "list_quarantine",
    "raw_header_block",
    "release",
    "show_quarantined",
]

MAX_HEADER_CHARS = 64 * 1024
"""Enough for any sane header block; a hostile one (flanker's 209 KB header) is cut, the export has it all."""


class QuarantineError(Refused):
    """The quarantine command cannot be done as asked; nothing was changed."""


def list_quarantine(
    uow: UnitOfWork, *, reason: str | None = None, mailbox: str | None = None, limit: int = 500
) -> dict[str, Any]:
    """Counts per reason (most first), then the quarantined mails, oldest first."""
    if reason is not None and reason not in tuple(QuarantineReason):
        raise QuarantineError(f"unknown reason {reason!r}; choose one of {', '.join(QuarantineReason)}")
    conditions = [InboundMail.state == MailState.QUARANTAINE]
    if reason is not None:
        conditions.append(InboundMail.reason == reason)
    if mailbox is not None:
        conditions.append(InboundMail.mailbox == mailbox)
    with uow:
        session = uow.session
        counts = session.execute(
            select(InboundMail.reason, func.count()).where(*conditions).group_by(InboundMail.reason)
            .order_by(func.count().desc(), InboundMail.reason)
        ).all()
        mails = session.scalars(
            select(InboundMail).where(*conditions).order_by(InboundMail.received_at, InboundMail.id).limit(limit)
        ).all()
        total = sum(count for _, count in counts)
        return {
            "counts": [{"reason": reason_code, "mails": count} for reason_code, count in counts],
            "total": total,
            "mails": [_summary(mail) for mail in mails],
        }


def _summary(mail: InboundMail) -> dict[str, Any]:
    return {
        "id": mail.id,
        "mailbox": mail.mailbox,
        "receivedAt": mail.received_at.isoformat(),
        "reason": mail.reason,
        "error": mail.error,
        "from": mail.from_address,
        "subject": mail.subject,
        "size": mail.size,
    }


def show_quarantined(uow: UnitOfWork, mail_id: int) -> dict[str, Any]:
    """The error and the raw header block of a stored mail (any state, so a released one can still be checked)."""
    with uow:
        mail = _get(uow, mail_id)
        raw = get_blob(uow.session, mail.raw_sha256)
        detail = _summary(mail)
        detail.update({
            "state": mail.state,
            "sha256": mail.raw_sha256,
            "sourceKey": mail.source_key,
            "rawHeaders": raw_header_block(raw),
        })
        return detail


def release(uow: UnitOfWork, mail_id: int, medewerker: ActorRef) -> dict[str, Any]:
    """Into the review queue as it is: state te_beoordelen, reason and error cleared (kept in the audit event)."""
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id, allowed=tuple(MailState))
        _require_quarantined(mail, "release")
        reason, error = mail.reason, mail.error
        mail.state, mail.reason, mail.error = MailState.TE_BEOORDELEN, None, ""
        audit.record(session, str(medewerker), "mail.vrijgegeven", "inbound_mail", mail.id, reden=reason,
                     fout=error[:2000])
        uow.commit()
        return {"id": mail.id, "state": mail.state, "reason": reason, "attachments": len(mail.attachments)}


def dismiss_quarantined(uow: UnitOfWork, mail_id: int, reason: str, medewerker: ActorRef) -> None:
    """Not a customer contact after all (spam, a bounce…): recorded as afgewezen, never a klantcontact."""
    with uow:
        _require_quarantined(_get(uow, mail_id), "dismiss")
    dismiss(uow, mail_id, reason, medewerker, allowed=(MailState.QUARANTAINE,))


def _require_quarantined(mail: InboundMail, action: str) -> None:
    if mail.state == MailState.QUARANTAINE:
        return
    if mail.state != MailState.TE_BEOORDELEN:
        hint = "it was decided already"
    elif action == "dismiss":
        hint = "it is in the review queue: use `kcc-mail dismiss` for it"
    else:
        hint = "it is in the review queue already"
    raise QuarantineError(f"mail {mail.id} is {mail.state}, not in quarantine: {hint}; nothing was changed")


def _get(uow: UnitOfWork, mail_id: int) -> InboundMail:
    mail = uow.session.get(InboundMail, mail_id)
    if mail is None:
        raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail quarantine list` lists the quarantined ones")
    return mail


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def raw_header_block(raw: bytes) -> str:
    """The header block as text safe for a terminal: bytes that are not UTF-8 and control characters are shown
    as escapes (a hostile header cannot drive the terminal), long blocks are cut with a note."""
    end = _BLANK_LINE.search(raw)
    head = raw[: end.start()] if end else raw
    text = head.decode("utf-8", "backslashreplace").replace("\r\n", "\n")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) > MAX_HEADER_CHARS:
        rest = len(text) - MAX_HEADER_CHARS
        text = text[:MAX_HEADER_CHARS] + f"\n… ({rest} more characters; `kcc-mail quarantine export` has them all)"
    return text
