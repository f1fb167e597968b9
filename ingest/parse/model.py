"""The parser's public types: the result (`ParsedMail` and its parts), the bounds and the errors.

They live apart from the parsing code so callers and the parse modules share one small, dependency-free
definition of what a parse produces and how it can fail.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep one hostile mail from stalling or exhausting the intake loop."""

    max_depth: int = 50  # nesting of multipart and message/* containers, top level = 0
    max_parts: int = 1000  # MIME parts in the whole tree, attached messages included
    max_seconds: float = 10.0  # checked at every part boundary
    max_header_bytes: int = 1_048_576  # size of the top-level header block


DEFAULT_LIMITS = ParseLimits()


class ParseError(Exception):
    """The mail cannot become a `ParsedMail`; the caller stores it in quarantine with `reason_code`."""

    reason_code: ClassVar[str] = "unparseable"


class MailLimitExceeded(ParseError):
    """The mail goes beyond a `ParseLimits` bound (nesting, parts, header size, time)."""

    reason_code: ClassVar[str] = "limits"


class UnparseableMail(ParseError):
    """The data is not a mail at all (empty, no header), or a library failed in a way no fallback covers."""

    reason_code: ClassVar[str] = "unparseable"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached file. `filename` is display data, safe to show and store, never a path to trust.

    `content_id` is stored without angle brackets (as HTML ``cid:`` references use it). `unpacked_from`
    names the container (``winmail.dat``) a file was unpacked from; the container itself is kept too.
    """

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    sha256: str
    inline: bool = False
    content_id: str | None = None
    unpacked_from: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def of(
        cls,
        filename: str,
        content_type: str,
        data: bytes,
        *,
        inline: bool = False,
        content_id: str | None = None,
        unpacked_from: str | None = None,
    ) -> Attachment:
        """Build an attachment, computing its sha256 so the two can never disagree."""
        return cls(
            filename, content_type, data, hashlib.sha256(data).hexdigest(), inline, content_id, unpacked_from
        )


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The machine-readable parts of a ``multipart/report`` (RFC 6522): what the classifier needs.

    `status` is the text of the ``message/delivery-status`` (or feedback-report, disposition-notification)
    part; `original_headers` the header block of the returned message (``message/rfc822`` or
    ``text/rfc822-headers``), one ``Name: value`` per line.
    """

    report_type: str
    status: str
    original_headers: str


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """Everything intake, classification and review need from one mail; all strings are free of NUL."""

    message_id: str
    message_id_synthetic: bool
    from_name: str
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    date: datetime | None
    date_from_header: bool
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    content_type: str
    defects: tuple[str, ...]
    report: DeliveryReport | None = None

    def header(self, name: str) -> str | None:
        """The first top-level header called `name` (case-insensitive), decoded; None when absent."""
        key = name.lower()
        return next((value for hname, value in self.headers if hname.lower() == key), None)

    def header_values(self, name: str) -> tuple[str, ...]:
        """All top-level headers called `name` (case-insensitive), decoded, in mail order."""
        key = name.lower()
        return tuple(value for hname, value in self.headers if hname.lower() == key)
