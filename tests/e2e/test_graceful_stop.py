"""Graceful stop: SIGTERM in the middle of a batch finishes the mail in hand and exits 0 within 10 s.

"Finished" as a user can check it: every mail the database has is marked processed on the server and every mail
marked on the server is in the database (nothing stored and left unmarked, nothing marked and not stored), nothing
is half-written, and the next poll picks up exactly the rest.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from faultkit import (
    KEYWORD,
    append_all,
    half_written,
    server_mails,
    sha256,
    stored_count,
    stored_digests,
    wait_until,
)
from kcc_cli import end_session, kcc_mail, start_kcc_mail, write_config
from sqlalchemy import Engine
from support.dovecot import ImapUser
from support.hostile import hostile_mails

MAILS = 400
STOP_DEADLINE = 10.0  # the functional deadline: a service manager kills what does not stop in time


@pytest.mark.slow
def test_sigterm_during_a_batch_finishes_the_mail_in_hand_and_exits_0_within_10_s(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    mails = hostile_mails(MAILS, tag="X-Stop-Seq", big_every=50)
    append_all(imap_user, mails)
    mailbox = imap_user.name
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=mailbox)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"

    service = start_kcc_mail("--log-level", "INFO", "run", cwd=tmp_path, log=log)
    try:
        wait_until(lambda: stored_count(engine, mailbox) >= 30 or service.poll() is not None, 120,
                   "the service is storing mails")
        service.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code = service.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_DEADLINE:.0f} s after SIGTERM:\n{log.read_text()[-3000:]}")
        print(f"\nexited {code} after {time.monotonic() - signalled:.2f} s; "
              f"{stored_count(engine, mailbox)} of {MAILS} mails stored at the stop")
    finally:
        end_session(service)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "finishing the mail in hand and stopping" in text
    assert "Traceback" not in text

    stored = stored_digests(engine, mailbox)
    assert 0 < len(stored) < MAILS, "the stop came in the middle of the intake"
    marked = {m.sha256 for m in server_mails(imap_user) if KEYWORD in m.flags}
    assert marked == set(stored), "every stored mail is marked, and only those: the mail in hand was finished"
    assert half_written(engine) == []

    rest = kcc_mail("poll", "--once", cwd=tmp_path, timeout=300)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.startswith(f"fetched={MAILS - len(stored)} "), rest.stdout
    assert Counter(stored_digests(engine, mailbox)) == Counter(sha256(m) for m in mails), "all, each once"
    assert all(KEYWORD in m.flags for m in server_mails(imap_user))
    verify = kcc_mail("verify", cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.startswith("ok"), verify.stdout + verify.stderr
