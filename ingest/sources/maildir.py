"""Maildir mailbox source: the laptop default, a folder another program (or a test) delivers into.

New mail is a file in `new/`; "processed" is the move to `cur/KEY:2,FLAGS` that every Maildir reader
understands, keeping the flags the file had and never adding S (seen). Standard library only.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ingest.sources.base import FetchedMail, FolderStatus, MailCommandError, MailRef, SourceError, read_regular_file

INFO = ":2,"
"""Separates a Maildir file's unique name from its flags (`KEY:2,FS`)."""
POLL_STEP = 0.2
"""How often `wait` looks at new/: short enough that a dropped-in mail is noticed at once on a laptop."""


class MaildirSource:
    """A local Maildir as a MailSource; UIDs do not exist here, the file name is the key."""

    def __init__(self, mailbox: str, path: Path | str, *, poll_step: float = POLL_STEP) -> None:
        self.mailbox = mailbox
        self._root = Path(path)
        self._poll_step = poll_step

    def open(self) -> FolderStatus:
        """Create new/, cur/ and tmp/ when missing (the built-in default mailbox starts empty)."""
        try:
            for sub in ("new", "cur", "tmp"):
                (self._root / sub).mkdir(parents=True, exist_ok=True)
            exists = len(self._names("new")) + len(self._names("cur"))
        except OSError as exc:
            raise self._error(f"cannot create or read the Maildir: {exc.strerror}",
                              "that mailbox.path is a directory the service user may write") from exc
        return FolderStatus(uidvalidity=1, uidnext=None, exists=exists)

    def list_new(self, above_uid: int) -> list[MailRef]:
        """Every mail in new/, oldest first (modification time, then name); `above_uid` means nothing here."""
        found: list[tuple[int, str, MailRef]] = []
        try:
            for name in self._names("new"):
                try:
                    stat = (self._root / "new" / name).stat()
                except FileNotFoundError:
                    continue  # taken away meanwhile
                found.append((stat.st_mtime_ns, name, MailRef(uid=None, key=_key(name), size=stat.st_size)))
        except OSError as exc:
            raise self._error(f"cannot list new/: {exc.strerror}", "the permissions of mailbox.path") from exc
        return [ref for _, _, ref in sorted(found, key=lambda item: (item[0], item[1]))]

    def fetch(self, refs: Sequence[MailRef]) -> Iterator[FetchedMail | MailCommandError]:
        """Read each file whole, one at a time, so memory holds one mail; a vanished file yields its error."""
        for ref in refs:
            path = self._find_new(ref.key)
            try:
                if path is None:
                    raise FileNotFoundError(ref.key)
                raw, info = read_regular_file(path)
            except OSError as exc:
                why = "a symbolic link, not a mail file" if exc.errno == errno.ELOOP else exc.strerror
                yield MailCommandError(self._message(
                    f"mail {ref.key} cannot be read from new/: {why or 'no longer there'}",
                    "whether another program moved, deleted or replaced it; kcc-mail reads only regular files",
                ))
                continue
            yield FetchedMail(ref=ref, raw=raw, internaldate=_moment(info.st_mtime))

    def mark_processed(self, refs: Sequence[MailRef]) -> None:
        """Move new/KEY[:2,FLAGS] to cur/KEY:2,FLAGS; a mail already in cur/ counts as done."""
        failed: list[str] = []
        for ref in refs:
            source = self._find_new(ref.key)
            if source is None:
                if not self._in_cur(ref.key):
                    failed.append(ref.key)
                continue
            flags = source.name.partition(INFO)[2]
            try:
                os.rename(source, self._root / "cur" / f"{ref.key}{INFO}{flags}")
            except OSError:
                failed.append(ref.key)
        if failed:
            raise MailCommandError(self._message(
                f"could not move {', '.join(failed)} from new/ to cur/",
                "the permissions of mailbox.path; these mails will be read again and skipped as already stored",
            ))

    def wait(self, timeout: float) -> bool:
        """Look at new/ every `poll_step` seconds; True as soon as a file appears that was not there before."""
        deadline = time.monotonic() + timeout
        before = set(self._names_or_empty())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self._poll_step, remaining))
            if set(self._names_or_empty()) - before:
                return True

    def close(self) -> None:
        """Nothing to release: no connection is held."""

    # --- helpers --------------------------------------------------------------------------------------------

    def _names(self, sub: str) -> list[str]:
        """Regular mail files in `sub`; dot files are not mail (Maildir readers skip them)."""
        directory = self._root / sub
        with os.scandir(directory) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]

    def _names_or_empty(self) -> list[str]:
        try:
            return self._names("new")
        except OSError:
            return []

    def _find_new(self, key: str) -> Path | None:
        """The file in new/ for `key`, with or without an info part."""
        plain = self._root / "new" / key
        try:
            plain.lstat()  # whatever it is now (a symlink swapped in is refused when it is opened)
            return plain
        except OSError:
            pass
        for name in self._names_or_empty():
            if _key(name) == key:
                return self._root / "new" / name
        return None

    def _in_cur(self, key: str) -> bool:
        try:
            return any(_key(name) == key for name in self._names("cur"))
        except OSError:
            return False

    def _message(self, what: str, check: str) -> str:
        return f"mailbox {self.mailbox!r} (Maildir {self._root}): {what}; check {check}"

    def _error(self, what: str, check: str) -> SourceError:
        return SourceError(self._message(what, check))


def _moment(mtime: float) -> datetime | None:
    """A file time as the mail's arrival; None (intake uses the time it stores it) for a time no datetime holds."""
    try:
        return datetime.fromtimestamp(mtime, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _key(name: str) -> str:
    """The unique part of a Maildir file name: everything before `:2,`."""
    return name.partition(INFO)[0]
