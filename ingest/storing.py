"""Storing beside fetching: a thread commits the fetched mails while the poller fetches the next ones.

The thread stores mails in groups (group commit): up to `group_mails` mails, `group_bytes` bytes or
`group_seconds` after the group's first mail, whichever comes first, and always at the end of a fetched batch.
The order rule for each mail stays as it was: commit, then mark it processed on the server, then move the
high-water mark. This thread only commits. The poller marks what the thread reports as committed, so a mail is
never marked before its commit, and a crash at any moment leaves at most mails that are re-fetched and skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ingest.sources.base import MailRef

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What the thread committed of one batch; `complete` when the batch ended without an error."""

    batch: Sequence[MailRef]
    handled: list[MailRef]
    complete: bool


@dataclass(frozen=True, slots=True)
class _EndOfBatch:
    batch: Sequence[MailRef]


_CLOSE = object()


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """When a group of mails is committed: whichever limit is reached first."""

    mails: int = 50
    seconds: float = 0.2
    bytes: int = 16 * 1024 * 1024  # bounds the memory a group holds, whatever the mailbox holds


def _one_by_one() -> GroupLimits:
    return GroupLimits(mails=1)


class StoringThread(Generic[Item]):
    """Runs `store` on groups of items in order, on one thread; at most `depth` items (and `max_bytes` of their
    sizes) wait besides the group.

    `store` commits a group and returns the refs it handled. After it raises, nothing more is stored: the items
    of that group and those still queued are dropped (they are not marked, so they are fetched again next time)
    and the error is raised to the poller at its next `put` or at `close`.
    """

    def __init__(
        self, store: Callable[[Sequence[Item]], list[MailRef]], depth: int, *, size: Callable[[Item], int],
        limits: GroupLimits | None = None, max_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._size = size
        self._limits = limits or _one_by_one()
        self._queue: queue.Queue[Item | _EndOfBatch | object] = queue.Queue(maxsize=depth)
        self._waiting = _ByteBudget(max_bytes)
        self._stored: queue.SimpleQueue[StoredBatch] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="intake-store", daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        """Queue one mail; waits while `depth` mails, or `max_bytes` of mail, wait already."""
        self.raise_error()
        self._waiting.take(self._size(item))
        self._queue.put(item)

    def end_batch(self, batch: Sequence[MailRef]) -> None:
        """Every mail of `batch` that was fetched is queued; report the batch once they are committed."""
        self._queue.put(_EndOfBatch(batch))

    def stored(self) -> list[StoredBatch]:
        """The batches committed since the last call, without waiting."""
        batches = []
        while not self._stored.empty():
            batches.append(self._stored.get())
        return batches

    def close(self) -> list[StoredBatch]:
        """Wait until every queued mail is committed (or the thread stopped at an error); the unreported batches.

        A batch that was cut short (a fetch error, an interrupt) is reported as incomplete with the mails of it
        that were committed.
        """
        self._queue.put(_CLOSE)
        self._thread.join()
        return self.stored()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        handled: list[MailRef] = []
        group: list[Item] = []
        group_bytes, deadline = 0, 0.0
        while True:
            try:
                timeout = max(0.0, deadline - time.monotonic()) if group else None
                item = self._queue.get(timeout=timeout)
            except queue.Empty:  # the group waited long enough for more mails
                handled = self._commit(group, handled)
                group, group_bytes = [], 0
                continue
            if item is _CLOSE:
                break
            if self._error is not None:
                if not isinstance(item, _EndOfBatch):
                    self._waiting.give_back(self._size(item))  # type: ignore[arg-type]
                continue  # stopped at an error: drop the rest unstored (and unmarked)
            if isinstance(item, _EndOfBatch):
                handled = self._commit(group, handled)
                group, group_bytes = [], 0
                if self._error is None:
                    self._stored.put(StoredBatch(item.batch, handled, complete=True))
                    handled = []
                continue
            if not group:
                deadline = time.monotonic() + self._limits.seconds
            group.append(item)  # type: ignore[arg-type]
            size = self._size(item)  # type: ignore[arg-type]
            group_bytes += size
            self._waiting.give_back(size)
            if len(group) >= self._limits.mails or group_bytes >= self._limits.bytes:
                handled = self._commit(group, handled)
                group, group_bytes = [], 0
        if self._error is None:
            handled = self._commit(group, handled)
        if handled:
            self._stored.put(StoredBatch((), handled, complete=False))

    def _commit(self, group: list[Item], handled: list[MailRef]) -> list[MailRef]:
        """Store `group`; the refs handled so far in this batch. On an error, report those as an incomplete batch."""
        if not group or self._error is not None:
            return handled
        try:
            return handled + self._store(group)
        except BaseException as exc:  # the poller re-raises it; the groups before it are committed
            self._error = exc
            self._stored.put(StoredBatch((), handled, complete=False))
            return []


class _ByteBudget:
    """How many bytes of mail may wait for the thread; a mail larger than the whole budget waits alone."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def take(self, size: int) -> None:
        if self._limit is None:
            return
        with self._changed:
            while self._used and self._used + size > self._limit:
                self._changed.wait()
            self._used += size

    def give_back(self, size: int) -> None:
        if self._limit is None:
            return
        with self._changed:
            self._used -= size
            self._changed.notify_all()
