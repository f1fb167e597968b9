"""Mail files as a mail source for import: an mbox, a Maildir, or a directory of .eml files, read as a stream.

One mail in memory at a time. Decisions where the formats leave room:

* received_at is when the source says the mail arrived: the mbox ``From `` line's date, the file time of a
  Maildir or .eml file (as the Maildir intake uses); the time of the import when the source says nothing.
* mbox: a message starts at a ``From `` line that follows a blank line (or opens the file) *and* carries a
  date, so an unquoted "From here on..." in a body does not split a mail. mboxrd (the default) unquotes
  ``>From``, ``>>From`` … by one ``>``; mboxo only ``>From``. The blank line before the next ``From `` line
  belongs to the separator, not to the mail.
* A directory is walked recursively in name order. ``.eml`` files are mails; other files are imported when
  they start like a mail (a header line or a ``From `` line), else skipped and counted, as are hidden and empty
  files. A Maildir is ``new/`` and ``cur/`` (never ``tmp/``, where deliveries are still being written); the
  files are left where they are.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from ingest.analysis import AnalyseSettings, Analysis
from ingest.sources.base import SourceError, open_regular_file
from store.types import utcnow

FORMATS = ("auto", "mbox", "mboxrd", "mboxo", "maildir", "eml")
SNIFF_BYTES = 4096


class ImportSourceError(SourceError):
    """The path is not something that can be imported (or not in the format asked for); nothing was stored."""


@dataclass(frozen=True, slots=True)
class SourceMail:
    """One mail read from the source; `key` says where it was (a path, or the mbox file and its number)."""

    key: str
    raw: bytes = field(repr=False)
    received_at: datetime


@dataclass(frozen=True, slots=True)
class NotAMail:
    """A file (or an empty mbox entry) that is not a mail: skipped and counted."""

    key: str
    why: str


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file that could not be read: counted as an error, the rest goes on."""

    key: str
    error: str


Entry = SourceMail | NotAMail | Unreadable
Candidate = tuple[SourceMail, str]
"""A mail to import with the sha256 of its bytes."""


def analyse_sources(candidates: list[Candidate], settings: AnalyseSettings) -> list[Analysis]:
    """What one parse worker does with a chunk of mails to import (module level, so it pickles by name)."""
    return [settings.analyse(mail.raw, mail.received_at, digest) for mail, digest in candidates]


# ------------------------------------------------------------------------------------------- recognising

_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n|\n|\r))+")
_MAIL_START = re.compile(rb"(?:From |[A-Za-z0-9][A-Za-z0-9_.-]*[ \t]*:)")


def looks_like_mail(head: bytes) -> bool:
    """Does this start like an RFC 5322 mail (a header line, or an mbox ``From `` line)? Byte order mark and
    blank lines first are allowed, as the parser repairs them."""
    data = head.removeprefix(codecs.BOM_UTF8)
    blank = _BLANK_LINES.match(data)
    if blank:
        data = data[blank.end():]
    return _MAIL_START.match(data) is not None


def detect_format(path: Path) -> str:
    """'maildir', 'eml' (a directory, or one mail file) or 'mbox', from what is at `path`."""
    if path.is_dir():
        return "maildir" if (path / "cur").is_dir() and (path / "new").is_dir() else "eml"
    if not path.is_file():
        raise ImportSourceError(f"{path} is neither a file nor a directory; give an mbox file, a Maildir or a folder")
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise ImportSourceError(f"{path} cannot be read ({exc.strerror}); check its permissions") from exc
    if head.startswith(b"From "):
        return "mbox"
    if looks_like_mail(head):
        return "eml"
    raise ImportSourceError(
        f"{path} is not an mbox (its first line does not start with 'From '), nor a mail, nor a directory; "
        "give an mbox file, a Maildir (with cur/ and new/) or a folder of .eml files, or pass --format"
    )


# ------------------------------------------------------------------------------------------------- readers


def read_source(path: Path, fmt: str = "auto") -> Iterator[Entry]:
    """The entries of `path` in the given format ('auto' detects it); refuses a path that does not fit."""
    if fmt not in FORMATS:
        raise ImportSourceError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind in ("mbox", "mboxrd", "mboxo"):
        if not path.is_file():
            raise ImportSourceError(f"{path} is not a file, so it cannot be an mbox; for a folder use --format eml")
        return read_mbox(path, variant="mboxo" if kind == "mboxo" else "mboxrd")
    if kind == "maildir":
        if not ((path / "cur").is_dir() and (path / "new").is_dir()):
            raise ImportSourceError(f"{path} is not a Maildir: it needs the folders cur/ and new/")
        return read_maildir(path)
    if path.is_file():
        return iter([_read_file(path, path.name, sniff=path.suffix.lower() != ".eml")])
    if not path.is_dir():
        raise ImportSourceError(f"{path} is neither a file nor a directory")
    return read_eml_directory(path)


_MBOX_SEPARATOR = re.compile(
    rb"From \S*\s+(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+)?"
    rb"(?:[A-Z][a-z]{2}\s+\d{1,2}|\d{1,2}\s+[A-Z][a-z]{2})\s+(?:\d{4}\s+)?\d{1,2}:\d{2}"
)
_MBOXRD_QUOTED = re.compile(rb"^>(>*From )")
_MBOXO_QUOTED = re.compile(rb"^>(From )")
_LINE_ENDS = (b"\n", b"\r\n")


def read_mbox(path: Path, *, variant: str = "mboxrd") -> Iterator[Entry]:
    """Stream the mails of an mbox file, one in memory at a time, with ``>From`` unquoted per `variant`."""
    quoted = _MBOXO_QUOTED if variant == "mboxo" else _MBOXRD_QUOTED
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportSourceError(f"{path} cannot be read ({exc.strerror}); check its permissions") from exc
    with handle:
        envelope = handle.readline()
        if not envelope.startswith(b"From "):
            raise ImportSourceError(
                f"{path} is not an mbox: its first line does not start with 'From '; for one mail use --format eml"
            )
        lines: list[bytes] = []
        number, previous_blank = 1, False
        for line in handle:
            if previous_blank and line.startswith(b"From ") and _MBOX_SEPARATOR.match(line):
                yield _mbox_entry(path, number, envelope, lines)
                envelope, lines, number, previous_blank = line, [], number + 1, False
                continue
            previous_blank = line in _LINE_ENDS
            lines.append(quoted.sub(rb"\1", line, count=1) if line.startswith(b">") else line)
        yield _mbox_entry(path, number, envelope, lines)


def _mbox_entry(path: Path, number: int, envelope: bytes, lines: list[bytes]) -> Entry:
    key = f"{path.name}#{number}"
    if lines and lines[-1] in _LINE_ENDS:
        lines.pop()  # the blank line before the next "From " line separates, it is not part of the mail
    raw = b"".join(lines)
    if not raw.strip():
        return NotAMail(key, "empty message in the mbox")
    return SourceMail(key, raw, _envelope_date(envelope))


def _envelope_date(envelope: bytes) -> datetime:
    """The date on an mbox ``From sender date`` line (asctime, UTC by convention); now when there is none."""
    words = envelope[5:].decode("latin-1").split()
    for text in (" ".join(words[1:]), " ".join(words)):
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            continue
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return utcnow()


def read_maildir(path: Path) -> Iterator[Entry]:
    """Every mail in new/ and cur/, oldest file first; dot files are not mail (as Maildir readers agree)."""
    found: list[tuple[float, str]] = []
    for sub in ("new", "cur"):
        try:
            with os.scandir(path / sub) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        found.append((entry.stat().st_mtime, f"{sub}/{entry.name}"))
                    except OSError:
                        continue  # delivered elsewhere meanwhile
        except OSError as exc:
            raise ImportSourceError(f"{path / sub} cannot be listed ({exc.strerror}); check its permissions") from exc
    for _, key in sorted(found):
        yield _read_file(path / key, key, sniff=False)


def read_eml_directory(path: Path) -> Iterator[Entry]:
    """Every regular file under `path` in name order; see the module docstring for which are mails."""
    problems: list[OSError] = []  # a folder that cannot be listed is an error to report, not a reason to stop
    for directory, subdirectories, names in os.walk(path, onerror=problems.append):
        yield from _unlistable(path, problems)
        subdirectories.sort()
        here = Path(directory)
        for hidden in [d for d in subdirectories if d.startswith(".")]:
            subdirectories.remove(hidden)
            yield NotAMail((here / hidden).relative_to(path).as_posix() + "/", "hidden directory")
        for name in sorted(names):
            key = (here / name).relative_to(path).as_posix()
            if name.startswith("."):
                yield NotAMail(key, "hidden file")
            else:
                yield _read_file(here / name, key, sniff=not name.lower().endswith(".eml"))
    yield from _unlistable(path, problems)


def _unlistable(root: Path, problems: list[OSError]) -> Iterator[Entry]:
    while problems:
        exc = problems.pop(0)
        where = Path(str(exc.filename)) if exc.filename else root
        key = where.relative_to(root).as_posix() + "/" if where.is_relative_to(root) else str(where)
        yield Unreadable(key, f"folder cannot be listed ({exc.strerror}); check its permissions")


def _read_file(path: Path, key: str, *, sniff: bool) -> Entry:
    """One file as a mail; `sniff` first checks that it starts like one, without reading a large file whole."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):  # a symlink, a device, a fifo: never followed or read
            return NotAMail(key, "not a regular file (a symbolic link or a device is never imported)")
        with open_regular_file(path) as handle:
            info = os.fstat(handle.fileno())
            if info.st_size == 0:
                return NotAMail(key, "empty file")
            head = handle.read(SNIFF_BYTES)
            if sniff and not looks_like_mail(head):
                return NotAMail(key, "does not start with a mail header")
            raw = head + handle.read()
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL):  # replaced by a symlink or a device after the listing
            return NotAMail(key, "not a regular file (a symbolic link or a device is never imported)")
        return Unreadable(key, f"cannot be read ({exc.strerror or type(exc).__name__}); check its permissions")
    return SourceMail(key, raw, datetime.fromtimestamp(info.st_mtime, UTC))


def count_files(path: Path, fmt: str) -> int | None:
    """How many entries a directory source will give (for a progress bar); None for an mbox."""
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "maildir":
        return sum(1 for sub in ("new", "cur") for name in os.listdir(path / sub) if not name.startswith("."))
    if kind == "eml" and path.is_dir():
        return sum(len(names) + sum(d.startswith(".") for d in dirs) for _, dirs, names in _visible_walk(path))
    if kind == "eml":
        return 1
    return None


def _visible_walk(path: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    for directory, subdirectories, names in os.walk(path):
        yield directory, list(subdirectories), names
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]


