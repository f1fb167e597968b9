"""What the fault tests share: many distinct real mails, the server's and the database's view of them, waiting.

Every check here is one a user could make by hand: count and hash what is stored, look at the flags on the IMAP
server, run `kcc-mail verify`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from support.dovecot import ImapUser

from store.mail import Blob, InboundAttachment, InboundMail
from store.outbox import OutboxMessage

KEYWORD = "$KccOpgeslagen"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def append_all(user: ImapUser, mails: list[bytes], folder: str = "INBOX", batch: int = 100) -> None:
    """MULTIAPPEND in batches: one command per batch, so a waiting IDLE client wakes once per batch."""
    client = user.client()
    try:
        for start in range(0, len(mails), batch):
            client.multiappend(folder, mails[start:start + batch])
    finally:
        client.logout()


@dataclass(frozen=True)
class ServerMail:
    uid: int
    sha256: str
    flags: frozenset[str]


def server_mails(user: ImapUser, folder: str = "INBOX") -> list[ServerMail]:
    """Every mail in the folder with the sha256 of its bytes and its flags, read without setting \\Seen."""
    client = user.client()
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        found = []
        for start in range(0, len(uids), 200):
            for uid, data in client.fetch(uids[start:start + 200], ["BODY.PEEK[]", "FLAGS"]).items():
                flags = frozenset(f.decode() for f in data[b"FLAGS"])
                found.append(ServerMail(uid, sha256(data[b"BODY[]"]), flags))
        return found
    finally:
        client.logout()


def unmarked_count(user: ImapUser, folder: str = "INBOX") -> int:
    """How many mails in the folder do not carry kcc-mail's processed keyword yet."""
    client = user.client()
    try:
        client.select_folder(folder, readonly=True)
        return len(client.search(["NOT", "KEYWORD", KEYWORD]))
    finally:
        client.logout()


def stored_digests(engine: Engine, mailbox: str) -> list[str]:
    """The raw sha256 of every stored mail of `mailbox`, one entry per row (so a duplicate would show twice)."""
    with engine.connect() as connection:
        return list(connection.scalars(select(InboundMail.raw_sha256).where(InboundMail.mailbox == mailbox)))


def stored_count(engine: Engine, mailbox: str) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(InboundMail).where(InboundMail.mailbox == mailbox)
        return int(connection.scalar(query) or 0)


def half_written(engine: Engine) -> list[str]:
    """Traces of a transaction that was cut short: a mail whose bytes are missing or wrong, a blob nobody uses."""
    problems = []
    with engine.connect() as connection:
        for mail_id, digest, size in connection.execute(
            select(InboundMail.id, InboundMail.raw_sha256, InboundMail.size)
        ):
            data = connection.scalar(select(Blob.data).where(Blob.sha256 == digest))
            if data is None or sha256(data) != digest or len(data) != size:
                problems.append(f"mail {mail_id}: its raw bytes are missing or do not match sha256 {digest}")
        used = (
            set(connection.scalars(select(InboundMail.raw_sha256)))
            | set(connection.scalars(select(InboundAttachment.blob_sha256)))
            | set(connection.scalars(select(OutboxMessage.blob_sha256)))
        )
        for digest in connection.scalars(select(Blob.sha256)):
            if digest not in used:
                problems.append(f"blob {digest} belongs to no mail, attachment or outbox message")
    return problems


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(interval)


def question(number: int, *, body_bytes: int = 2_000, tag: str = "netfault") -> bytes:
    """A customer's question with a recognisable sender, subject and text (to look for in the logs), about
    `body_bytes` long and unique by `number` and `tag`."""
    sentence = f"Goedemorgen, wanneer wordt bij ons het oud papier opgehaald? Vraag {number} van Jantje. "
    body = (sentence * (body_bytes // len(sentence) + 1))[:body_bytes]
    folded = "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    return (
        f"From: Jantje Klant <jantje.klant@example.nl>\r\nReply-To: jantje.prive@example.nl\r\n"
        f"To: info@gemeente.example\r\nSubject: Afvalkalender vraag {number}\r\n"
        f"Message-ID: <{tag}-{number}@example.nl>\r\nDate: Mon, 23 Nov 2026 09:15:00 +0100\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{folded}\r\n"
    ).encode()


CONTENTS = ("jantje.klant@example.nl", "jantje.prive@example.nl", "Afvalkalender vraag", "oud papier", "Jantje")
"""What `question` puts in a mail that must never reach a log line at INFO or above."""


def contents_in(log: str, words: tuple[str, ...] = CONTENTS) -> list[str]:
    """The log lines that show mail contents: a sender, a subject or words of the text."""
    return [line for line in log.splitlines() if any(word in line for word in words)]
