"""The relay's recorder: outcomes are recorded in order; a failed recording stops the sending, not the recording."""

from __future__ import annotations

import threading

import pytest

from replies.recorder import Recorder


def test_recordings_run_in_the_order_they_were_submitted() -> None:
    recorder, done = Recorder(), []
    for number in range(20):
        recorder.submit(lambda number=number: done.append(number))  # type: ignore[misc]
    recorder.close()
    recorder.raise_error()
    assert done == list(range(20))


def test_a_failed_recording_stops_the_sending_but_not_the_recordings_queued_behind_it() -> None:
    recorder, done = Recorder(), []
    gate = threading.Event()

    def fail() -> None:
        raise RuntimeError("database unreachable")

    recorder.submit(gate.wait)  # the recorder is busy while the relay sends on
    recorder.submit(fail)
    recorder.submit(lambda: done.append("accepted after the failing one"))
    gate.set()
    recorder.close()
    assert done == ["accepted after the failing one"], "each recording is its own transaction: it is still tried"
    with pytest.raises(RuntimeError, match="database unreachable"):
        recorder.submit(lambda: done.append("not sent"))  # the relay learns it here and stops sending
    assert done == ["accepted after the failing one"]
