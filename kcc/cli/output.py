"""Text for a terminal: whatever a mail or a user typed is shown, never obeyed.

A subject or display name can decode to ESC and other control characters (cursor moves, OSC 52 clipboard writes,
a new window title). Every human-readable line kcc-mail prints passes mail data through `safe`, which shows such
characters as visible escapes; JSON output escapes them by itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from kcc.errors import Refused
from store.files import write_private

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """`text` for one field of a line: control characters (line breaks included) as escapes."""
    return _LINE_CONTROL.sub(_escape, str(text))


def safe_block(text: object) -> str:
    """A block of text (a mail body) for a terminal: line breaks and tabs kept, other control characters escaped."""
    return _CONTROL.sub(_escape, str(text))


def cut(text: object, width: int, *, pad: bool = True) -> str:
    """`safe(text)` cut to `width` characters (and padded to it), for a column."""
    shown = safe(text)[:width]
    return shown.ljust(width) if pad else shown


def refuse_existing(out: Path, force: bool) -> None:
    """An export never overwrites a file by surprise; --force says the operator means it."""
    if (out.exists() or out.is_symlink()) and not force:
        raise Refused(f"{out} exists already; choose another --out or add --force to overwrite it")


def write_export(out: Path, data: bytes) -> None:
    """Write exported bytes (a mail, an attachment) for the operator: private (0600), atomic, never through a
    symlink planted at `out`; a failure is one line saying what to do."""
    try:
        write_private(out, data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {safe(out)} ({exc.strerror}); choose a folder you may write to") \
            from None
