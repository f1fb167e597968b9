"""Import mails from files into one mailbox's review queue: an mbox, a Maildir, or a directory of .eml files.

Why: to take over a mailbox's history, or to replay mails a support engineer saved. Every mail goes the same
way as one fetched by intake (`analyse` + `store_mail`: same storage, parsing and quarantine rules), with no
UID, deduplicated by the sha256 of its bytes, so importing the same folder twice adds nothing. The readers are
ingest.sources.files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.analysis import AnalyseSettings, Analysis
from ingest.sources import files
from ingest.sources.base import FetchedMail, MailRef
from ingest.sources.files import (
    Candidate,
    Entry,
    NotAMail,
    Unreadable,
    analyse_sources,
    count_files,
    read_source,
)
from ingest.workers import default_workers, run_chunks
from kcc.errors import Refused
from kcc.usecases.intake import is_stored, store_mail
from kcc.usecases.reprocess import MAX_ERRORS_IN_A_ROW, POOL_THRESHOLD, chunk_by_size
from store.blobs import sha256_hex
from store.states import MailState
from store.uow import UnitOfWork

__all__ = ["FORMATS", "ImportInterrupted", "ImportSourceError", "ImportSummary", "import_mails", "import_path"]

log = logging.getLogger(__name__)

FORMATS = files.FORMATS
MBOX_POOL_BYTES = 4 * 1024 * 1024
"""An mbox this big holds enough mails to be worth the process pool (its mail count is unknown up front)."""
KEEP_NAMES = 1000
"""At most this many skipped or failed names are kept for the report; the counts are always complete."""


class ImportSourceError(Refused):
    """The path is not something that can be imported (or not in the format asked for); nothing was stored."""


class ImportInterrupted(Exception):
    """The import was stopped (Ctrl-C); what was stored stays, and a rerun skips it as duplicates."""

    def __init__(self, summary: ImportSummary) -> None:
        super().__init__("the import was interrupted; run the same command again to import the rest")
        self.summary = summary


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


ImportProgress = Callable[[ImportSummary], None]


def import_path(
    uow_factory: Callable[[], UnitOfWork], path: Path, mailbox: str, settings: AnalyseSettings, *,
    fmt: str = "auto", dry_run: bool = False, workers: int | None = None,
    progress: ImportProgress | None = None, on_start: Callable[[int | None], None] | None = None,
) -> ImportSummary:
    """Import everything at `path` into `mailbox`; refuses an unusable path before storing anything."""
    try:
        entries = read_source(path, fmt)
        expected = count_files(path, fmt)
        if on_start is not None:
            on_start(expected)
        big = expected >= POOL_THRESHOLD if expected is not None else path.stat().st_size >= MBOX_POOL_BYTES
        workers = (default_workers() if workers is None else workers) if big else 1
        return import_mails(uow_factory, mailbox, entries, settings, dry_run=dry_run, workers=workers,
                            progress=progress)
    except files.ImportSourceError as exc:  # the reader's refusal, in the application's error family
        raise ImportSourceError(str(exc)) from exc


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

    def candidates() -> Iterator[tuple[Candidate, int]]:
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
                    yield (entry, digest), len(entry.raw)
                    continue
            report()

    in_a_row = 0
    try:
        for chunk, analyses in run_chunks(analyse_sources, chunk_by_size(candidates()), settings, workers=workers):
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
    uow_factory: Callable[[], UnitOfWork], mailbox: str, candidate: Candidate, analysis: Analysis,
    summary: ImportSummary,
) -> bool:
    """Store one analysed mail and count it; False when the database refused it."""
    quarantined = analysis.parsed is None
    if summary.dry_run:
        summary.quarantined += quarantined
        summary.stored += not quarantined
        return True
    source = candidate[0]
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
    elif mail.state == MailState.QUARANTAINE:
        summary.quarantined += 1
        log.info("import: %s stored as mail %s in quarantine (%s)", source.key, mail.id, mail.reason)
    else:
        summary.stored += 1
    return True


def _keep(names: list[tuple[str, str]], item: tuple[str, str]) -> None:
    if len(names) < KEEP_NAMES:
        names.append(item)
