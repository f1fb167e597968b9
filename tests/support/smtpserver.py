"""An in-process SMTP server (aiosmtpd) that records what it accepts and can be told to fail, for relay tests.

    server = SmtpTestServer(); server.start()
    server.script(rcpt={"bad@x.nl": "550 5.1.1 no such user"}, data=["451 4.3.0 try later", "250 OK"])
    server.script(drop_on_data=1)   # the next message: connection closed before the DATA reply

Scripted RCPT answers hold until `reset()`; scripted DATA answers are used one per message, then `250 OK`.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .dovecot import free_port, make_self_signed_cert


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: the envelope and the DATA bytes exactly as the client sent them (dot-unstuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: datetime


class _RecordingHandler:
    """aiosmtpd handler: answers from the script when there is one, records every message it accepts."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        answer = self.owner._rcpt_answer(address)
        if answer is None:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner._take_drop():
            # The client has sent the whole message and now waits for the reply that never comes:
            # the "did it arrive or not?" case the relay must treat as uncertain.
            server.transport.abort()
            return "421 4.4.2 connection dropped by test script"
        answer = self.owner._data_answer()
        if answer.startswith("2"):
            self.owner._record(envelope)
        return answer


class SmtpTestServer:
    """A recording SMTP server on a free loopback port, optionally with AUTH and STARTTLS."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        starttls: bool = False,
        cert_dir: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.auth = auth
        self.starttls = starttls
        self.cert_path: Path | None = None
        self._cert_dir = cert_dir
        self._made_cert_dir: Path | None = None
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._rcpt_script: dict[str, str] = {}
        self._data_script: list[str] = []
        self._drops = 0
        self.dropped = 0
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the accepted messages, oldest first."""
        with self._lock:
            return list(self._messages)

    def start(self) -> None:
        """Listen on a free port; retried on a fresh port when another process took it meanwhile."""
        kwargs = self._smtp_parameters()
        for attempt in range(3):
            self.port = free_port()
            controller = Controller(_RecordingHandler(self), hostname=self.host, port=self.port, **kwargs)
            try:
                controller.start()
            except (OSError, RuntimeError):
                if attempt == 2:
                    raise
                continue
            self._controller = controller
            return

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._made_cert_dir is not None:
            shutil.rmtree(self._made_cert_dir, ignore_errors=True)
            self._made_cert_dir = None

    def reset(self) -> None:
        """Forget recorded messages and every scripted answer."""
        with self._lock:
            self._messages.clear()
            self._rcpt_script.clear()
            self._data_script.clear()
            self._drops = 0
            self.dropped = 0

    def script(
        self,
        *,
        rcpt: Mapping[str, str] | None = None,
        data: Iterable[str] = (),
        drop_on_data: int = 0,
    ) -> None:
        """Program failures: fixed answers per recipient, the next DATA answers in order, and dropped connections."""
        with self._lock:
            self._rcpt_script.update({k.lower(): v for k, v in (rcpt or {}).items()})
            self._data_script.extend(data)
            self._drops += drop_on_data

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate (for STARTTLS)."""
        if self.cert_path is None:
            raise RuntimeError("this SMTP test server was started without starttls=True")
        return ssl.create_default_context(cafile=str(self.cert_path))

    # --- called from the server thread -----------------------------------------------------------------------

    def _rcpt_answer(self, address: str) -> str | None:
        with self._lock:
            return self._rcpt_script.get(address.lower())

    def _data_answer(self) -> str:
        with self._lock:
            return self._data_script.pop(0) if self._data_script else "250 OK"

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops <= 0:
                return False
            self._drops -= 1
            self.dropped += 1
            return True

    def _record(self, envelope: Any) -> None:
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            received_at=datetime.now(UTC),
        )
        with self._lock:
            self._messages.append(message)

    # --- set-up -----------------------------------------------------------------------------------------------

    def _smtp_parameters(self) -> dict[str, Any]:
        """aiosmtpd SMTP keyword arguments for the chosen AUTH and STARTTLS options."""
        params: dict[str, Any] = {"data_size_limit": 100 * 1024 * 1024}
        if self.starttls:
            directory = self._cert_dir
            if directory is None:
                directory = self._made_cert_dir = Path(tempfile.mkdtemp(prefix="kcc-smtp-"))
            self.cert_path, key_path = make_self_signed_cert(directory, "smtp")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_path, key_path)
            params["tls_context"] = context
        if self.auth is not None:
            params["authenticator"] = self._authenticate
            params["auth_require_tls"] = self.starttls
        return params

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        """Accept exactly the configured user name and password (PLAIN or LOGIN)."""
        if self.auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)
