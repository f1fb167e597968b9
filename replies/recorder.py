"""Recording beside sending: the relay's outcomes are committed on a thread of their own, in order.

The relay then sends the next message while the database commits the last group, instead of waiting for it. The
rules do not change: an outcome is recorded only after the server answered, and a relay that dies before it was
recorded leaves the message `sending`, then `uncertain` — never resent by itself.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

RECORDING_DEPTH = 2  # recordings that may wait; the relay stops sending when it is this far ahead

_CLOSE = object()


class Recorder:
    """Runs recordings one after the other on one thread.

    A recording that raises does not stop the ones queued after it (each is its own transaction, and the
    database may be back): the first error is raised to the relay at its next `submit` or at `close`, so it
    stops sending.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], object] | object] = queue.Queue(maxsize=RECORDING_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="relay-record", daemon=True)
        self._thread.start()

    def submit(self, recording: Callable[[], object]) -> None:
        self.raise_error()
        self._queue.put(recording)

    def close(self) -> None:
        """Wait until every submitted recording is done; the first error, if any, is then `raise_error`'s."""
        self._queue.put(_CLOSE)
        self._thread.join()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (recording := self._queue.get()) is not _CLOSE:
            try:
                recording()  # type: ignore[operator]
            except BaseException as exc:  # raised to the relay's thread; the next recordings still run
                if self._error is None:
                    self._error = exc
