"""Huge input: a 40 MB mail, a mail of 5,000 parts and a 1 MB header, then an ordinary mail, through `kcc-mail run`.

Each ends stored (parsed or in quarantine, never lost), the ordinary mail after them too (the loop goes on), and the
service's peak memory stays bounded. The peak (VmHWM of the service process) is printed; only a generous bound is
asserted, so this stays a real check without depending on the machine's speed.
"""

from __future__ import annotations

import base64
import random
import signal
from pathlib import Path

import pytest
from faultkit import KEYWORD, append_all, server_mails, sha256, stored_count, wait_until
from kcc_cli import end_session, kcc_mail, peak_rss_mb, start_kcc_mail, write_config
from sqlalchemy import Engine, select
from support.dovecot import ImapUser

from store.mail import InboundAttachment, InboundMail

MEMORY_BOUND_MB = 1024
HEAD = (
    "From: Karel van der Wittewiek <karel@example.nl>\r\nTo: info@gemeente.example\r\n"
    "Date: Mon, 23 Nov 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\n"
)


def forty_megabytes(rng: random.Random) -> bytes:
    """A scanned-document mail: one base64 attachment of 29 MB, 40 MB on the wire."""
    encoded = base64.encodebytes(rng.randbytes(29 * 1024 * 1024)).replace(b"\n", b"\r\n")
    return (
        HEAD + "Subject: Bouwtekeningen\r\nMessage-ID: <groot@example.nl>\r\n"
        'Content-Type: multipart/mixed; boundary="grens"\r\n\r\n'
        "--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie de bijlage.\r\n"
        '--grens\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="tekening.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + encoded + b"--grens--\r\n"


def five_thousand_parts() -> bytes:
    parts = "".join(
        f'--grens\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; '
        f'filename="deel-{i}.txt"\r\n\r\nDeel {i}.\r\n'
        for i in range(5000)
    )
    return (
        HEAD + "Subject: Vijfduizend delen\r\nMessage-ID: <delen@example.nl>\r\n"
        'Content-Type: multipart/mixed; boundary="grens"\r\n\r\n' + parts + "--grens--\r\n"
    ).encode()


def one_megabyte_header() -> bytes:
    """One header field of 1 MB, folded into lines of 78 characters as a mail program would."""
    words = " ".join(f"woord{i:06d}" for i in range(1024 * 1024 // 12))
    folded = "\r\n ".join(words[i:i + 76] for i in range(0, len(words), 76))
    return (
        HEAD + "Subject: Lange kop\r\nMessage-ID: <kop@example.nl>\r\n"
        f"X-Lange-Kop: {folded}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nEen gewone tekst.\r\n"
    ).encode()


def ordinary() -> bytes:
    return (
        HEAD + "Subject: Gewone vraag\r\nMessage-ID: <gewoon@example.nl>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nWanneer wordt het papier opgehaald?\r\n"
    ).encode()


@pytest.mark.slow
def test_huge_mails_are_stored_in_bounded_memory_and_the_loop_goes_on(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser
) -> None:
    rng = random.Random(7)
    mails = {"40 MB": forty_megabytes(rng), "5000 parts": five_thousand_parts(),
             "1 MB header": one_megabyte_header(), "ordinary": ordinary()}
    mailbox = imap_user.name
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=mailbox, timeout=60.0)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    log = tmp_path / "service.log"
    service = start_kcc_mail("--log-level", "INFO", "run", cwd=tmp_path, log=log)
    try:
        for position, (name, raw) in enumerate(mails.items(), start=1):  # one at a time, each dealt with first
            append_all(imap_user, [raw])
            wait_until(lambda: stored_count(engine, mailbox) == position or service.poll() is not None,  # noqa: B023
                       300, f"the {name} mail is stored")
            assert service.poll() is None, f"the service died on the {name} mail:\n{log.read_text()[-3000:]}"
        peak = peak_rss_mb(service.pid)
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        end_session(service)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text

    with engine.connect() as connection:
        rows = {digest: (state, reason) for digest, state, reason in connection.execute(
            select(InboundMail.raw_sha256, InboundMail.state, InboundMail.reason).where(InboundMail.mailbox == mailbox)
        )}
        attachments = connection.scalar(
            select(InboundAttachment.id).join(InboundMail).where(InboundMail.mailbox == mailbox).limit(1)
        )
    print(f"\npeak RSS of `kcc-mail run`: {peak:.0f} MB (bound {MEMORY_BOUND_MB} MB)")
    for name, raw in mails.items():
        print(f"  {name:12s} {len(raw) / 1e6:6.1f} MB → {rows.get(sha256(raw))}")
    assert set(rows) == {sha256(raw) for raw in mails.values()}, "every mail stored, byte for byte"
    assert rows[sha256(mails["ordinary"])] == ("te_beoordelen", None)
    assert all(state in ("te_beoordelen", "quarantaine") for state, _ in rows.values())
    assert attachments is not None
    assert all(KEYWORD in m.flags for m in server_mails(imap_user))
    assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"

