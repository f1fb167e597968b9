"""Reprocessing's pure half: parse a stored mail's bytes again and say what would change, without a session.

What is compared is everything reprocessing may rewrite on one InboundMail (`Derived`), normalised as the database
gives it back, so equal means "unchanged". Runs in parse workers (ingest.workers), chunk by chunk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest.analysis import AnalyseSettings, blank_fields, fill_headers_only, fill_parsed_fields
from store.mail import InboundMail
from store.states import MailState
from store.types import strip_nul

log = logging.getLogger(__name__)

DERIVED_FIELDS = (
    "message_id", "message_id_synthetic", "from_name", "from_address", "to_addresses", "cc_addresses", "reply_to",
    "subject", "sent_at", "in_reply_to", "references", "text_body", "html_body", "flags", "classification",
    "defects",
)
"""The InboundMail columns the parser and classifier fill (`fill_parsed_fields`); all of them, nothing else."""


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """One InboundAttachment row without its ids, in the form the database gives it back."""

    bestandsnaam: str
    formaat: str
    size: int
    blob_sha256: str
    inline: bool
    content_id: str


@dataclass(frozen=True, slots=True)
class Derived:
    """Everything reprocessing may rewrite on one InboundMail, normalised so that equal means 'unchanged'."""

    state: str
    reason: str | None
    error: str
    fields: dict[str, Any]
    attachments: tuple[AttachmentRow, ...]

    def differences(self, other: Derived) -> tuple[str, ...]:
        """Names of what differs from `other`: state, reason, error, field names, attachments."""
        names = [name for name in ("state", "reason", "error") if getattr(self, name) != getattr(other, name)]
        names += [name for name in DERIVED_FIELDS if self.fields.get(name) != other.fields.get(name)]
        if self.attachments != other.attachments:
            names.append("attachments")
        return tuple(names)


def normal(value: Any) -> Any:
    """The value as it comes back from the database: NUL-free strings, lists, UTC time stamps."""
    if isinstance(value, str):
        return strip_nul(value)
    if isinstance(value, list | tuple):
        return [normal(item) for item in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _fields_of(mail: InboundMail) -> dict[str, Any]:
    return {name: normal(getattr(mail, name)) for name in DERIVED_FIELDS}


def derived_of(mail: InboundMail) -> Derived:
    """What is stored for `mail` now (its attachments must be loaded)."""
    attachments = tuple(
        AttachmentRow(a.bestandsnaam, a.formaat, a.size, a.blob_sha256, a.inline, a.content_id)
        for a in sorted(mail.attachments, key=lambda a: a.position)
    )
    return Derived(mail.state, mail.reason, mail.error, _fields_of(mail), attachments)


def _blank_mail() -> InboundMail:
    """A transient InboundMail with the column defaults, for filling and reading back (never added to a session)."""
    mail = InboundMail()
    for name, value in blank_fields().items():
        setattr(mail, name, value)
    return mail


@dataclass(frozen=True, slots=True)
class Job:
    """One stored mail to reprocess: its raw bytes and what is stored for it now."""

    mail_id: int
    raw: bytes = field(repr=False)
    sha256: str
    received_at: datetime
    current: Derived = field(repr=False)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What reprocessing would make of one mail: nothing (`target` None), a new target, or a problem."""

    mail_id: int
    target: Derived | None = None
    changes: tuple[str, ...] = ()
    blobs: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    problem: str = ""


def evaluate(job: Job, settings: AnalyseSettings) -> Evaluation:
    """Parse the stored bytes again and compare with what is stored; pure, never raises."""
    try:
        return _evaluate(job, settings)
    except Exception as exc:  # a bug here must cost one mail, not the run
        log.exception("mail=%s could not be evaluated", job.mail_id)
        return Evaluation(job.mail_id, problem=f"internal error while reprocessing ({type(exc).__name__}: {exc})")


def _evaluate(job: Job, settings: AnalyseSettings) -> Evaluation:
    current = job.current
    analysis = settings.analyse(job.raw, job.received_at, job.sha256)
    probe = _blank_mail()
    blobs: tuple[tuple[str, bytes], ...] = ()
    if analysis.parsed is None or analysis.classification is None:
        fill_headers_only(probe, job.raw)
        if current.state != MailState.QUARANTAINE:
            if _fields_of(probe) == current.fields and not current.attachments:
                return Evaluation(job.mail_id)  # released from quarantine as it was: it never parsed, nothing to do
            return Evaluation(job.mail_id, problem=(
                f"mail {job.mail_id} ({current.state}) no longer parses with the current parser "
                f"({analysis.reason}: {analysis.error}); it keeps its state and fields. Report the parser bug "
                f"with `kcc-mail quarantine export {job.mail_id} --out mail-{job.mail_id}.eml`"
            ))
        target = Derived(MailState.QUARANTAINE, analysis.reason, analysis.error, _fields_of(probe), ())
    else:
        fill_parsed_fields(probe, analysis.parsed, analysis.classification)
        attachments = tuple(
            AttachmentRow(
                strip_nul(a.filename[:255]), strip_nul(a.content_type[:255]), len(a.data), a.sha256, a.inline,
                strip_nul(a.content_id or ""),
            )
            for a in analysis.parsed.attachments
        )
        if current.state == MailState.QUARANTAINE:
            target = Derived(MailState.TE_BEOORDELEN, None, "", _fields_of(probe), attachments)
        else:
            target = Derived(current.state, current.reason, current.error, _fields_of(probe), attachments)
        if attachments != current.attachments:
            blobs = tuple((a.sha256, a.data) for a in analysis.parsed.attachments)
    changes = target.differences(current)
    if not changes:
        return Evaluation(job.mail_id)
    return Evaluation(job.mail_id, target, changes, blobs)


def evaluate_chunk(jobs: list[Job], settings: AnalyseSettings) -> list[Evaluation]:
    """The unit of work of one pool worker (module level, so it pickles by name)."""
    return [evaluate(job, settings) for job in jobs]


