"""SMTP connections and one SMTP transaction, with the server's answer classified per recipient.

Connections: TLS, STARTTLS or plain-on-loopback, with password or XOAUTH2 authentication; certificates are always
verified. A transaction's outcome is not one yes/no: each recipient is accepted, temporarily refused (4xx, lost
connection, timeout: try again later) or permanently refused (5xx: trying again will not help).
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kcc.config import SmtpConfig, resolve_secret
from store.types import utcnow

Outcome = Literal["accepted", "temporary", "permanent"]
LOST = -1
"""The code we record when there was no answer at all: the connection broke or timed out."""


class SmtpConnectError(Exception):
    """The SMTP server could not be reached or refused our login; the message says which and what to check."""


class StaleConnection(Exception):
    """A reused connection turned out dead before MAIL FROM was accepted: nothing was sent, so resending is safe."""


def connect(
    config: SmtpConfig, *, ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None
) -> smtplib.SMTP:
    """Open an authenticated connection; certificates are always verified."""
    context = ssl_context or ssl.create_default_context()
    where = f"SMTP server {config.host}:{config.port}"
    try:
        client: smtplib.SMTP
        if config.security == "tls":
            client = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        client.ehlo()
        if config.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if config.username:
            _login(client, config, environ)
        return client
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpConnectError(
            f"{where} refused the login of {config.username} ({exc.smtp_code}); check the password or token"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpConnectError(f"{where} cannot be reached: {exc}; check host, port and security") from None


def _login(client: smtplib.SMTP, config: SmtpConfig, environ: Mapping[str, str] | None) -> None:
    if config.auth == "xoauth2":
        token = resolve_secret(config.token_env, config.token_file, "[smtp] token", environ)
        blob = base64.b64encode(f"user={config.username}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        code, reply = client.docmd("AUTH", f"XOAUTH2 {blob}")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    password = resolve_secret(config.password_env, config.password_file, "[smtp] password", environ)
    client.login(config.username, password)


# --- outcomes ---------------------------------------------------------------------------------------------------


def classify(code: int) -> Outcome:
    """2xx accepted, 5xx permanent; 4xx, no answer and anything unexpected are temporary (try again later)."""
    if 200 <= code < 300:
        return "accepted"
    if 500 <= code < 600:
        return "permanent"
    return "temporary"


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What the server said about one recipient: the code, its text, and what that means for us."""

    recipient: str
    code: int
    reply: str

    @property
    def outcome(self) -> Outcome:
        return classify(self.code)

    def answer(self) -> str:
        """The code and text as the server gave them; only the text when there was no answer."""
        return self.reply if self.code == LOST else f"{self.code} {self.reply}".rstrip()


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of handing one message to a transport, per recipient; `accepted_at` when any was accepted."""

    results: tuple[RecipientOutcome, ...]
    accepted_at: datetime | None = None

    @classmethod
    def same_for_all(cls, recipients: Sequence[str], code: int, reply: str, accepted_at: datetime | None = None
                     ) -> Delivery:
        return cls(tuple(RecipientOutcome(r, code, reply) for r in recipients), accepted_at)

    def having(self, outcome: Outcome) -> tuple[RecipientOutcome, ...]:
        return tuple(r for r in self.results if r.outcome == outcome)

    @property
    def accepted(self) -> tuple[RecipientOutcome, ...]:
        return self.having("accepted")

    @property
    def refused(self) -> tuple[RecipientOutcome, ...]:
        """Every recipient that did not get the message, temporarily or permanently."""
        return tuple(r for r in self.results if r.outcome != "accepted")

    @property
    def codes(self) -> str:
        """The reply codes only (e.g. "250,550"): what a log line may carry, since replies can name addresses."""
        return ",".join(sorted({str(r.code) if r.code != LOST else "lost" for r in self.results}))

    def summary(self) -> str:
        """The server's answer as one text: the common reply when all recipients got the same, else per recipient."""
        answers = {r.answer() for r in self.results}
        if not answers:
            return "no recipients"
        if len(answers) == 1:
            return answers.pop()
        return "; ".join(f"{r.recipient}: {r.answer()}" for r in self.results)


# --- one SMTP transaction ---------------------------------------------------------------------------------------


def send_message(
    client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], data: bytes,
    *, clock: Callable[[], datetime] = utcnow,
) -> Delivery:
    """MAIL, RCPT per recipient and DATA on an open connection, with every answer kept per recipient.

    Raises StaleConnection only when the connection was dead before the server accepted MAIL FROM (nothing was
    sent); any later loss of the connection is a temporary outcome, because the server may have received the
    message. After a refusal the connection is reset, so the next message can use it.
    """
    try:
        mail_options, rcpt_options, unsendable = _options(client, envelope_from, recipients, data)
        if unsendable:
            return Delivery.same_for_all(recipients, 553, unsendable)
        code, reply = client.mail(envelope_from, mail_options)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise StaleConnection(f"connection lost before MAIL FROM: {_describe(exc)}") from None
    if code == 421:  # the server is closing this (idle) connection
        _close_quietly(client)
        raise StaleConnection(f"server closed the connection before MAIL FROM: {code} {_text(reply)}")
    if code != 250:
        _reset(client)
        return Delivery.same_for_all(recipients, code, _text(reply))
    try:
        return _rcpt_and_data(client, recipients, rcpt_options, data, clock)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        _close_quietly(client)
        return Delivery.same_for_all(
            recipients, LOST, f"connection lost during the SMTP transaction ({_describe(exc)}); "
            "the server may or may not have the message",
        )


def _rcpt_and_data(
    client: smtplib.SMTP, recipients: Sequence[str], options: list[str], data: bytes, clock: Callable[[], datetime]
) -> Delivery:
    answers: dict[str, tuple[int, str]] = {}
    for recipient in recipients:
        code, reply = client.rcpt(recipient, options)
        answers[recipient] = (code, _text(reply))
        if code == 421:  # closing: the remaining recipients were never asked
            _close_quietly(client)
            for rest in recipients:
                answers.setdefault(rest, (code, _text(reply)))
            return _delivery(recipients, answers, None)
    if not any(code in (250, 251) for code, _ in answers.values()):
        _reset(client)
        return _delivery(recipients, answers, None)
    try:
        code, data_reply = client.data(data)
        final = _text(data_reply)
    except smtplib.SMTPDataError as exc:  # DATA itself refused, before the message was sent
        code, final = exc.smtp_code, _text(exc.smtp_error)
    accepted_at = clock() if code == 250 else None
    if code == 421:
        _close_quietly(client)
    elif code != 250:
        _reset(client)
    for recipient, (rcpt_code, _) in answers.items():
        if rcpt_code in (250, 251):
            answers[recipient] = (code, final)
    return _delivery(recipients, answers, accepted_at)


def _delivery(recipients: Sequence[str], answers: dict[str, tuple[int, str]], accepted_at: datetime | None
              ) -> Delivery:
    return Delivery(tuple(RecipientOutcome(r, *answers[r]) for r in recipients), accepted_at)


def _options(
    client: smtplib.SMTP, envelope_from: str, recipients: Sequence[str], data: bytes
) -> tuple[list[str], list[str], str]:
    """ESMTP options for this message, or why the server cannot take it (a non-ASCII address without SMTPUTF8)."""
    client.ehlo_or_helo_if_needed()
    mail_options: list[str] = []
    if client.does_esmtp and client.has_extn("size"):
        mail_options.append(f"SIZE={len(data)}")
    if not data.isascii() and client.has_extn("8bitmime"):
        mail_options.append("BODY=8BITMIME")
    if not all(a.isascii() for a in (envelope_from, *recipients)):
        if not client.has_extn("smtputf8"):
            return [], [], "an address has non-ASCII characters and the server does not offer SMTPUTF8"
        mail_options.append("SMTPUTF8")
    return mail_options, [], ""


def _reset(client: smtplib.SMTP) -> None:
    """RSET after a refusal so the connection can carry the next message; a dead connection is closed instead."""
    try:
        client.rset()
    except (smtplib.SMTPException, OSError):
        _close_quietly(client)


def _close_quietly(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()


def is_open(client: smtplib.SMTP) -> bool:
    return client.sock is not None


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
