"""MaildirSource on a real directory: what a user who drops mails into the laptop Maildir would check."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.sources.base import FetchedMail, MailCommandError, MailRef
from ingest.sources.maildir import MaildirSource


def deliver(root: Path, name: str, raw: bytes, mtime: float | None = None) -> Path:
    """Deliver like an MDA: write in tmp/, then rename into new/."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "new").mkdir(parents=True, exist_ok=True)
    tmp = root / "tmp" / name
    tmp.write_bytes(raw)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    final = root / "new" / name
    os.rename(tmp, final)
    return final


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "mail" / "info"


@pytest.fixture
def source(root: Path) -> MaildirSource:
    return MaildirSource("info", root, poll_step=0.05)


def test_open_creates_an_empty_maildir(root: Path, source: MaildirSource) -> None:
    status = source.open()

    assert all((root / sub).is_dir() for sub in ("new", "cur", "tmp"))
    assert (status.uidvalidity, status.uidnext, status.exists) == (1, None, 0)
    assert source.open().uidvalidity == 1, "stable across opens"


def test_list_new_is_oldest_first_with_keys_and_sizes(root: Path, source: MaildirSource) -> None:
    source.open()
    deliver(root, "300.b.host", b"third", mtime=3_000)
    deliver(root, "100.a.host:2,F", b"first (flagged)", mtime=1_000)
    deliver(root, "200.c.host", b"second", mtime=2_000)
    deliver(root, "200.a.host", b"second, same time, earlier name", mtime=2_000)
    (root / "new" / ".hidden").write_bytes(b"not mail")

    refs = source.list_new(above_uid=999)

    assert [r.key for r in refs] == ["100.a.host", "200.a.host", "200.c.host", "300.b.host"]
    assert [r.size for r in refs] == [15, 31, 6, 5]
    assert all(r.uid is None for r in refs)


def test_fetch_returns_the_bytes_and_the_delivery_time(root: Path, source: MaildirSource) -> None:
    source.open()
    raw = b"Subject: vraag\r\n\r\nBeste gemeente,\r\n"
    deliver(root, "1.x.host", raw, mtime=1_700_000_000)

    [got] = list(source.fetch(source.list_new(0)))

    assert isinstance(got, FetchedMail)
    assert got.raw == raw
    assert got.internaldate == datetime.fromtimestamp(1_700_000_000, UTC)


def test_mark_processed_moves_to_cur_keeping_flags_and_never_adding_seen(root: Path, source: MaildirSource) -> None:
    source.open()
    deliver(root, "1.x.host", b"one")
    deliver(root, "2.x.host:2,F", b"two")
    deliver(root, "3.x.host", b"three")
    refs = source.list_new(0)

    source.mark_processed(refs[:2])

    assert sorted(p.name for p in (root / "cur").iterdir()) == ["1.x.host:2,", "2.x.host:2,F"]
    assert [r.key for r in source.list_new(0)] == ["3.x.host"]
    source.mark_processed(refs[:1])  # again: already done, no error


def test_a_vanished_mail_yields_an_error_for_that_mail_only(root: Path, source: MaildirSource) -> None:
    source.open()
    deliver(root, "1.x.host", b"one")
    deliver(root, "2.x.host", b"two")
    refs = source.list_new(0)
    (root / "new" / "1.x.host").unlink()

    results = list(source.fetch(refs))

    assert isinstance(results[0], MailCommandError) and "1.x.host" in str(results[0])
    assert isinstance(results[1], FetchedMail) and results[1].raw == b"two"
    with pytest.raises(MailCommandError, match=r"1\.x\.host"):
        source.mark_processed([MailRef(uid=None, key="1.x.host", size=3)])


def test_wait_wakes_when_a_mail_is_delivered(root: Path, source: MaildirSource) -> None:
    source.open()
    deliver(root, "0.old.host", b"already there")
    timer = threading.Timer(0.2, deliver, args=(root, "1.new.host", b"new"))
    timer.start()
    started = time.monotonic()

    woke = source.wait(5)

    timer.join()
    assert woke is True
    assert time.monotonic() - started < 1


def test_wait_times_out_without_new_mail(root: Path, source: MaildirSource) -> None:
    source.open()
    deliver(root, "0.old.host", b"already there")
    started = time.monotonic()

    assert source.wait(0.3) is False
    assert time.monotonic() - started >= 0.3
    source.close()
    source.close()


def test_a_mail_swapped_for_a_symlink_after_listing_is_never_read(
    tmp_path: Path, root: Path, source: MaildirSource
) -> None:
    secret = tmp_path / "geheim.txt"
    secret.write_bytes(b"Subject: geheim\r\n\r\nwachtwoord=hunter2\r\n")
    source.open()
    mail = deliver(root, "1.eml", b"Subject: echt\r\n\r\ntekst\r\n")
    (ref,) = source.list_new(0)
    mail.unlink()
    mail.symlink_to(secret)  # swapped in between listing and reading
    (item,) = source.fetch([ref])
    assert isinstance(item, MailCommandError) and "symbolic link" in str(item)
    assert b"hunter2" not in str(item).encode()
    assert source.list_new(0) == [], "a symlink is not listed as new mail either"
