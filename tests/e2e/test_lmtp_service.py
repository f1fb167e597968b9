"""`kcc-mail run` with an LMTP mailbox, as an MTA meets it: the start line, status, SIGTERM, kill -9 and retries.

The test plays the MTA with smtplib.LMTP and behaves as Postfix does: a mail whose 250 it did not read is kept and
delivered again later, with the same bytes (CRLF line ends, as an MTA sends them).
"""

from __future__ import annotations

import random
import re
import signal
import smtplib
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from faultkit import half_written, sha256, stored_count, stored_digests, wait_until
from kcc_cli import end_session, kcc_mail, start_kcc_mail, write_config
from sqlalchemy import Engine, select
from support import lmtp
from support.dovecot import free_port
from support.hostile import hostile_mails

from store.mail import Blob

INFO = "info@gemeente.example"
STARTED = b"kcc-mail running"


def configure(directory: Path, database_url: str, port: int, name: str) -> Path:
    """A Maildir mailbox (the laptop default) and an LMTP mailbox `name` on `port` (write_config leaves the web
    screen off). Each test names its own mailbox: the tests of this module share one database."""
    extra = (f'[[mailbox]]\nname = "{name}"\nkind = "lmtp"\nlisten = "127.0.0.1:{port}"\n'
             f'recipients = ["{INFO}"]\n')
    return write_config(directory, database_url, extra=extra)


def start(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    before = log.read_bytes().count(STARTED) if log.exists() else 0
    service = start_kcc_mail("--log-level", "INFO", "run", cwd=directory, log=log)
    wait_until(lambda: log.read_bytes().count(STARTED) > before or service.poll() is not None, 60,
               "the service has started")
    assert service.poll() is None, f"the service stopped by itself:\n{log.read_text()[-3000:]}"
    return service


def as_an_mta_sends_it(raw: bytes) -> bytes:
    """CRLF line ends and a final CRLF, as Postfix's LMTP client sends every mail."""
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def test_run_listens_for_lmtp_says_where_reports_it_in_status_and_stops_on_sigterm(
    tmp_path: Path, database_url: str, engine: Engine,
) -> None:
    port = free_port()
    configure(tmp_path, database_url, port, "balie")
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"
    service = start(tmp_path, log)
    try:
        said = log.read_text()
        assert (f"intake: mailbox balie over LMTP on 127.0.0.1:{port}, for 1 recipient; 250 only once a mail "
                "is stored") in said
        assert "intake: mailbox info from Maildir" in said
        raw = as_an_mta_sends_it(b"From: karel@example.nl\nTo: info@gemeente.example\nSubject: Via LMTP\n\nHallo\n")
        assert lmtp.send("127.0.0.1", port, "karel@example.nl", [INFO], raw).codes == [250]
        assert stored_digests(engine, "balie") == [sha256(raw)]
        status = kcc_mail("status", cwd=tmp_path)
        assert f"mailbox balie: LMTP on 127.0.0.1:{port}, last mail stored" in status.stdout, status.stdout
        assert "no running process listens for LMTP to mailbox balie" not in status.stdout
        listed = kcc_mail("queue", "list", "--mailbox", "balie", cwd=tmp_path)
        assert "Via LMTP" in listed.stdout
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        end_session(service)
    with pytest.raises(OSError):  # nothing listens once it stopped: the MTA keeps the mail and retries
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.slow
def test_killed_at_random_moments_each_mail_the_mta_retries_is_stored_exactly_once(
    tmp_path: Path, database_url: str, engine: Engine,
) -> None:
    """kill -9 while mails arrive, among them once right after a commit and before the MTA read its 250."""
    seed = random.SystemRandom().randrange(2**32)
    print(f"\nLMTP kill test seed {seed}")
    rng = random.Random(seed)
    mails = [as_an_mta_sends_it(m) for m in hostile_mails(120)]
    port = free_port()
    configure(tmp_path, database_url, port, "gekild")
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"
    acknowledged: set[int] = set()
    try:
        # First: the service dies after the commit, before the MTA read the 250 (the reply is never read).
        service = start(tmp_path, log)
        client = lmtp.connect("127.0.0.1", port)
        client.mail("karel@example.nl")
        client.rcpt(INFO)
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(mails[0].replace(b"\r\n.", b"\r\n..") + b".\r\n")
        wait_until(lambda: stored_count(engine, "gekild") == 1, 30, "the first mail is committed")
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        client.close()
        end_session(service)

        # Then: rounds of delivery, each cut by kill -9 at a random moment; the MTA retries what it did not hear.
        for _ in range(4):
            service = start(tmp_path, log)
            pending = [i for i in range(len(mails)) if i not in acknowledged]
            killer = rng.uniform(0.05, 1.5)
            _deliver_until_killed(port, mails, pending, acknowledged, service, killer)
            end_session(service)
        service = start(tmp_path, log)
        _deliver_until_killed(port, mails, [i for i in range(len(mails)) if i not in acknowledged], acknowledged,
                              service, None)
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        end_session(service)
    except BaseException:
        print(log.read_text(errors="replace")[-5000:])
        raise
    assert acknowledged == set(range(len(mails))), "in the end the MTA heard 250 for every mail"
    stored = stored_digests(engine, "gekild")
    sent = Counter(sha256(m) for m in mails)
    assert Counter(stored) == sent, (
        f"every mail once, byte for byte (seed {seed}): not stored "
        f"{[i for i, m in enumerate(mails) if sha256(m) not in stored]}, stored but not sent "
        f"{[(len(d), d[:120]) for d in blobs(engine, [s for s in stored if s not in sent])]}"
    )
    assert half_written(engine) == []


def blobs(engine: Engine, digests: list[str]) -> list[bytes]:
    """The stored bytes of `digests`, to show what went wrong when a stored mail is not one that was sent."""
    with engine.connect() as connection:
        return [connection.execute(select(Blob.data).where(Blob.sha256 == d)).scalar_one() for d in digests]


def _deliver_until_killed(
    port: int, mails: list[bytes], pending: list[int], acknowledged: set[int], service: subprocess.Popen[bytes],
    kill_after: float | None,
) -> None:
    """Deliver `pending` one by one on one connection; with `kill_after`, the service gets SIGKILL then."""
    if kill_after is not None:
        timer = threading.Timer(kill_after, service.kill)
        timer.start()
    try:
        client = lmtp.connect("127.0.0.1", port)
        for index in pending:
            outcome = lmtp.deliver(client, "karel@example.nl", [INFO], mails[index])
            if outcome.codes == [250]:
                acknowledged.add(index)
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass  # the service died: what was not acknowledged is delivered again in the next round
    finally:
        if kill_after is not None:
            timer.join()
            service.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.corpus
def test_1000_corpus_mails_over_lmtp_are_all_stored_once(
    tmp_path: Path, database_url: str, engine: Engine, corpus: Path,
) -> None:
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and "_meta" not in p.parts and p.suffix != ".md")
    sources = [p.read_bytes() for p in files if "reply-bodies" not in p.parts]
    mails = [as_an_mta_sends_it(b"X-Test-Seq: %d\r\n" % i + sources[i % len(sources)]) for i in range(1000)]
    port = free_port()
    configure(tmp_path, database_url, port, "corpus")
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"
    service = start(tmp_path, log)
    try:
        client = lmtp.connect("127.0.0.1", port)
        codes = Counter(code for mail in mails for code in lmtp.deliver(client, "mta@gemeente.example", [INFO],
                                                                       mail).codes)
        again = lmtp.deliver(client, "mta@gemeente.example", [INFO], mails[0])  # a retry after a lost 250
        client.quit()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        end_session(service)
    assert codes == Counter({250: 1000}) and again.codes == [250]
    assert Counter(stored_digests(engine, "corpus")) == Counter(sha256(m) for m in mails)
    assert "Traceback" not in log.read_text(errors="replace")
