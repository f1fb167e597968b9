"""Storing beside fetching: a thread commits the fetched mails while the poller fetches the next ones.

The order rule for each mail stays as it was: commit, then mark it processed on the server, then move the
high-water mark. This thread only commits. The poller marks what the thread reports as committed, so a mail is
never marked before its commit, and a crash at any moment leaves at most mails that are re-fetched and skipped.
"""

from __future__ import annotations

import queue
import threading
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


class StoringThread(Generic[Item]):
    """Runs `store` on each item in order, on one thread; at most `depth` items wait, bounding the memory.

    After `store` raises, nothing more is stored: the items still queued are dropped (they are not marked, so
    they are fetched again next time) and the error is raised to the poller at its next `put` or at `close`.
    """

    def __init__(self, store: Callable[[Item], MailRef], depth: int) -> None:
        self._store = store
        self._queue: queue.Queue[Item | _EndOfBatch | object] = queue.Queue(maxsize=depth)
        self._stored: queue.SimpleQueue[StoredBatch] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="intake-store", daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        """Queue one mail; waits while `depth` mails wait already."""
        self.raise_error()
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
        while (item := self._queue.get()) is not _CLOSE:
            if self._error is not None:
                continue  # stopped at an error: drop the rest unstored (and unmarked)
            if isinstance(item, _EndOfBatch):
                self._stored.put(StoredBatch(item.batch, handled, complete=True))
                handled = []
                continue
            try:
                handled.append(self._store(item))  # type: ignore[arg-type]
            except BaseException as exc:  # the poller re-raises it; the mails before it are committed
                self._error = exc
                self._stored.put(StoredBatch((), handled, complete=False))
                handled = []
        if handled:
            self._stored.put(StoredBatch((), handled, complete=False))
