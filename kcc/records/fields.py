"""Fitting a mail's subject and text into the klantcontact's bounded fields without losing the meaning."""

from __future__ import annotations

import re

ONDERWERP_MAX = 200
INHOUD_MAX = 1000
GEEN_ONDERWERP = "(geen onderwerp)"
INGEKORT = " … [ingekort; de volledige mail staat in de bijlage]"


def fit_onderwerp(subject: str) -> str:
    """The subject on one line, at most 200 characters; an empty subject says so."""
    text = " ".join(subject.split())
    if not text:
        return GEEN_ONDERWERP
    return cut_at_word(text, ONDERWERP_MAX, " …")


def fit_inhoud(text: str, limit: int = INHOUD_MAX) -> str:
    """The plain text, trimmed of runs of blank lines; longer than `limit`: cut at a word, with the marker."""
    cleaned = re.sub(r"[ \t]+\n", "\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    cleaned = re.sub(r"\n{3,}", "\n\n", cleaned).strip()
    return cut_at_word(cleaned, limit, INGEKORT)


def cut_at_word(text: str, limit: int, marker: str) -> str:
    """`text` if it fits, else its longest word-boundary prefix followed by `marker`, together within `limit`."""
    if len(text) <= limit:
        return text
    room = limit - len(marker)
    head = text[:room + 1]
    boundary = max(head.rfind(" "), head.rfind("\n"))
    cut = head[:boundary] if boundary > room // 2 else text[:room]
    return cut.rstrip() + marker
