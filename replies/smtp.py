"""SMTP connections and one SMTP transaction, with the server's answer classified per recipient.

Connections: TLS, STARTTLS or plain-on-loopback, with password or XOAUTH2 authentication; certificates are always
verified. A transaction's outcome is not one yes/no: each recipient is accepted, temporarily refused (4xx, or the
connection lost before the end of DATA was sent: try again later), permanently refused (5xx: trying again will not
help), or unknown: the end of DATA was sent and the server's answer never came (a timeout, a cut connection). The
server may then have the message, so it must not be sent again without an operator (RFC 5321 §6.1 warns of
exactly these duplicates); the wait for that answer is `data_timeout`, 10 minutes by default (RFC 5321 §4.5.3.2.6).
"""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from store.types import utcnow

Outcome = Literal["accepted", "temporary", "permanent", "unknown"]
LOST = -1
"""The code we record when the connection broke or timed out before the end of DATA was sent: nothing arrived."""
NO_ANSWER = -2
"""The code we record when the end of DATA was sent but no answer came: the server may or may not have it."""
DATA_TIMEOUT = 600.0
"""RFC 5321 §4.5.3.2.6: a client should wait 10 minutes for the answer to the end of DATA."""


Security = Literal["tls", "starttls", "none"]
AuthMethod = Literal["password", "xoauth2"]


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the SMTP server, as the application configures it.

    `secret` (a password, or an OAuth2 access token for `auth = "xoauth2"`) is called at every connect that logs
    in, so a rotated token is picked up; no `username` means no AUTH.
    """

    host: str
    port: int = 587
    security: Security = "starttls"
    auth: AuthMethod = "password"
    username: str = ""
    secret: Callable[[], str] | None = None
    timeout: float = 60.0
    data_timeout: float = DATA_TIMEOUT


class SmtpConnectError(Exception):
    """The SMTP server could not be reached or refused our login; the message says which and what to check."""


class StaleConnection(Exception):
    """A reused connection turned out dead before MAIL FROM was accepted: nothing was sent, so resending is safe."""


def connect(settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None) -> smtplib.SMTP:
    """Open an authenticated connection; certificates are always verified."""
    context = ssl_context or ssl.create_default_context()
    where = f"SMTP server {settings.host}:{settings.port}"
    try:
        client: smtplib.SMTP
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        client.ehlo()
        if settings.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.username:
            _login(client, settings)
        return client
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpConnectError(
            f"{where} refused the login of {settings.username} ({exc.smtp_code}); check the password or token"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpConnectError(f"{where} cannot be reached: {exc}; check host, port and security") from None


def _login(client: smtplib.SMTP, settings: SmtpSettings) -> None:
    secret = settings.secret() if settings.secret is not None else ""
    if settings.auth == "xoauth2":
        blob = base64.b64encode(f"user={settings.username}\x01auth=Bearer {secret}\x01\x01".encode()).decode()
        code, reply = client.docmd("AUTH", f"XOAUTH2 {blob}")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    client.login(settings.username, secret)


# --- outcomes ---------------------------------------------------------------------------------------------------


def classify(code: int) -> Outcome:
    """2xx accepted, 5xx permanent, no answer to the end of DATA unknown; 4xx, a connection lost earlier and
    anything unexpected are temporary (try again later)."""
    if code == NO_ANSWER:
        return "unknown"
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
        return self.reply if self.code in (LOST, NO_ANSWER) else f"{self.code} {self.reply}".rstrip()


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
        names = {LOST: "lost", NO_ANSWER: "no-answer"}
        return ",".join(sorted({names.get(r.code, str(r.code)) for r in self.results}))

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
    *, clock: Callable[[], datetime] = utcnow, data_timeout: float = DATA_TIMEOUT,
) -> Delivery:
    """MAIL, RCPT per recipient and DATA on an open connection, with every answer kept per recipient.

    Raises StaleConnection only when the connection was dead before the server accepted MAIL FROM (nothing was
    sent). A connection lost later, before the end of DATA was sent, is a temporary outcome; lost (or silent for
    `data_timeout` seconds) after it, the outcome is unknown. After a refusal the connection is reset, so the next
    message can use it.
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
    transaction = _Transaction(client, recipients, clock, data_timeout)
    try:
        return transaction.run(rcpt_options, data)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        _close_quietly(client)
        return transaction.lost(exc)


class _Transaction:
    """RCPT and DATA of one message, remembering whether the end of DATA has left this machine."""

    def __init__(
        self, client: smtplib.SMTP, recipients: Sequence[str], clock: Callable[[], datetime], data_timeout: float
    ) -> None:
        self.client = client
        self.recipients = recipients
        self.clock = clock
        self.data_timeout = data_timeout
        self.answers: dict[str, tuple[int, str]] = {}
        self.end_of_data_sent = False

    def run(self, options: list[str], data: bytes) -> Delivery:
        client, answers = self.client, self.answers
        for recipient in self.recipients:
            code, reply = client.rcpt(recipient, options)
            answers[recipient] = (code, _text(reply))
            if code == 421:  # closing: the remaining recipients were never asked
                _close_quietly(client)
                for rest in self.recipients:
                    answers.setdefault(rest, (code, _text(reply)))
                return _delivery(self.recipients, answers, None)
        if not any(code in (250, 251) for code, _ in answers.values()):
            _reset(client)
            return _delivery(self.recipients, answers, None)
        code, final = self._data(data)
        accepted_at = self.clock() if code == 250 else None
        if code == 421:
            _close_quietly(client)
        elif code != 250:
            _reset(client)
        self._answer_accepted(code, final)
        return _delivery(self.recipients, answers, accepted_at)

    def _data(self, data: bytes) -> tuple[int, str]:
        """DATA, the dot-stuffed message and the end of DATA, then the server's answer within `data_timeout`.

        smtplib's `data()` cannot tell a connection lost while the message was being sent (it did not arrive) from
        one lost while waiting for the answer (it may have arrived), so the steps are taken one by one here.
        """
        client = self.client
        client.putcmd("data")
        code, reply = client.getreply()
        if code != 354:
            return code, _text(reply)
        client.send(_dot_stuffed(data))
        self.end_of_data_sent = True
        if client.sock is not None:
            client.sock.settimeout(self.data_timeout)
        code, reply = client.getreply()
        if client.sock is not None:
            client.sock.settimeout(client.timeout)
        return code, _text(reply)

    def _answer_accepted(self, code: int, text: str) -> None:
        """The answer to DATA is every accepted recipient's answer; refused recipients keep their own."""
        for recipient, (rcpt_code, _) in self.answers.items():
            if rcpt_code in (250, 251):
                self.answers[recipient] = (code, text)

    def lost(self, exc: BaseException) -> Delivery:
        """The connection broke: before the end of DATA nothing arrived, after it the outcome is unknown."""
        if not self.end_of_data_sent:
            reason = (f"connection lost during the SMTP transaction, before the end of the message was sent "
                      f"({_describe(exc)}); the server does not have it")
            return Delivery.same_for_all(self.recipients, LOST, reason)
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)  # smtplib wraps it
        waited = f"no answer within {self.data_timeout:g} s" if timed_out else "no answer"
        self._answer_accepted(NO_ANSWER, (
            f"the whole message was sent, but the server gave {waited} to its end ({_describe(exc)}); "
            "it may or may not have the message"
        ))
        for recipient in self.recipients:
            self.answers.setdefault(recipient, (LOST, f"connection lost before RCPT was answered ({_describe(exc)})"))
        return _delivery(self.recipients, self.answers, None)


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 §4.5.2): a leading dot doubled, CRLF at the end, then ".CRLF"."""
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


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
