"""A copy of each sent reply in the mailbox's Sent folder, so colleagues see it in their mail client too.

Off unless `[replies] sent_folder` is set. The copy is a courtesy: the reply was already sent and registered when
it is made, so a failure is logged and never undoes or fails the send.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from imapclient import IMAPClient

from kcc.config import MailboxConfig, resolve_secret

log = logging.getLogger(__name__)


class SentCopy(Protocol):
    def append(self, data: bytes, when: datetime, outbox_id: int) -> bool:
        """Store a copy; False (and a log line) when it could not be made."""

    def close(self) -> None: ...


class ImapSentCopy:
    """APPENDs to one IMAP folder over one lazily opened connection, marked \\Seen (we wrote it ourselves).

    After a failure, copies are skipped for `pause_seconds`: an unreachable server must not cost every reply a
    connection timeout.
    """

    def __init__(
        self, mailbox: MailboxConfig, folder: str, *, ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None, pause_seconds: float = 300.0,
    ) -> None:
        self._mailbox = mailbox
        self._folder = folder
        self._ssl_context = ssl_context
        self._environ = environ
        self._pause_seconds = pause_seconds
        self._paused_until = 0.0
        self._client: Any = None

    def append(self, data: bytes, when: datetime, outbox_id: int) -> bool:
        if time.monotonic() < self._paused_until:
            log.info("outbox %s: sent; no copy in folder %r, copies are paused after an earlier failure",
                     outbox_id, self._folder)
            return False
        try:
            if self._client is None:
                self._client = self._connect()
            self._client.append(self._folder, data, flags=(b"\\Seen",), msg_time=when)
        except Exception as exc:  # a copy must never fail the send, whatever the server or the network does
            log.warning(
                "outbox %s: sent, but the copy to folder %r of mailbox %s failed (%s: %s); check that the folder "
                "exists and [replies] sent_folder; copies pause for %.0f s", outbox_id, self._folder,
                self._mailbox.name, type(exc).__name__, exc, self._pause_seconds,
            )
            self.close()
            self._paused_until = time.monotonic() + self._pause_seconds
            return False
        return True

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                client.logout()

    def _connect(self) -> Any:
        config = self._mailbox
        context = self._ssl_context or ssl.create_default_context()
        client = IMAPClient(config.host, config.port, ssl=config.security == "tls",
                            ssl_context=context if config.security == "tls" else None, timeout=config.timeout)
        try:
            if config.security == "starttls":
                client.starttls(context)
            if config.auth == "xoauth2":
                token = resolve_secret(config.token_env, config.token_file, f"mailbox {config.name} token",
                                       self._environ)
                client.oauth2_login(config.username, token)
            else:
                password = resolve_secret(config.password_env, config.password_file,
                                          f"mailbox {config.name} password", self._environ)
                client.login(config.username, password)
        except Exception:
            client.shutdown()
            raise
        return client
