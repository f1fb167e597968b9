"""What intake learns from the raw bytes of one mail, before any transaction: pure, no session, no socket.

`analyse` parses and classifies, and turns every failure into a quarantine reason instead of an exception; the
`*_fields` functions turn the result into the values of an `inbound_mail` row. Intake, import and reprocessing
all go through here, so a mail is judged the same way whichever way it came in.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ingest.sources.base import FetchedMail
from store.states import MailState, QuarantineReason
from store.values import NewBlob, sha256_hex, strip_nul, utcnow

if TYPE_CHECKING:
    # The parser and the classifier are imported by the first mail to analyse, not by importing this module: a
    # poll that finds no new mail (most cron runs) then never loads them.
    from ingest.classify import Classification
    from ingest.parse import ParsedMail
    from store.mail import InboundMail

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifyOptions:
    """What the classifier needs to know about us: our own addresses and Message-ID domains (loop protection)."""

    own_addresses: frozenset[str] = frozenset()
    own_message_id_domains: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Analysis:
    """What intake learned from the raw bytes, before any transaction: parsed mail or the quarantine reason."""

    sha256: str
    parsed: ParsedMail | None
    classification: Classification | None
    reason: QuarantineReason | None = None
    error: str = ""


Parser = Callable[[bytes, datetime], "ParsedMail"]


def default_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    from ingest.parse import parse_mail

    return parse_mail(raw, received_at=received_at)


def analyse(
    raw: bytes, received_at: datetime, *, max_mail_bytes: int, options: ClassifyOptions,
    parser: Parser = default_parser, digest: str | None = None,
) -> Analysis:
    """Parse and classify; any failure becomes a quarantine reason, never an exception (pure, no I/O)."""
    from ingest.classify import classify
    from ingest.parse import MailLimitExceeded, ParseError

    digest = digest or sha256_hex(raw)
    if len(raw) > max_mail_bytes:
        return Analysis(
            digest, None, None, QuarantineReason.TOO_LARGE,
            f"the mail is {len(raw)} bytes, over storage.max_mail_bytes = {max_mail_bytes}; "
            "it is kept unparsed; export it with `kcc-mail queue show` or raise the limit and reprocess",
        )
    try:
        parsed = parser(raw, received_at)
        classification = classify(
            parsed, own_addresses=options.own_addresses, own_message_id_domains=options.own_message_id_domains
        )
    except MailLimitExceeded as exc:
        return Analysis(digest, None, None, QuarantineReason.LIMITS, str(exc))
    except ParseError as exc:
        return Analysis(digest, None, None, QuarantineReason.UNPARSEABLE, str(exc))
    except Exception as exc:  # a bug in a library or in our code must not lose the mail
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Analysis(
            digest, None, None, QuarantineReason.INTERNAL_ERROR, f"{detail} (a bug: report it with the exported mail)"
        )
    return Analysis(digest, parsed, classification)


def analyse_mails(
    mails: list[tuple[bytes, datetime, str]], max_mail_bytes: int, options: ClassifyOptions
) -> list[Analysis]:
    """`analyse` with the default parser for several mails (raw, received at, sha256), as a parse worker runs it:
    one trip for them all, since the trip (pickling, two queues, a result thread) costs about as much as parsing
    a small mail. Module level, so it pickles by name."""
    return [analyse(raw, received_at, max_mail_bytes=max_mail_bytes, options=options, digest=digest)
            for raw, received_at, digest in mails]


@dataclass(frozen=True, slots=True)
class AnalyseSettings:
    """How to analyse raw bytes (picklable, sent to parse workers): the size limit, our addresses, the parser."""

    max_mail_bytes: int
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    parser: Parser = default_parser

    def analyse(self, raw: bytes, received_at: datetime, digest: str | None = None) -> Analysis:
        return analyse(
            raw, received_at, max_mail_bytes=self.max_mail_bytes, options=self.classify, parser=self.parser,
            digest=digest,
        )


@dataclass(frozen=True, slots=True)
class StoredMail:
    """The row intake just stored."""

    id: int
    state: MailState
    reason: QuarantineReason | None


@dataclass(frozen=True, slots=True)
class MailRow:
    """Everything one received mail becomes in the database: the inbound_mail values, the blobs, the attachments."""

    values: dict[str, Any]
    blobs: list[NewBlob]
    attachments: list[dict[str, Any]]

    @property
    def state(self) -> MailState:
        return MailState(self.values["state"])


def mail_row(
    mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis, *, headers: bool = True
) -> MailRow:
    """The row for `fetched` as `analysis` judged it; a quarantined mail shows its raw headers only if `headers`."""
    uid = fetched.ref.uid
    now = utcnow()
    values: dict[str, Any] = {
        "uuid": uuid.uuid4(), "mailbox": mailbox, "uidvalidity": uidvalidity if uid is not None else None,
        "uid": uid, "source_key": fetched.ref.key[:255], "raw_sha256": analysis.sha256,
        "size": len(fetched.raw), "received_at": fetched.internaldate or now, "stored_at": now,
        "state": MailState.TE_BEOORDELEN, "reason": None, "error": "",
    }
    envelope = fetched.envelope
    values |= {
        "envelope_from": None if envelope is None else envelope.mail_from,
        "envelope_to": None if envelope is None else list(envelope.rcpt_to),
        "client_address": None if envelope is None else envelope.client[:200],
    }
    parsed = analysis.parsed
    blobs = [NewBlob(analysis.sha256, fetched.raw)]
    if parsed is None or analysis.classification is None:
        quarantine = {"state": MailState.QUARANTAINE, "reason": analysis.reason, "error": analysis.error}
        values |= (header_fields(fetched.raw) if headers else blank_fields()) | quarantine
        return MailRow(values, blobs, [])
    values |= parsed_fields(parsed, analysis.classification)
    blobs += [NewBlob(a.sha256, a.data) for a in parsed.attachments]
    return MailRow(values, blobs, attachment_rows(parsed))


def attachment_rows(parsed: ParsedMail) -> list[dict[str, Any]]:
    """Describe each attachment for the inbound_attachment table; its bytes go to a blob of the same sha256."""
    return [
        {
            "position": position, "bestandsnaam": attachment.filename[:255],
            "formaat": attachment.content_type[:255], "size": len(attachment.data), "blob_sha256": attachment.sha256,
            "inline": attachment.inline, "content_id": attachment.content_id or "",
        }
        for position, attachment in enumerate(parsed.attachments)
    ]


def parsed_fields(parsed: ParsedMail, classification: Classification) -> dict[str, Any]:
    """The InboundMail columns derived from the parser and classifier (refreshed again by reprocessing)."""
    return {
        "message_id": parsed.message_id[:998],
        "message_id_synthetic": parsed.message_id_synthetic,
        "from_name": parsed.from_name,
        "from_address": parsed.from_address,
        "to_addresses": list(parsed.to),
        "cc_addresses": list(parsed.cc),
        "reply_to": list(parsed.reply_to),
        "subject": parsed.subject,
        "sent_at": parsed.date if parsed.date_from_header else None,
        "in_reply_to": parsed.in_reply_to or "",
        "references": list(parsed.references),
        "text_body": parsed.text,
        "html_body": parsed.html,
        "flags": list(classification.flags),
        "classification": {
            "reasons": list(classification.reasons),
            "bounceOriginalMessageId": classification.bounce_original_message_id,
            "bounceRecipient": classification.bounce_recipient,
        },
        "defects": list(parsed.defects),
    }


def fill_parsed_fields(mail: InboundMail, parsed: ParsedMail, classification: Classification) -> None:
    """Refresh an existing row's derived fields, e.g. when reprocessing."""
    for name, value in parsed_fields(parsed, classification).items():
        setattr(mail, name, value)


BLANK_FIELDS: dict[str, Any] = {
    "message_id": "", "message_id_synthetic": False, "from_name": "", "from_address": "", "to_addresses": [],
    "cc_addresses": [], "reply_to": [], "subject": "", "sent_at": None, "in_reply_to": "", "references": [],
    "text_body": "", "html_body": None, "flags": [], "classification": {}, "defects": [],
}
"""The derived columns of a mail nothing could be read from: what a quarantined mail holds where its headers
are silent."""


def blank_fields() -> dict[str, Any]:
    """A fresh copy of BLANK_FIELDS (its lists and dicts too), safe to fill in."""
    return {name: value.copy() if isinstance(value, list | dict) else value for name, value in BLANK_FIELDS.items()}


def header_fields(raw: bytes) -> dict[str, Any]:
    """For a quarantined mail, show the reviewer at least who sent it and what about, if the headers allow."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from ingest.parse.addresses import Mailbox, mailboxes

    fields = blank_fields()
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:256 * 1024])

        def header(name: str) -> str:
            return strip_nul(str(headers.get(name, "")))

        sender = next(iter(mailboxes(" ".join(header("From").split()))), Mailbox("", ""))
        to = [box.address for value in headers.get_all("To", []) for box in mailboxes(" ".join(str(value).split()))]
        fields |= {
            "from_name": sender.phrase[:200], "from_address": sender.address[:320],
            "subject": header("Subject")[:1000], "message_id": header("Message-ID").strip()[:998],
            "to_addresses": [strip_nul(a) for a in to][:50],
        }
    except Exception as exc:  # headers of a mail we could not parse may be anything
        log.debug("headers of quarantined mail unreadable: %s", type(exc).__name__)
    return fields


def fill_headers_only(mail: InboundMail, raw: bytes) -> None:
    """Refresh an existing quarantined row's display fields from its raw headers."""
    for name, value in header_fields(raw).items():
        setattr(mail, name, value)
