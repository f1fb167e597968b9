"""The mutable state of one parse, and the text cleaning every module applies to what it returns.

One `ParseContext` is made per `parse_mail` call and handed down explicitly, so parses share no state and
the parser stays pure. It holds the limits and clock, the defect notes, and what the body walk collects.
"""

from __future__ import annotations

import re
import time

from ingest.parse.model import Attachment, DeliveryReport, MailLimitExceeded, ParseLimits

MAX_DEFECTS = 50


_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


class ParseContext:
    """Mutable state of one parse: limits, clock, the defect notes and what the body walk collects."""

    __slots__ = (
        "attachments",
        "charset_hint",
        "deadline",
        "defects",
        "html",
        "limits",
        "linesep",
        "parts",
        "report",
        "tnef_body",
    )

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.parts = 0
        self.defects: list[str] = []
        self.attachments: list[Attachment] = []
        self.html: str | None = None
        self.report: DeliveryReport | None = None
        self.tnef_body: str | None = None
        self.linesep = "\r\n"
        self.charset_hint: str | None = None  # for raw 8-bit headers and undeclared parts

    def note(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < MAX_DEFECTS:
            self.defects.append(clean_line(text))

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise MailLimitExceeded(
                f"parsing took longer than {self.limits.max_seconds:g} s (ParseLimits.max_seconds)"
            )


def clean_text(text: str) -> str:
    """Body text for a database text column: no NUL or lone surrogates, and \\n line ends."""
    if (not text.isascii() or "\x00" in text) and _UNSAFE_TEXT.search(text):  # a scan; a copy only when needed
        text = _UNSAFE_TEXT.sub("\ufffd", text)
    return text.replace("\r\n", "\n") if "\r" in text else text


def clean_line(text: str) -> str:
    """Header-safe text: `clean_text` plus no CR/LF, so it can never inject a header downstream."""
    text = clean_text(text)
    return text.replace("\r", " ").replace("\n", " ") if ("\n" in text or "\r" in text) else text
