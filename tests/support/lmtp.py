"""An LMTP client for tests: smtplib.LMTP, reading the one reply per accepted recipient that LMTP gives after DATA.

smtplib.LMTP.sendmail reads a single reply after DATA, as for SMTP; an MTA reads one per recipient, and so does
`deliver` here, so a test sees exactly what Postfix or Dovecot's LMTP client would.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What the server answered: RCPT refusals by address, and the replies after DATA, one per accepted recipient."""

    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    replies: list[tuple[int, str]] = field(default_factory=list)

    @property
    def codes(self) -> list[int]:
        return [code for code, _ in self.replies]


def connect(host: str, port: int = 0, timeout: float = 30) -> smtplib.LMTP:
    """A greeted LMTP session (LHLO done); `host` may be the path of a Unix socket."""
    client = smtplib.LMTP(host, port, timeout=timeout)
    client.ehlo_or_helo_if_needed()
    return client


def deliver(client: smtplib.LMTP, sender: str, recipients: Sequence[str], raw: bytes) -> Outcome:
    """One LMTP transaction on an open session; the session stays usable for the next one."""
    outcome = Outcome()
    code, message = client.mail(sender)
    if code != 250:
        raise AssertionError(f"MAIL FROM answered {code} {message!r}")
    accepted = []
    for recipient in recipients:
        code, message = client.rcpt(recipient)
        if code == 250:
            accepted.append(recipient)
        else:
            outcome.refused[recipient] = (code, message.decode())
    if not accepted:
        client.rset()
        return outcome
    code, message = client.data(raw)
    outcome.replies.append((code, message.decode()))
    for _ in accepted[1:]:
        code, message = client.getreply()
        outcome.replies.append((code, message.decode()))
    return outcome


def send(host: str, port: int, sender: str, recipients: Sequence[str], raw: bytes) -> Outcome:
    """One mail over a connection of its own."""
    client = connect(host, port)
    try:
        return deliver(client, sender, recipients, raw)
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            client.close()
