"""The storing thread's group commit: groups by count, by size, by waiting, at each batch's end; never a ref
reported before the group that holds it was stored, and nothing stored after a failed group."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from ingest.sources.base import MailRef
from ingest.storing import GroupLimits, StoringThread


def refs(count: int, start: int = 1) -> list[MailRef]:
    return [MailRef(uid, str(uid), 10) for uid in range(start, start + count)]


class Recorder:
    """A store that records each group it is given; fails on the group holding `fail_uid`."""

    def __init__(self, fail_uid: int | None = None) -> None:
        self.groups: list[list[int | None]] = []
        self.fail_uid = fail_uid
        self.stored = threading.Event()

    def __call__(self, group: Sequence[MailRef]) -> list[MailRef]:
        uids = [ref.uid for ref in group]
        if self.fail_uid in uids:
            raise RuntimeError("the database refused the group")
        self.groups.append(uids)
        self.stored.set()
        return list(group)


def thread(store: Recorder, limits: GroupLimits, size: int = 10) -> StoringThread[MailRef]:
    return StoringThread(store, depth=4, size=lambda ref: size, limits=limits)


def test_groups_are_cut_at_the_mail_limit_and_at_the_end_of_each_batch() -> None:
    store = Recorder()
    storing = thread(store, GroupLimits(mails=4, seconds=60.0))
    first, second = refs(10), refs(3, start=11)
    for batch in (first, second):
        for ref in batch:
            storing.put(ref)
        storing.end_batch(batch)
    reported = storing.close()
    assert store.groups == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10], [11, 12, 13]]
    assert [(list(b.batch), b.handled, b.complete) for b in reported] == [(first, first, True), (second, second, True)]


def test_a_group_is_cut_when_its_bytes_reach_the_limit() -> None:
    store = Recorder()
    storing = thread(store, GroupLimits(mails=50, seconds=60.0, bytes=25), size=10)
    batch = refs(7)
    for ref in batch:
        storing.put(ref)
    storing.end_batch(batch)
    storing.close()
    assert store.groups == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_group_that_waited_long_enough_is_stored_before_its_batch_ends() -> None:
    store = Recorder()
    storing = thread(store, GroupLimits(mails=50, seconds=0.01))
    storing.put(refs(1)[0])
    assert store.stored.wait(timeout=30), "the lone mail was never stored while the batch stayed open"
    assert storing.stored() == [], "reported only at the end of its batch"
    storing.end_batch(refs(1))
    assert [b.handled for b in storing.close()] == [refs(1)]


def test_after_a_failed_group_nothing_more_is_stored_and_the_committed_groups_are_reported() -> None:
    store = Recorder(fail_uid=6)
    storing = thread(store, GroupLimits(mails=4, seconds=60.0))
    batch = refs(12)
    try:
        for ref in batch:
            storing.put(ref)  # raises the group's error once the thread has met it
        storing.end_batch(batch)
    except RuntimeError:
        pass
    reported = storing.close()
    with pytest.raises(RuntimeError, match="refused"):
        storing.raise_error()
    assert store.groups == [[1, 2, 3, 4]]
    assert [(b.handled, b.complete) for b in reported] == [(refs(4), False)], "only the committed group is marked"


def test_one_by_one_is_the_default() -> None:
    store = Recorder()
    storing = StoringThread(store, depth=4, size=lambda ref: 1)
    batch = refs(3)
    for ref in batch:
        storing.put(ref)
    storing.end_batch(batch)
    storing.close()
    assert store.groups == [[1], [2], [3]]


def test_the_mails_waiting_for_the_thread_are_bounded_in_bytes() -> None:
    """However many mails may wait, their bytes may not pass max_bytes; a mail larger than that waits alone."""
    release = threading.Event()

    def slow_store(group: Sequence[MailRef]) -> list[MailRef]:
        release.wait(timeout=30)
        return list(group)

    sizes = {1: 10, 2: 40, 3: 40, 4: 40, 5: 500}
    storing = StoringThread(slow_store, depth=100, size=lambda ref: sizes[ref.uid or 0],
                            limits=GroupLimits(mails=1), max_bytes=100)
    put: list[int] = []

    def producer() -> None:
        for ref in refs(5):
            storing.put(ref)
            put.append(ref.uid or 0)

    worker = threading.Thread(target=producer)
    worker.start()
    deadline = time.monotonic() + 30
    while len(put) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.join(timeout=0.3)  # a put that should wait would be done by now
    # the thread holds mail 1 in its (stuck) group; 2 and 3 wait, 80 bytes; 4 would make 120
    assert put == [1, 2, 3], "no more than 100 bytes wait"
    release.set()
    worker.join(timeout=30)
    assert put == [1, 2, 3, 4, 5], "the 500-byte mail was let in once the others were taken"
    storing.end_batch(refs(5))
    assert [b.handled for b in storing.close()] == [refs(5)]
