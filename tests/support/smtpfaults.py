"""More ways for the recording SMTP test server to misbehave, for the relay's reliability tests.

    server = FaultySmtpServer(); server.start()
    server.hold_data()          # the next DATA is recorded, then its reply waits until `release()`
    server.data_arrived.wait()  # ... the client has sent the whole message and waits for the answer
    server.drop_connections()   # close every open connection from the server side, as an idle timeout does
    server.delay = 0.01         # seconds before each DATA reply, so concurrent relays really overlap
    FaultySmtpServer(xoauth2=("user", "token"))   # offers AUTH XOAUTH2 (plain, loopback) for exactly that token

A held message is recorded *before* the reply is held: it models the worst case for a relay killed while waiting,
a server that has the message although the relay never heard so.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.smtp import AuthResult

from .smtpserver import SmtpTestServer, _RecordingHandler


class _FaultyHandler(_RecordingHandler):
    owner: FaultySmtpServer

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 in one step (initial response), as Microsoft 365 and Google take it."""
        expected = self.owner.xoauth2
        if expected is None or len(args) != 2:
            return AuthResult(success=False, handled=False)
        user, token = expected
        wanted = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        return AuthResult(success=args[1] == wanted, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        owner = self.owner
        owner._remember(server.transport)
        if owner.delay:
            await asyncio.sleep(owner.delay)
        if not owner.holding:
            return str(await super().handle_DATA(server, session, envelope))
        owner._record(envelope)
        owner.data_arrived.set()
        while not owner.released.is_set():
            await asyncio.sleep(0.01)
        return "250 OK held and then accepted"


class FaultySmtpServer(SmtpTestServer):
    """The recording server with a held DATA reply, a per-message delay and server-side connection drops."""

    def __init__(self, *, xoauth2: tuple[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.xoauth2 = xoauth2
        self.delay = 0.0
        self.holding = False
        self.data_arrived = threading.Event()
        self.released = threading.Event()
        self._transports: list[Any] = []

    def start(self) -> None:
        super().start()
        assert self._controller is not None
        self._controller.handler = _FaultyHandler(self)  # used for every connection from now on

    def _smtp_parameters(self) -> dict[str, Any]:
        """With `xoauth2=(user, token)`, AUTH XOAUTH2 is offered on the plain loopback connection."""
        params = super()._smtp_parameters()
        if self.xoauth2 is not None:
            params["auth_require_tls"] = False
        return params

    def hold_data(self) -> None:
        """Record the next messages at once, but hold their DATA reply until `release()`."""
        self.data_arrived.clear()
        self.released.clear()
        self.holding = True

    def release(self) -> None:
        self.released.set()

    def drop_connections(self) -> None:
        """Abort every connection that carried a message, from the server's side, and wait until that is done."""
        controller = self._controller
        assert controller is not None
        with self._lock:
            transports, self._transports = self._transports, []
        done = threading.Event()

        def abort() -> None:
            for transport in transports:
                if transport is not None and not transport.is_closing():
                    transport.abort()
            done.set()

        controller.loop.call_soon_threadsafe(abort)
        done.wait(5)

    def message_ids(self) -> list[str]:
        """The Message-ID header of each accepted message, in arrival order."""
        parser = BytesHeaderParser()
        return [str(parser.parsebytes(m.data).get("Message-ID", "")) for m in self.messages]

    def _remember(self, transport: Any) -> None:
        with self._lock:
            self._transports.append(transport)


@contextmanager
def running_faulty_server(**kwargs: Any) -> Iterator[FaultySmtpServer]:
    """A started FaultySmtpServer (no TLS; AUTH only with xoauth2=…) on a free loopback port, stopped afterwards."""
    server = FaultySmtpServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.release()
        server.stop()
