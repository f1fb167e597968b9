"""Reconciliation: does every mail on the IMAP server have its stored mail, and does every stored mail show as such?

Silent loss is the failure nobody sees. This compares one folder's listing (UIDs, sizes, flags) with the stored
mails of its mailbox and names what disagrees:
- `never_stored`: unmarked, not stored, and at or below the high-water mark, so intake went past it (a loss);
  unmarked mails above the mark are still to come (`waiting`), also after a UIDVALIDITY change;
- `marked_not_stored`: marked processed (the keyword, or in the processed folder) but no stored mail has these
  bytes (a loss: intake will never look at it again);
- `stored_unmarked`: stored but not marked on the server (intake died between commit and mark; harmless, the next
  poll marks it);
- `purged`: marked, not stored, and received before the cut-off of the last `kcc-mail purge`: retention deleted
  it from the database while the server kept it (not a loss).
A server mail matches a stored one by UIDVALIDITY, UID and size where it can, else by the sha256 of its content,
which is fetched only for mails whose size some stored mail has. No transaction, no socket: the caller passes
the listing, the stored mails and a way to fetch digests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ingest.sources.imap_inventory import FolderListing, ServerMail

Digests = Callable[[str, Sequence[int]], dict[int, str]]


@dataclass(frozen=True, slots=True)
class StoredRef:
    """What reconciliation needs of one stored mail."""

    id: int
    uidvalidity: int | None
    uid: int | None
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Progress:
    """Intake's progress in the folder: the UIDVALIDITY it works under and the highest UID it went past."""

    uidvalidity: int | None
    high_water_uid: int


@dataclass(frozen=True, slots=True)
class Finding:
    folder: str
    uid: int
    size: int
    mail_id: int | None = None


@dataclass
class FolderReport:
    """One folder compared: what matched, what is waiting for intake, and what disagrees."""

    folder: str
    uidvalidity: int
    on_server: int = 0
    matched: int = 0
    waiting: int = 0
    purged: int = 0
    content_fetched: int = 0
    never_stored: list[Finding] = field(default_factory=list)
    marked_not_stored: list[Finding] = field(default_factory=list)
    stored_unmarked: list[Finding] = field(default_factory=list)
    stored_uidvalidities: tuple[int, ...] = ()
    """UIDVALIDITYs other than the server's that this folder's stored mails carry: the server renumbered it."""

    @property
    def lost(self) -> int:
        return len(self.never_stored) + len(self.marked_not_stored)


class StoredIndex:
    """The stored mails of one mailbox, looked up by UID or by content."""

    def __init__(self, stored: Iterable[StoredRef]) -> None:
        self.by_uid: dict[tuple[int | None, int], StoredRef] = {}
        self.by_sha: dict[str, StoredRef] = {}
        self.sizes: set[int] = set()
        for ref in stored:
            if ref.uid is not None:
                self.by_uid[(ref.uidvalidity, ref.uid)] = ref
            self.by_sha.setdefault(ref.sha256, ref)
            self.sizes.add(ref.size)

    def uidvalidities(self) -> set[int]:
        return {uidvalidity for uidvalidity, _ in self.by_uid if uidvalidity is not None}


def compare_folder(
    listing: FolderListing, index: StoredIndex, digests: Digests, *, marked: Callable[[ServerMail], bool],
    progress: Progress | None, purged_before: datetime | None = None,
) -> FolderReport:
    """Compare one folder. `progress` is intake's for the folder it reads (None for the processed folder, whose
    mails all count as marked); `marked` says whether a server mail carries the processed mark; `purged_before`
    is the latest cut-off of `kcc-mail purge`, before which a stored mail may have been deleted on purpose."""
    report = FolderReport(listing.folder, listing.uidvalidity, on_server=len(listing.mails))
    if progress is not None:
        report.stored_uidvalidities = tuple(sorted(index.uidvalidities() - {listing.uidvalidity}))
    found: dict[int, StoredRef] = {}
    unknown: list[ServerMail] = []
    for mail in listing.mails:
        ref = index.by_uid.get((listing.uidvalidity, mail.uid)) if progress is not None else None
        if ref is not None and ref.size == mail.size:
            found[mail.uid] = ref
        elif mail.size in index.sizes:
            unknown.append(mail)  # only its content can tell
    if unknown:
        report.content_fetched = len(unknown)
        for uid, sha in digests(listing.folder, [m.uid for m in unknown]).items():
            if sha in index.by_sha:
                found[uid] = index.by_sha[sha]
    for mail in listing.mails:
        ref = found.get(mail.uid)
        is_marked = marked(mail)
        if ref is not None:
            report.matched += 1
            if not is_marked:
                report.stored_unmarked.append(Finding(listing.folder, mail.uid, mail.size, ref.id))
        elif is_marked and _purged(mail, purged_before):
            report.purged += 1
        elif is_marked:
            report.marked_not_stored.append(Finding(listing.folder, mail.uid, mail.size))
        elif _still_to_come(mail, listing.uidvalidity, progress):
            report.waiting += 1
        else:
            report.never_stored.append(Finding(listing.folder, mail.uid, mail.size))
    return report


def _purged(mail: ServerMail, purged_before: datetime | None) -> bool:
    return purged_before is not None and mail.internaldate is not None and mail.internaldate < purged_before


def _still_to_come(mail: ServerMail, uidvalidity: int, progress: Progress | None) -> bool:
    """Intake has not reached this UID yet (or will re-scan the folder after a UIDVALIDITY change)."""
    if progress is None:
        return False
    return progress.uidvalidity != uidvalidity or mail.uid > progress.high_water_uid
