"""The files of a stored mail, as a reviewer saves them: the original .eml, each attachment, and what an attached
message holds (its sender, subject and own attachments), for the CLI's `queue show` and the web screen.

An attached message is read again from its stored bytes when it is shown, with the intake's own parser and
limits, so a hostile one is as harmless here as in the intake, and mails stored before this existed show it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select

from ingest.parse import ParseError, parse_mail
from kcc.errors import NotFound
from kcc.usecases.review import MailNotFound
from store.blobs import get_blob
from store.mail import InboundAttachment, InboundMail
from store.uow import UnitOfWork

__all__ = [
    "IMAGE_TYPES", "AttachmentNotFound", "MailHtml", "SavedFile", "attachment_file", "describe_message", "is_message",
    "mail_html", "mail_of_klantcontact", "raw_mail",
]

MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
MAX_NESTED_DEPTH = 3
"""How deep `describe_message` follows messages attached to attached messages; deeper ones are listed only."""


_File = tuple[str, str, Callable[[], bytes]]
"""An attachment's name, type, and how to get its bytes (read only for the one asked for)."""


class AttachmentNotFound(NotFound):
    """The mail has no attachment with that number."""


@dataclass(frozen=True, slots=True)
class SavedFile:
    """Bytes to hand to the reviewer; `bestandsnaam` is the name the mail gave, display data, never a path."""

    bestandsnaam: str
    formaat: str
    data: bytes


def is_message(formaat: str) -> bool:
    return formaat.lower() in MESSAGE_TYPES


def raw_mail(uow: UnitOfWork, mail_id: int) -> bytes:
    """The mail exactly as it was received, in any state."""
    with uow:
        mail = uow.session.get(InboundMail, mail_id)
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail queue list --state all` lists them")
        return get_blob(uow.session, mail.raw_sha256)


def attachment_file(uow: UnitOfWork, mail_id: int, number: str) -> SavedFile:
    """Attachment `number` of mail `mail_id`, numbered as `queue show` does: "2" is the mail's second attachment,
    "1.2" the second attachment of the message attached first (up to MAX_NESTED_DEPTH levels)."""
    path = _number_path(number)
    with uow:
        session = uow.session
        if session.get(InboundMail, mail_id) is None:
            raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail queue list --state all` lists them")
        rows = session.scalars(
            select(InboundAttachment).where(InboundAttachment.inbound_mail_id == mail_id)
            .order_by(InboundAttachment.position)
        ).all()
        files: list[_File] = [
            (row.bestandsnaam, row.formaat, partial(get_blob, session, row.blob_sha256)) for row in rows
        ]
        saved: SavedFile | None = None
        for depth, index in enumerate(path):
            if saved is not None:
                files = _inner_files(saved, mail_id, number, path[:depth])
            if not 1 <= index <= len(files):
                have = f"1 to {len(files)}" if files else "none"
                where = f"mail {mail_id}"
                if depth:
                    where = f"attachment {'.'.join(map(str, path[:depth]))} of {where}"
                raise AttachmentNotFound(
                    f"{where} has no attachment {index} (it has {have}); `kcc-mail queue show {mail_id}` lists "
                    "them with their numbers"
                )
            name, formaat, data = files[index - 1]
            saved = SavedFile(name, formaat, data())
        assert saved is not None
        return saved


def _given(data: bytes) -> bytes:
    return data


def _number_path(number: str) -> list[int]:
    parts = number.split(".")
    if not 1 <= len(parts) <= MAX_NESTED_DEPTH + 1 or not all(p.isdigit() and p.isascii() for p in parts):
        raise AttachmentNotFound(
            f"{number!r} is not an attachment number; write it as `queue show` shows it: 2, or 1.2 for the second "
            "attachment of the first attached message"
        )
    return [int(part) for part in parts]


def _inner_files(
    outer: SavedFile, mail_id: int, number: str, at: list[int]
) -> list[_File]:
    """The attachments inside an attached message, read with the intake's parser."""
    where = ".".join(map(str, at))
    if not is_message(outer.formaat):
        raise AttachmentNotFound(f"attachment {where} of mail {mail_id} is not a message, so {number} does not exist")
    try:
        parsed = parse_mail(outer.data)
    except ParseError as exc:
        raise AttachmentNotFound(f"attachment {where} of mail {mail_id} cannot be read as a message: {exc}") from None
    return [(a.filename, a.content_type, partial(_given, a.data)) for a in parsed.attachments]


def describe_message(data: bytes, depth: int = 1) -> dict[str, Any]:
    """Sender, subject, date and attachments of an attached message; `error` says why it could not be read."""
    try:
        parsed = parse_mail(data)
    except ParseError as exc:
        return {"error": str(exc)}
    attachments: list[dict[str, Any]] = []
    for attachment in parsed.attachments:
        entry: dict[str, Any] = {
            "bestandsnaam": attachment.filename, "formaat": attachment.content_type, "size": len(attachment.data),
        }
        if is_message(attachment.content_type) and depth < MAX_NESTED_DEPTH:
            entry["message"] = describe_message(attachment.data, depth + 1)
        attachments.append(entry)
    return {
        "from": parsed.from_address, "fromName": parsed.from_name, "subject": parsed.subject,
        "sentAt": parsed.date.isoformat() if parsed.date and parsed.date_from_header else None,
        "text": parsed.text, "attachments": attachments,
    }


IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Inline images shown in a mail's HTML: raster formats only (an SVG is a document that can carry script)."""


@dataclass(frozen=True, slots=True)
class MailHtml:
    """A mail's HTML part and its inline images: content id → attachment number."""

    html: str | None
    inline: dict[str, int]


def mail_html(uow: UnitOfWork, mail_id: int) -> MailHtml:
    """The HTML part as stored (unsanitised: the web layer cleans it) and which attachments its cid: names."""
    with uow:
        session = uow.session
        mail = session.get(InboundMail, mail_id)
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}")
        rows = session.scalars(select(InboundAttachment).where(InboundAttachment.inbound_mail_id == mail_id)
                               .order_by(InboundAttachment.position)).all()
        inline = {row.content_id: number for number, row in enumerate(rows, 1)
                  if row.content_id and row.formaat.lower() in IMAGE_TYPES}
        return MailHtml(mail.html_body, inline)


def mail_of_klantcontact(uow: UnitOfWork, klantcontact_id: int) -> int | None:
    """The stored mail a klantcontact registered (None for our answers, which are not stored mail)."""
    with uow:
        return uow.session.scalar(select(InboundMail.id).where(InboundMail.klantcontact_id == klantcontact_id))
