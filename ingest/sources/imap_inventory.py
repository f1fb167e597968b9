"""What an IMAP folder holds, read for reconciliation: every UID with its size and flags, then content on demand.

Read-only (EXAMINE, BODY.PEEK[]): reconciling never sets a flag, moves a mail or marks one \\Seen. UIDs and sizes
come first, for every mail in one pass of small FETCHes; the bytes only of the UIDs a caller asks for (those whose
UID and size did not match a stored mail), in bounded batches.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.sources.base import SourceError
from ingest.sources.imap import ImapSettings, ImapSource

CHUNK = 500
"""UIDs per FETCH of sizes and flags."""
CONTENT_BATCH = 20
"""Mails per FETCH of content (a mail may be 50 MB)."""


@dataclass(frozen=True, slots=True)
class ServerMail:
    uid: int
    size: int
    flags: frozenset[str]
    internaldate: datetime | None


@dataclass(frozen=True, slots=True)
class FolderListing:
    folder: str
    uidvalidity: int
    mails: tuple[ServerMail, ...]


class ImapInventory:
    """One IMAP account, read folder by folder; one connection, closed by `close`."""

    def __init__(self, settings: ImapSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._account = ImapSource(settings, max_mail_bytes=0, ssl_context=ssl_context, connect_attempts=2)
        self.mailbox = settings.mailbox

    def listing(self, folder: str) -> FolderListing | None:
        """Every mail in `folder` with UID, size, flags and INTERNALDATE; None when the folder does not exist."""
        client = self._client()
        try:
            if not client.folder_exists(folder):
                return None
            info = client.select_folder(folder, readonly=True)
            uids = sorted(int(uid) for uid in client.search(["ALL"]))
            mails = []
            for start in range(0, len(uids), CHUNK):
                response = client.fetch(uids[start:start + CHUNK], ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
                for uid, data in sorted(response.items()):
                    if b"RFC822.SIZE" not in data:
                        continue  # expunged between SEARCH and FETCH
                    flags = frozenset(f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f)
                                      for f in data.get(b"FLAGS", ()))
                    mails.append(ServerMail(int(uid), int(data[b"RFC822.SIZE"]), flags,
                                            _utc(data.get(b"INTERNALDATE"))))
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"mailbox {self.mailbox}: reading folder {folder!r} failed "
                              f"({type(exc).__name__}); check that the server is reachable") from None
        return FolderListing(folder, int(info[b"UIDVALIDITY"]), tuple(mails))

    def digests(self, folder: str, uids: Sequence[int]) -> dict[int, str]:
        """The sha256 of the bytes of each UID in `folder` (BODY.PEEK[]), for the mails that did not match by UID."""
        found: dict[int, str] = {}
        if not uids:
            return found
        client = self._client()
        try:
            client.select_folder(folder, readonly=True)
            for batch in _batches(uids, CONTENT_BATCH):
                for uid, data in client.fetch(batch, ["BODY.PEEK[]"]).items():
                    body = data.get(b"BODY[]")
                    if body is not None:
                        found[int(uid)] = hashlib.sha256(bytes(body)).hexdigest()
        except Exception as exc:
            raise SourceError(f"mailbox {self.mailbox}: reading mails in folder {folder!r} failed "
                              f"({type(exc).__name__}); check that the server is reachable") from None
        return found

    def close(self) -> None:
        self._account.close()

    def _client(self) -> Any:
        return self._account.logged_in_client()


def _batches(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield list(uids[start:start + size])


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
