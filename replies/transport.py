"""Where outgoing messages go: an SMTP server, or a folder of .eml files (the laptop default).

The relay talks to both through the same three calls, so the directory transport exercises exactly the relay
that production uses. A transport holds no business rules: it hands bytes over and reports what happened.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Protocol

from replies.smtp import (
    LOST,
    Delivery,
    SmtpConnectError,
    SmtpSettings,
    StaleConnection,
    connect,
    is_open,
    send_message,
)
from store.files import private_folder, write_private
from store.types import utcnow

log = logging.getLogger(__name__)

__all__ = ["Delivery", "DirectoryTransport", "SmtpTransport", "Transport", "TransportError"]


class TransportError(Exception):
    """The transport cannot be used at all right now (server unreachable, folder not writable); nothing was sent."""


class Transport(Protocol):
    """Hands messages over, one batch between `open()` and `close()`."""

    def open(self) -> None:
        """Get ready for a batch; raises TransportError when nothing can be sent now."""

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> Delivery:
        """Hand over `data` exactly as given; never raises for a refused or lost message, it reports it."""

    def close(self) -> None:
        """End the batch; safe to call when not open."""


class SmtpTransport:
    """One SMTP connection reused for a batch, reconnected once when the server dropped it between messages."""

    def __init__(
        self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._clock = clock
        self._client: smtplib.SMTP | None = None
        self._unreachable = ""

    def open(self) -> None:
        self._unreachable = ""
        if self._client is None:
            try:
                self._client = self._connect()
            except SmtpConnectError as exc:
                raise TransportError(str(exc)) from None

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> Delivery:
        for attempt in (1, 2):
            if self._unreachable:  # the server went away during this batch: do not dial it again per message
                return Delivery.same_for_all(recipients, LOST, f"not sent: {self._unreachable}")
            client = self._client
            if client is None or not is_open(client):
                try:
                    client = self._client = self._connect()
                except SmtpConnectError as exc:
                    self._client, self._unreachable = None, str(exc)
                    continue
            try:
                delivery = send_message(client, envelope_from, recipients, data, clock=self._clock,
                                        data_timeout=self._settings.data_timeout)
            except StaleConnection as exc:
                self._drop()
                if attempt == 2:
                    return Delivery.same_for_all(recipients, LOST, str(exc))
                log.info("SMTP connection to %s was closed by the server; reconnecting", self._where)
                continue
            if not is_open(client):
                self._client = None
            return delivery
        return Delivery.same_for_all(recipients, LOST, f"not sent: {self._unreachable}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    @property
    def _where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    def _connect(self) -> smtplib.SMTP:
        return connect(self._settings, ssl_context=self._ssl_context)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class DirectoryTransport:
    """Writes each message as `<folder>/<date>-<message id>.eml`, atomically, for a laptop without a mail server.

    The name comes from the message's own Date and Message-ID headers, so writing the same message again (a
    resend) replaces the file instead of adding a second one.
    """

    def __init__(self, folder: Path | str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._folder = Path(folder)
        self._clock = clock

    def open(self) -> None:
        try:
            private_folder(self._folder)
        except OSError as exc:
            raise TransportError(
                f"cannot create the outgoing folder {self._folder}: {exc.strerror}; check [smtp] directory"
            ) from None

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> Delivery:
        path = self._folder / eml_name(data, self._clock())
        try:
            write_private(path, data)
        except OSError as exc:
            return Delivery.same_for_all(
                recipients, LOST, f"cannot write {path}: {exc.strerror}; check that the folder is writable"
            )
        return Delivery.same_for_all(recipients, 250, f"written to {path}", accepted_at=self._clock())

    def close(self) -> None:
        """Nothing to release: every message was complete on disk when `send` returned."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def eml_name(data: bytes, now: datetime) -> str:
    """`<UTC date>-<message id>.eml`, safe as a file name: the id's brackets and any other character become `_`."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
    message_id = str(headers.get("Message-ID", "")).strip().strip("<>")
    safe_id = _UNSAFE.sub("_", message_id)[:150].strip("._") or hashlib.sha256(data).hexdigest()[:32]
    return f"{_date(str(headers.get('Date', '')), now):%Y%m%dT%H%M%SZ}-{safe_id}.eml"


def _date(header: str, fallback: datetime) -> datetime:
    try:
        parsed = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return fallback.astimezone(UTC)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
