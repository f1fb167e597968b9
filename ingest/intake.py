"""Intake use cases: store each fetched mail exactly once, parsed or quarantined, and track each mailbox's progress.

Every function here that writes is one transaction (`with uow:`). Parsing happens before the transaction opens,
so a slow mail never holds a database lock.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ingest.classify import Classification, classify
from ingest.parse import MailLimitExceeded, ParsedMail, ParseError, parse_mail
from ingest.sources.base import FetchedMail
from store.blobs import sha256_hex
from store.inbound import NewBlob, insert_inbound_mail
from store.mail import InboundMail, MailboxState
from store.types import strip_nul, utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

LEASE_SECONDS = 180  # renewed at every poll (at least each poll_interval); a killed process's lease expires


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
    reason: str | None = None
    error: str = ""


@dataclass
class IntakeSummary:
    """Counts for one poll, as printed by `kcc-mail poll --once`."""

    fetched: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: IntakeSummary) -> None:
        self.fetched += other.fetched
        self.stored += other.stored
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.errors += other.errors
        self.failures.extend(other.failures)

    def line(self) -> str:
        return (
            f"fetched={self.fetched} stored={self.stored} quarantined={self.quarantined} "
            f"duplicates={self.duplicates}"
        )


Parser = Callable[[bytes, datetime], ParsedMail]


def default_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    return parse_mail(raw, received_at=received_at)


def analyse(
    raw: bytes, received_at: datetime, *, max_mail_bytes: int, options: ClassifyOptions,
    parser: Parser = default_parser, digest: str | None = None,
) -> Analysis:
    """Parse and classify; any failure becomes a quarantine reason, never an exception (pure, no I/O)."""
    digest = digest or sha256_hex(raw)
    if len(raw) > max_mail_bytes:
        return Analysis(
            digest, None, None, "too_large",
            f"the mail is {len(raw)} bytes, over storage.max_mail_bytes = {max_mail_bytes}; "
            "it is kept unparsed; export it with `kcc-mail queue show` or raise the limit and reprocess",
        )
    try:
        parsed = parser(raw, received_at)
        classification = classify(
            parsed, own_addresses=options.own_addresses, own_message_id_domains=options.own_message_id_domains
        )
    except MailLimitExceeded as exc:
        return Analysis(digest, None, None, "limits", str(exc))
    except ParseError as exc:
        return Analysis(digest, None, None, "unparseable", str(exc))
    except Exception as exc:  # a bug in a library or in our code must not lose the mail
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Analysis(digest, None, None, "internal_error", f"{detail} (a bug: report it with the exported mail)")
    return Analysis(digest, parsed, classification)


def is_stored(uow: UnitOfWork, mailbox: str, sha256: str, uidvalidity: int | None, uid: int | None) -> bool:
    """Did an earlier poll, import or another process already store this mail?"""
    condition = InboundMail.raw_sha256 == sha256
    if uid is not None:
        condition = or_(condition, (InboundMail.uidvalidity == uidvalidity) & (InboundMail.uid == uid))
    with uow:
        query = select(InboundMail.id).where(InboundMail.mailbox == mailbox, condition).limit(1)
        return uow.session.scalar(query) is not None


@dataclass(frozen=True, slots=True)
class StoredMail:
    """The row intake just stored."""

    id: int
    state: str
    reason: str | None


def store_mail(
    uow: UnitOfWork, mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis
) -> StoredMail | None:
    """Store the raw bytes, attachments and the InboundMail row in one transaction; None when already stored.

    Nothing a mail contains may stop the intake: when building or writing the parsed row fails for this mail
    (a value the database refuses, a bug in our code), the mail is stored again in quarantine (`internal_error`)
    with only what its raw headers show, then with nothing but its bytes. Only a database that cannot be reached
    is raised, so the caller stops and the mail is fetched again next time.
    """
    try:
        return _insert(uow, mailbox, fetched, uidvalidity, analysis, headers=True)
    except Exception as exc:
        if database_unavailable(exc):
            raise
        failure = exc
    log.warning("mailbox=%s %s could not be stored as parsed (%s); storing it in quarantine",
                mailbox, fetched.ref.key, describe_failure(failure), extra={"mailbox": mailbox})
    quarantined = Analysis(
        analysis.sha256, None, None, "internal_error",
        f"storing the parsed mail failed ({describe_failure(failure)}); it is kept unparsed. A bug: report it "
        "with the mail exported by `kcc-mail quarantine export`, then `kcc-mail reprocess` brings it back",
    )
    try:
        return _insert(uow, mailbox, fetched, uidvalidity, quarantined, headers=True)
    except Exception as exc:
        if database_unavailable(exc):
            raise
    return _insert(uow, mailbox, fetched, uidvalidity, quarantined, headers=False)


def _insert(
    uow: UnitOfWork, mailbox: str, fetched: FetchedMail, uidvalidity: int | None, analysis: Analysis,
    *, headers: bool,
) -> StoredMail | None:
    """One attempt: the row built from `analysis` (for a quarantined mail, its raw headers only if `headers`).

    Plain INSERTs rather than ORM objects, one statement on PostgreSQL: this runs once per mail at intake speed.
    """
    uid = fetched.ref.uid
    values: dict[str, Any] = {
        "uuid": uuid.uuid4(), "mailbox": mailbox, "uidvalidity": uidvalidity if uid is not None else None,
        "uid": uid, "source_key": fetched.ref.key[:255], "raw_sha256": analysis.sha256,
        "size": len(fetched.raw), "received_at": fetched.internaldate or utcnow(), "stored_at": utcnow(),
        "state": "te_beoordelen", "reason": None, "error": "",
    }
    parsed = analysis.parsed
    if parsed is not None and analysis.classification is not None:
        values |= parsed_fields(parsed, analysis.classification)
    else:
        quarantine = {"state": "quarantaine", "reason": analysis.reason, "error": analysis.error}
        values |= (header_fields(fetched.raw) if headers else blank_fields()) | quarantine
    blobs = [NewBlob(analysis.sha256, fetched.raw)]
    attachments: list[dict[str, Any]] = []
    if parsed is not None:
        blobs += [NewBlob(a.sha256, a.data) for a in parsed.attachments]
        attachments = attachment_rows(parsed)
    with uow:
        # The unique keys (mailbox, uidvalidity, uid) and (mailbox, sha256) decide what is a duplicate, also
        # against another process storing the same mail right now; any other refusal is raised.
        mail_id = insert_inbound_mail(uow.session, blobs, values, attachments)
        if mail_id is None:
            return None  # leaving the unit of work rolls back whatever was not committed yet
        uow.commit()
    return StoredMail(mail_id, values["state"], values["reason"])


def database_unavailable(exc: BaseException) -> bool:
    """Is this the database failing (gone, locked, timed out) rather than one mail's data being refused?"""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe_failure(exc: BaseException) -> str:
    """The kind of failure without SQL or parameters (they hold mail text): `StatementError (OverflowError: …)`."""
    original = getattr(exc, "orig", None)
    cause = original if original is not None else exc
    lines = str(cause).splitlines()
    detail = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return f"{type(exc).__name__} ({detail})" if original is not None else detail


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
    fields = blank_fields()
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:256 * 1024])

        def header(name: str) -> str:
            return strip_nul(str(headers.get(name, "")))

        name, address = parseaddr(header("From"))
        to = getaddresses([strip_nul(str(v)) for v in headers.get_all("To", [])])
        fields |= {
            "from_name": name[:200], "from_address": address[:320], "subject": header("Subject")[:1000],
            "message_id": header("Message-ID").strip()[:998], "to_addresses": [a for _, a in to][:50],
        }
    except Exception as exc:  # headers of a mail we could not parse may be anything
        log.debug("headers of quarantined mail unreadable: %s", type(exc).__name__)
    return fields


def fill_headers_only(mail: InboundMail, raw: bytes) -> None:
    """Refresh an existing quarantined row's display fields from its raw headers."""
    for name, value in header_fields(raw).items():
        setattr(mail, name, value)


def stored_digests(uow: UnitOfWork, mailbox: str) -> set[str]:
    """Every raw sha256 stored for `mailbox`: a re-scan after a UIDVALIDITY change skips these without parsing."""
    with uow:
        return set(uow.session.scalars(select(InboundMail.raw_sha256).where(InboundMail.mailbox == mailbox)))


def acquire_lease(uow: UnitOfWork, mailbox: str, owner: str, seconds: int = LEASE_SECONDS) -> MailboxState | None:
    """Take (or renew) the right to poll `mailbox`; None when another live process holds it."""
    now = utcnow()
    with uow:
        session = uow.session
        state = session.scalar(select(MailboxState).where(MailboxState.mailbox == mailbox).with_for_update())
        if state is None:
            state = MailboxState(mailbox=mailbox, high_water_uid=0)
            session.add(state)
        elif (
            state.lease_owner not in ("", owner) and state.lease_until is not None and state.lease_until > now
            and not holder_is_gone(state.lease_owner)
        ):
            return None
        state.lease_owner, state.lease_until = owner, now + timedelta(seconds=seconds)
        try:
            uow.commit()
        except IntegrityError:  # another process created the row at the same moment; it wins this round
            return None
        return state


def holder_is_gone(owner: str) -> bool:
    """True when the lease holder was a process on this host that no longer exists (killed, crashed).

    Without this, a service restarted after a crash would not poll for up to LEASE_SECONDS. Owners are named
    `host:pid:…` (kcc.service.process_owner). A holder on another host, or one that cannot be checked, counts as
    alive: its lease simply runs out.
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but belongs to another user
        return False
    return False


def release_lease(uow: UnitOfWork, mailbox: str, owner: str) -> None:
    with uow:
        state = uow.session.get(MailboxState, mailbox, with_for_update=True)
        if state is not None and state.lease_owner == owner:
            state.lease_owner, state.lease_until = "", None
            uow.commit()


def record_progress(
    uow: UnitOfWork, mailbox: str, owner: str, *, uidvalidity: int | None, high_water_uid: int | None,
    error: str = "", success: bool = True,
) -> None:
    """Move the high-water mark (only forward within one UIDVALIDITY) and note the poll's outcome.

    `uidvalidity` None: the folder could not even be opened; only the error is noted.
    """
    now = utcnow()
    with uow:
        state = uow.session.get(MailboxState, mailbox, with_for_update=True)
        if state is None or state.lease_owner != owner:
            return  # our lease was taken over; the new holder keeps its own progress
        if uidvalidity is not None and state.uidvalidity != uidvalidity:
            state.uidvalidity, state.high_water_uid = uidvalidity, 0
        if high_water_uid is not None and high_water_uid > state.high_water_uid:
            state.high_water_uid = high_water_uid
        state.last_poll_at = now
        if success:
            state.last_success_at, state.last_error = now, ""
        else:
            state.last_error = error[:2000]
        state.lease_until = now + timedelta(seconds=LEASE_SECONDS)
        uow.commit()
