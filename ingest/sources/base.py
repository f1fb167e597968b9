"""The contract every mailbox source keeps, so intake does not care whether mail comes from IMAP or a Maildir."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol


class SourceError(Exception):
    """The mailbox could not be reached or refused a command; the message names the mailbox and what to check."""


class MailCommandError(SourceError):
    """One mail could not be fetched or marked; the others can go on."""


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What the server says about the folder when it is opened."""

    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True, slots=True)
class MailRef:
    """One mail in the folder: its UID (IMAP) or key (Maildir), and its size as the server reports it."""

    uid: int | None
    key: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Envelope:
    """How an MTA delivered a mail (LMTP): MAIL FROM, the accepted RCPT TOs, and the client's address."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    client: str


@dataclass(frozen=True, slots=True)
class FetchedMail:
    """The raw bytes of one mail exactly as the server returned them, with the server's metadata."""

    ref: MailRef
    raw: bytes
    internaldate: datetime | None
    envelope: Envelope | None = None


class MailSource(Protocol):
    """A mailbox folder that intake reads without ever setting \\Seen behind the employee's back."""

    mailbox: str

    def open(self) -> FolderStatus:
        """Connect (or reconnect) and select the folder."""
        ...

    def list_new(self, above_uid: int) -> list[MailRef]:
        """Mails not yet marked processed, with UID above `above_uid` (IMAP), oldest first."""
        ...

    def fetch(self, refs: Sequence[MailRef]) -> Iterator[FetchedMail | MailCommandError]:
        """Yield each mail's bytes (BODY.PEEK[]), in bounded batches; a failed mail yields its error instead."""
        ...

    def mark_processed(self, refs: Sequence[MailRef]) -> None:
        """Tell the server these mails are stored: add the keyword, or move them to the processed folder."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until new mail may have arrived (IDLE) or `timeout` seconds passed; True when woken by the server."""
        ...

    def close(self) -> None:
        """Log out and release the connection; safe to call twice."""
        ...


def open_regular_file(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, without following a symlink.

    Checked on the opened file, never on the path: a symlink swapped in after a directory was listed would
    otherwise make kcc-mail read (and store, and show) any file the service may read. Raises OSError: ELOOP for a
    symlink, EINVAL for a device, fifo or directory.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes and the stat of a regular file (see `open_regular_file`)."""
    with open_regular_file(path) as handle:
        return handle.read(), os.fstat(handle.fileno())
