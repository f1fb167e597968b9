"""How people name a record: its uuid (what the JSON prints), or its id as a plain number."""

from __future__ import annotations

import uuid

MAX_ID = 2**63 - 1
"""The largest id the databases hold (a signed 64-bit integer); a larger number names nothing."""


def as_uuid(text: str) -> uuid.UUID | None:
    """The uuid `text` spells, or None."""
    if len(text) != 36:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def as_id(text: str) -> bool:
    """Is `text` a database id as people write it: digits without a leading zero, within range?"""
    return text.isdigit() and not text.startswith("0") and int(text) <= MAX_ID
