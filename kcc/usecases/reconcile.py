"""Reconcile an IMAP mailbox with what kcc-mail stored: every server UID ↔ a stored mail, and the result kept.

Reads the stored mails and intake's progress in one short transaction, talks to the server with no transaction
open (ingest.reconcile decides what disagrees), then keeps the result in reconcile_result in another, so
`kcc-mail status` can make a found loss critical. Read-only on the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, select

from ingest.reconcile import FolderReport, Progress, StoredIndex, StoredRef, compare_folder
from ingest.sources.base import SourceError
from ingest.sources.imap_inventory import FolderListing
from kcc.config import MailboxConfig
from kcc.errors import PeerUnreachable, Refused
from store.audit import AuditEvent
from store.mail import InboundMail, MailboxState, ReconcileDigest, ReconcileResult
from store.types import utcnow
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

PURGE_ACTION = "mail.opgeschoond"
"""The audit action of `kcc-mail purge` (kcc.usecases.purge and retention), whose cut-off reconciliation reads."""
SHOWN_UIDS = 20
"""UIDs named per kind of finding in the summary line; the JSON has them all."""


class Inventory(Protocol):
    """The server side (ingest.sources.imap_inventory.ImapInventory)."""

    def listing(self, folder: str) -> FolderListing | None: ...

    def digests(self, folder: str, uids: Sequence[int]) -> dict[int, str]: ...

    def close(self) -> None: ...


@dataclass
class Reconciliation:
    mailbox: str
    folders: list[FolderReport] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(folder.lost for folder in self.folders)

    def summary(self) -> str:
        """One line per mailbox: what matched, and every kind of disagreement with the UIDs it concerns."""
        parts = []
        for folder in self.folders:
            text = f"folder {folder.folder}: {folder.matched} of {folder.on_server} on the server stored"
            if folder.waiting:
                text += f", {folder.waiting} still to be fetched"
            if folder.purged:
                text += f", {folder.purged} purged by retention"
            for label, findings in (("LOST, never stored", folder.never_stored),
                                    ("LOST, marked processed but not stored", folder.marked_not_stored),
                                    ("stored but not marked on the server", folder.stored_unmarked)):
                if findings:
                    uids = ", ".join(str(f.uid) for f in findings[:SHOWN_UIDS])
                    more = f" and {len(findings) - SHOWN_UIDS} more" if len(findings) > SHOWN_UIDS else ""
                    text += f"; {len(findings)} {label} (UID {uids}{more})"
            if folder.stored_uidvalidities:
                text += (f"; the server's UIDVALIDITY is {folder.uidvalidity}, kcc-mail stored under "
                         f"{', '.join(map(str, folder.stored_uidvalidities))} (the folder was renumbered; matched "
                         "by content)")
            parts.append(text)
        verdict = f"{self.lost} lost" if self.lost else "nothing lost"
        return f"mailbox {self.mailbox}: {verdict}; " + "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"mailbox": self.mailbox, "lost": self.lost, "summary": self.summary(),
                "folders": [{**asdict(folder), "lost": folder.lost} for folder in self.folders]}


def reconcile_mailbox(
    uow_factory: Callable[[], UnitOfWork], mailbox: MailboxConfig, inventory: Inventory,
) -> Reconciliation:
    """Compare the mailbox's folder (and its processed folder) with the stored mails, and keep the result."""
    if mailbox.kind != "imap":
        raise Refused(f"mailbox {mailbox.name} is kind {mailbox.kind}: only an IMAP mailbox has UIDs to reconcile")
    index, progress, purged_before = _stored(uow_factory(), mailbox.name)
    result = Reconciliation(mailbox.name)
    keyword = mailbox.processed_keyword
    try:
        inbox = inventory.listing(mailbox.folder)
        if inbox is None:
            raise PeerUnreachable(f"mailbox {mailbox.name}: folder {mailbox.folder!r} does not exist on the server")
        marked_in_inbox = (lambda m: keyword in m.flags) if not mailbox.processed_folder else (lambda m: False)
        digests = KnownDigests(uow_factory, mailbox.name, inbox, inventory)
        result.folders.append(compare_folder(inbox, index, digests, marked=marked_in_inbox,
                                             progress=progress, purged_before=purged_before))
        result.folders[-1].content_fetched = digests.keep()
        if mailbox.processed_folder:
            processed = inventory.listing(mailbox.processed_folder)
            if processed is not None:  # created by intake at its first move
                digests = KnownDigests(uow_factory, mailbox.name, processed, inventory)
                result.folders.append(compare_folder(processed, index, digests, marked=lambda m: True,
                                                     progress=None, purged_before=purged_before))
                result.folders[-1].content_fetched = digests.keep()
    except SourceError as exc:
        raise PeerUnreachable(str(exc)) from None
    finally:
        inventory.close()
    _keep(uow_factory(), result)
    if result.lost:
        log.error("%s", result.summary(), extra={"mailbox": mailbox.name})
    return result


class KnownDigests:
    """The content digests of one folder's mails: remembered from earlier reconciliations (reconcile_digest), and
    fetched from the server only for UIDs not seen before. `keep` remembers the new ones and forgets the UIDs
    that are no longer in the folder."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], mailbox: str, listing: FolderListing,
                 inventory: Inventory) -> None:
        self._uow, self._mailbox, self._listing, self._inventory = uow_factory, mailbox, listing, inventory
        with uow_factory() as uow:
            rows = uow.session.execute(select(ReconcileDigest.uid, ReconcileDigest.sha256).where(
                ReconcileDigest.mailbox == mailbox, ReconcileDigest.folder == listing.folder,
                ReconcileDigest.uidvalidity == listing.uidvalidity))
            self._known: dict[int, str] = {int(uid): sha for uid, sha in rows}
        self._new: dict[int, str] = {}

    def __call__(self, folder: str, uids: Sequence[int]) -> dict[int, str]:
        missing = [uid for uid in uids if uid not in self._known]
        self._new.update(self._inventory.digests(folder, missing))
        return {uid: sha for uid in uids if (sha := self._known.get(uid) or self._new.get(uid))}

    def keep(self) -> int:
        """Remember what was fetched, forget what left the folder; returns how many mails' content was fetched."""
        listing = self._listing
        on_server = {mail.uid for mail in listing.mails}
        gone = [uid for uid in self._known if uid not in on_server]
        where = (ReconcileDigest.mailbox == self._mailbox, ReconcileDigest.folder == listing.folder)
        with self._uow() as uow:
            uow.session.execute(delete(ReconcileDigest).where(*where, ReconcileDigest.uidvalidity
                                                              != listing.uidvalidity))
            for start in range(0, len(gone), 500):
                uow.session.execute(delete(ReconcileDigest).where(
                    *where, ReconcileDigest.uidvalidity == listing.uidvalidity,
                    ReconcileDigest.uid.in_(gone[start:start + 500])))
            uow.session.add_all(ReconcileDigest(mailbox=self._mailbox, folder=listing.folder,
                                                uidvalidity=listing.uidvalidity, uid=uid, sha256=sha)
                                for uid, sha in self._new.items())
            uow.commit()
        return len(self._new)


def _stored(uow: UnitOfWork, mailbox: str) -> tuple[StoredIndex, Progress, datetime | None]:
    """The stored mails, intake's progress, and the latest purge cut-off (retention deletes mail on purpose)."""
    with uow:
        rows = uow.session.execute(
            select(InboundMail.id, InboundMail.uidvalidity, InboundMail.uid, InboundMail.size,
                   InboundMail.raw_sha256).where(InboundMail.mailbox == mailbox)
        )
        index = StoredIndex(StoredRef(*row) for row in rows)
        state = uow.session.get(MailboxState, mailbox)
        progress = Progress(state.uidvalidity if state else None, state.high_water_uid if state else 0)
        purges = uow.session.scalars(select(AuditEvent.details).where(AuditEvent.action == PURGE_ACTION))
        cutoffs = [datetime.fromisoformat(d["cutoff"]) for d in purges if isinstance(d, dict) and d.get("cutoff")]
    return index, progress, max(cutoffs, default=None)


def _keep(uow: UnitOfWork, result: Reconciliation) -> None:
    report = result.as_json()
    with uow:
        row = uow.session.get(ReconcileResult, result.mailbox, with_for_update=True)
        if row is None:
            row = ReconcileResult(mailbox=result.mailbox)
            uow.session.add(row)
        row.ran_at, row.lost, row.summary, row.report = utcnow(), result.lost, result.summary(), report
        uow.commit()
