"""The kill test: `kcc-mail run` killed with SIGKILL at 20 random moments during the intake of 1,000 mails.

Each time it is started again, as systemd would. In the end every mail is stored exactly once (the same count and
the same sha256 set as what was APPENDed), every mail carries the processed keyword on the server, and nothing is
half-written. The randomness is seeded; the seed is printed (KCC_KILL_SEED=<seed> replays a run).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from faultkit import (
    append_all,
    half_written,
    server_mails,
    sha256,
    stored_count,
    stored_digests,
    unmarked_count,
    wait_until,
)
from kcc_cli import end_session, kcc_mail, session_processes, start_kcc_mail, write_config
from sqlalchemy import Engine
from support.dovecot import ImapUser
from support.hostile import hostile_mails

MAILS = 1000
KILLS = 20
MIN_GAP, MAX_GAP = 0.05, 2.0
STARTED = b"kcc-mail running"


def started_lines(log: Path) -> int:
    """How many service processes have said they are running (a line of their own in the shared log)."""
    return log.read_bytes().count(STARTED) if log.exists() else 0


@pytest.mark.slow
def test_killed_at_random_moments_every_mail_is_stored_exactly_once_and_marked(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    seed = int(os.environ.get("KCC_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nkill test seed {seed} (replay with KCC_KILL_SEED={seed})")
    rng = random.Random(seed)
    mails = hostile_mails(MAILS, big_every=50)
    appended = Counter(sha256(m) for m in mails)
    assert len(appended) == MAILS, "the test mails are distinct"
    append_all(imap_user, mails)
    assert {m.sha256 for m in server_mails(imap_user)} == set(appended), "the server holds the bytes as APPENDed"

    mailbox = imap_user.name
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=mailbox)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"
    killed_mid_intake = 0
    try:
        for kill in range(KILLS):
            before = started_lines(log)
            service = start_kcc_mail("--log-level", "INFO", "run", cwd=tmp_path, log=log)
            try:
                # The moment is random after the service says it runs: killing a Python still importing tests
                # nothing. Up to 2 s covers the whole round of a batch: fetch, parse, store, mark, progress.
                wait_until(lambda: started_lines(log) > before or service.poll() is not None, 60,  # noqa: B023
                           "the service has started")
                assert service.poll() is None, f"the service stopped by itself:\n{log.read_text()[-3000:]}"
                stored_before = stored_count(engine, mailbox)
                time.sleep(rng.uniform(MIN_GAP, MAX_GAP))
                service.send_signal(signal.SIGKILL)
                service.wait(timeout=30)
                stored_after = stored_count(engine, mailbox)
                killed_mid_intake += stored_before < stored_after < MAILS
                # The parse workers and their forkserver leave with it: nothing keeps running unseen.
                wait_until(lambda: not session_processes(service.pid), 30,  # noqa: B023
                           f"the processes of killed service {kill + 1} are gone")
            finally:
                end_session(service)
        print(f"{KILLS} kills, {killed_mid_intake} of them while mails were being stored; "
              f"{stored_count(engine, mailbox)} of {MAILS} stored before the last start")

        before = started_lines(log)
        service = start_kcc_mail("--log-level", "INFO", "run", cwd=tmp_path, log=log)
        try:
            wait_until(lambda: started_lines(log) > before and stored_count(engine, mailbox) >= MAILS
                       and unmarked_count(imap_user) == 0, 300, "every mail is stored and marked processed")
            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=30) == 0
        finally:
            end_session(service)
    except BaseException:
        print(log.read_text(errors="replace")[-5000:])
        raise

    stored = stored_digests(engine, mailbox)
    assert len(stored) == MAILS, "stored exactly once: as many rows as mails appended"
    assert Counter(stored) == appended, "the same sha256 set as what was APPENDed, each once"
    on_server = server_mails(imap_user)
    assert len(on_server) == MAILS and all("$KccOpgeslagen" in m.flags for m in on_server)
    assert all("\\Seen" not in m.flags for m in on_server), "BODY.PEEK[]: the employee's unread mail stays unread"
    assert half_written(engine) == []
    verify = kcc_mail("verify", cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.startswith("ok"), verify.stdout + verify.stderr
    again = kcc_mail("poll", "--once", cwd=tmp_path)
    assert again.stdout.strip() == "fetched=0 stored=0 quarantined=0 duplicates=0", again.stderr
    assert "Traceback" not in log.read_text(errors="replace")
