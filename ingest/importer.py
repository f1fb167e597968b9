"""Import mails from files into one mailbox's review queue: an mbox, a Maildir, or a directory of .eml files.

Why: to take over a mailbox's history, or to replay mails a support engineer saved. Every mail goes the same
way as one fetched by intake (`analyse` + `store_mail`: same storage, parsing and quarantine rules), with no
UID, deduplicated by the sha256 of its bytes, so importing the same folder twice adds nothing.

Readers stream: one mail in memory at a time. Decisions where the formats leave room:

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
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from ingest.intake import Analysis, is_stored, store_mail
from ingest.reprocess import (
    MAX_ERRORS_IN_A_ROW,
    POOL_THRESHOLD,
    AnalyseSettings,
    chunk_by_size,
    default_workers,
    run_chunks,
)
from ingest.sources.base import FetchedMail, MailRef
from store.blobs import sha256_hex
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = [
    "FORMATS",
    "ImportInterrupted",
    "ImportSourceError",
    "ImportSummary",
    "NotAMail",
    "SourceMail",
    "Unreadable",
    "analyse_chunk",
    "count_files",
    "detect_format",
    "import_mails",
    "import_path",
    "looks_like_mail",
    "read_eml_directory",
    "read_maildir",
    "read_mbox",
    "read_source",
]

log = logging.getLogger(__name__)

FORMATS = ("auto", "mbox", "mboxrd", "mboxo", "maildir", "eml")
SNIFF_BYTES = 4096
MBOX_POOL_BYTES = 4 * 1024 * 1024
"""An mbox this big holds enough mails to be worth the process pool (its mail count is unknown up front)."""
KEEP_NAMES = 1000
"""At most this many skipped or failed names are kept for the report; the counts are always complete."""


class ImportSourceError(Exception):
    """The path is not something that can be imported (or not in the format asked for); nothing was stored."""


class ImportInterrupted(Exception):
    """The import was stopped (Ctrl-C); what was stored stays, and a rerun skips it as duplicates."""

    def __init__(self, summary: ImportSummary) -> None:
        super().__init__("the import was interrupted; run the same command again to import the rest")
        self.summary = summary


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
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return NotAMail(key, "not a regular file")
        if info.st_size == 0:
            return NotAMail(key, "empty file")
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if sniff and not looks_like_mail(head):
                return NotAMail(key, "does not start with a mail header")
            raw = head + handle.read()
    except OSError as exc:
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


# --------------------------------------------------------------------------------------------- the use case


@dataclass
class ImportSummary:
    """Counts of one import. `read` mails came out of the source: each is stored, quarantined (stored too),
    a duplicate of a stored mail, or an error; `skipped` files were not mails."""

    read: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    skipped: int = 0
    errors: int = 0
    dry_run: bool = False
    entries: int = 0  # everything the source gave: mails, skipped files, unreadable files (for progress)
    skipped_names: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"read={self.read} stored={self.stored} quarantined={self.quarantined} "
            f"duplicates={self.duplicates} skipped={self.skipped} errors={self.errors}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "read": self.read, "stored": self.stored, "quarantined": self.quarantined,
            "duplicates": self.duplicates, "skipped": self.skipped, "errors": self.errors, "dry_run": self.dry_run,
            "skipped_files": [{"key": key, "why": why} for key, why in self.skipped_names],
            "failures": [{"key": key, "error": error} for key, error in self.failures],
        }


@dataclass(frozen=True, slots=True)
class _Candidate:
    mail: SourceMail
    sha256: str


def analyse_chunk(candidates: list[_Candidate], settings: AnalyseSettings) -> list[Analysis]:
    """The unit of work of one pool worker (module level, so it pickles by name)."""
    return [settings.analyse(c.mail.raw, c.mail.received_at, c.sha256) for c in candidates]


ImportProgress = Callable[[ImportSummary], None]


def import_path(
    uow_factory: Callable[[], UnitOfWork], path: Path, mailbox: str, settings: AnalyseSettings, *,
    fmt: str = "auto", dry_run: bool = False, workers: int | None = None,
    progress: ImportProgress | None = None, on_start: Callable[[int | None], None] | None = None,
) -> ImportSummary:
    """Import everything at `path` into `mailbox`; refuses an unusable path before storing anything."""
    entries = read_source(path, fmt)
    expected = count_files(path, fmt)
    if on_start is not None:
        on_start(expected)
    big = expected >= POOL_THRESHOLD if expected is not None else path.stat().st_size >= MBOX_POOL_BYTES
    workers = (default_workers() if workers is None else workers) if big else 1
    return import_mails(uow_factory, mailbox, entries, settings, dry_run=dry_run, workers=workers, progress=progress)


def import_mails(
    uow_factory: Callable[[], UnitOfWork], mailbox: str, entries: Iterable[Entry], settings: AnalyseSettings, *,
    dry_run: bool = False, workers: int = 1, progress: ImportProgress | None = None,
) -> ImportSummary:
    """Store each new mail as intake would (one transaction each); parse in `workers` processes."""
    summary = ImportSummary(dry_run=dry_run)
    seen: set[str] = set()  # only for a dry run, where nothing stored tells a later copy it is a duplicate

    def report() -> None:
        if progress is not None:
            progress(summary)

    def candidates() -> Iterator[tuple[_Candidate, int]]:
        for entry in entries:
            summary.entries += 1
            if isinstance(entry, NotAMail):
                summary.skipped += 1
                _keep(summary.skipped_names, (entry.key, entry.why))
                log.info("import: %s skipped: %s", entry.key, entry.why)
            elif isinstance(entry, Unreadable):
                summary.errors += 1
                _keep(summary.failures, (entry.key, entry.error))
                log.warning("import: %s %s", entry.key, entry.error)
            else:
                summary.read += 1
                digest = sha256_hex(entry.raw)
                if digest in seen or is_stored(uow_factory(), mailbox, digest, None, None):
                    summary.duplicates += 1
                else:
                    if dry_run:
                        seen.add(digest)
                    yield _Candidate(entry, digest), len(entry.raw)
                    continue
            report()

    in_a_row = 0
    try:
        for chunk, analyses in run_chunks(analyse_chunk, chunk_by_size(candidates()), settings, workers=workers):
            for candidate, analysis in zip(chunk, analyses, strict=True):
                failed = not _store(uow_factory, mailbox, candidate, analysis, summary)
                in_a_row = in_a_row + 1 if failed else 0
                report()
                if in_a_row >= MAX_ERRORS_IN_A_ROW:
                    last = summary.failures[-1][1]
                    raise ImportSourceError(
                        f"stopped after {in_a_row} mails in a row could not be stored (last: {last}); fix the cause "
                        "and run the same import again: what was stored is skipped as duplicates"
                    )
    except KeyboardInterrupt:
        raise ImportInterrupted(summary) from None
    return summary


def _store(
    uow_factory: Callable[[], UnitOfWork], mailbox: str, candidate: _Candidate, analysis: Analysis,
    summary: ImportSummary,
) -> bool:
    """Store one analysed mail and count it; False when the database refused it."""
    quarantined = analysis.parsed is None
    if summary.dry_run:
        summary.quarantined += quarantined
        summary.stored += not quarantined
        return True
    source = candidate.mail
    fetched = FetchedMail(
        ref=MailRef(uid=None, key=source.key, size=len(source.raw)), raw=source.raw, internaldate=source.received_at
    )
    try:
        mail = store_mail(uow_factory(), mailbox, fetched, None, analysis)
    except Exception as exc:  # one mail the database refuses must not stop the others
        log.exception("import: %s could not be stored", source.key)
        summary.errors += 1
        _keep(summary.failures, (source.key, f"could not be stored ({type(exc).__name__}: {exc})"))
        return False
    if mail is None:
        summary.duplicates += 1
    elif mail.state == "quarantaine":
        summary.quarantined += 1
        log.info("import: %s stored as mail %s in quarantine (%s)", source.key, mail.id, mail.reason)
    else:
        summary.stored += 1
    return True


def _keep(names: list[tuple[str, str]], item: tuple[str, str]) -> None:
    if len(names) < KEEP_NAMES:
        names.append(item)
