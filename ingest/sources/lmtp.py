"""Mail pushed by the municipality's MTA over LMTP (RFC 2033), served by aiosmtpd's LMTP class.

An LMTP server answers once per accepted recipient after the end of DATA, and the MTA keeps (and retries) every
mail that did not get a 250. So the answer is given only after `Delivery.deliver` returned, that is after the mail
is committed; a database that cannot be reached, or a service that is stopping, gets a 451 and the MTA tries
again later. A retry of a mail whose 250 was lost is stored by the same bytes, which the delivery recognises.
The bytes are stored as received: no Received header is added. This module holds no business rule and no
transaction: what a stored mail becomes is the delivery's business (kcc.usecases.lmtp_intake).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session

from ingest.sources.base import Envelope, FetchedMail, MailRef, SourceError
from store.types import utcnow

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0
"""How long a stop waits for mails being stored to be committed and answered."""


class ListenError(SourceError):
    """The LMTP address cannot be listened on; the message says which address and what to change."""


class DeliveryDeferred(Exception):
    """The mail cannot be stored now (the database is away); the MTA is told 451 and keeps it."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the delivery did with one mail: its new id, or None when these bytes were already stored."""

    mail_id: int | None
    quarantined: bool = False


class Delivery(Protocol):
    """Stores one delivered mail and returns only once it is committed (blocking; runs on a worker thread)."""

    def deliver(self, mail: FetchedMail) -> Delivered: ...


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    """One LMTP mailbox: which recipients it accepts, and the limits against a misbehaving or hostile client."""

    mailbox: str
    recipients: frozenset[str]
    """Accepted addresses, lower case."""
    max_message_bytes: int = 100 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 20
    idle_timeout: float = 300.0
    hostname: str = "kcc-mail"


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; ListenError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen for LMTP on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    return sock


def bind_unix(path: str, mode: int) -> socket.socket:
    """A listening Unix socket at `path` with permissions `mode` (the MTA's group must be able to connect).

    A socket file left by a process that died is replaced; one that another process still listens on, or a
    file that is not a socket, is refused rather than taken over.
    """
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen for LMTP on unix:{path} ({exc.strerror})") from None
    sock.listen(128)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"cannot listen for LMTP on unix:{path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ListenError(f"cannot listen for LMTP on unix:{path} ({exc.strerror})") from None
        os.unlink(path)  # nothing listens: a socket left behind by a process that died
        return
    finally:
        probe.close()
    raise ListenError(f"cannot listen for LMTP on unix:{path}: another process is listening there")


def replies(line: str, count: int) -> str:
    """One reply per accepted recipient, as LMTP answers the end of DATA (RFC 2033 §4.2)."""
    return "\r\n".join([line] * max(count, 1))


def sender_of(envelope: SmtpEnvelope) -> str:
    """MAIL FROM as given, and "" for the null sender `<>` of a bounce or an auto-reply."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def client_of(session: Session) -> str:
    """The client's address as it is kept with the mail: the IP address, or `unix` for the socket."""
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])[:200]
    return "unix"


class LmtpHandler:
    """aiosmtpd's handler hooks: accept the configured recipients, and answer DATA once the mail is committed."""

    def __init__(self, settings: LmtpSettings, delivery: Delivery, executor: ThreadPoolExecutor,
                 stopping: threading.Event) -> None:
        self.settings = settings
        self.delivery = delivery
        self.executor = executor
        self.stopping = stopping

    async def handle_RCPT(
        self, server: LMTP, session: Session, envelope: SmtpEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return (f"452 4.5.3 too many recipients in one transaction (at most {self.settings.max_recipients}); "
                    "send the others in another")
        if address.lower() not in self.settings.recipients:
            return "550 5.1.1 no kcc-mail mailbox accepts this recipient"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 recipient accepted"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: SmtpEnvelope) -> str:
        count = len(envelope.rcpt_tos)
        if self.stopping.is_set():
            return replies("451 4.3.2 kcc-mail is stopping; try again later", count)
        raw = envelope.original_content or b""
        mail = FetchedMail(
            ref=MailRef(uid=None, key="lmtp", size=len(raw)), raw=raw, internaldate=utcnow(),
            envelope=Envelope(sender_of(envelope), tuple(envelope.rcpt_tos), client_of(session)),
        )
        loop = asyncio.get_running_loop()
        try:
            delivered = await loop.run_in_executor(self.executor, self.delivery.deliver, mail)
        except DeliveryDeferred as exc:
            log.warning("mailbox=%s LMTP mail of %d bytes not stored now (%s); answered 451, the MTA retries",
                        self.settings.mailbox, len(raw), exc, extra={"mailbox": self.settings.mailbox})
            return replies("451 4.3.0 the mail cannot be stored now; try again later", count)
        except Exception as exc:  # never a 250 for a mail that is not stored, never a 5xx that loses it
            log.error("mailbox=%s LMTP mail of %d bytes not stored: %s; answered 451, the MTA retries",
                      self.settings.mailbox, len(raw), type(exc).__name__, extra={"mailbox": self.settings.mailbox})
            return replies("451 4.3.0 the mail could not be stored (an internal error); try again later", count)
        if delivered.mail_id is None:
            return replies("250 2.0.0 already stored; nothing new", count)
        return replies(f"250 2.0.0 stored as mail {delivered.mail_id}", count)


class Connections:
    """The open connections of one server, counted in its event loop (so no lock is needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[KccLmtp] = set()


class KccLmtp(LMTP):
    """aiosmtpd's LMTP with a connection limit, lines as long as the mail, and a refusal after DATA repeated for
    each recipient."""

    def __init__(self, handler: LmtpHandler, connections: Connections, **kwargs: Any) -> None:
        # RFC 5321's 1,000 characters per line is not what mail in the wild keeps to, and a 500 would make the MTA
        # bounce the mail: a line may be as long as the message may be (which bounds the memory either way).
        self.line_length_limit = handler.settings.max_message_bytes + 2
        super().__init__(handler, **kwargs)
        self.connections = connections
        self.refused = False
        self.recipients_at_data = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections.open) >= self.connections.limit:
            self.refused = True
            write = getattr(transport, "write", None)
            if write is not None:
                write(b"421 4.7.0 too many connections to kcc-mail; try again later\r\n")
            transport.close()  # aiosmtpd's greeting is never sent: the transport is closing
            return
        self.connections.open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.connections.open.discard(self)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        """After DATA, aiosmtpd's own refusals (552 too much data, 500 line too long) are one line; LMTP needs
        one per recipient, or the MTA waits for the rest."""
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if text.startswith("354"):
            assert self.envelope is not None
            self.recipients_at_data = len(self.envelope.rcpt_tos)
        elif self.recipients_at_data:
            count, self.recipients_at_data = self.recipients_at_data, 0
            if "\r\n" not in text:
                status = replies(text, count)
        await super().push(status)


class LmtpServer:
    """One LMTP listener on its own thread and event loop; deliveries run on a few worker threads."""

    def __init__(self, settings: LmtpSettings, delivery: Delivery, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self._address: Sequence[Any] | str = sock.getsockname()
        self.stopping = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=min(settings.max_connections, 4),
                                           thread_name_prefix=f"lmtp-{settings.mailbox}")
        self.handler = LmtpHandler(settings, delivery, self.executor, self.stopping)
        self.connections = Connections(settings.max_connections)
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.thread = threading.Thread(target=self._run, name=f"lmtp-{settings.mailbox}", daemon=True)
        self._ready = threading.Event()

    def _protocol(self) -> KccLmtp:
        return KccLmtp(
            self.handler, self.connections, data_size_limit=self.settings.max_message_bytes,
            enable_SMTPUTF8=True, decode_data=False, hostname=self.settings.hostname,
            timeout=self.settings.idle_timeout, loop=self.loop,
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            if self.sock.family == socket.AF_UNIX:
                start = self.loop.create_unix_server(self._protocol, sock=self.sock)
            else:
                start = self.loop.create_server(self._protocol, sock=self.sock)
            self.server = self.loop.run_until_complete(start)
        finally:
            self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Accept nothing new, let the mails being stored be committed and answered, then close every connection."""
        if not self.thread.is_alive():
            return
        self.stopping.set()
        self._in_loop(self._close_listener(), 5)
        self.executor.shutdown(wait=True)  # a mail being stored is committed; its 250 is pushed next
        self._in_loop(self._close_connections(), grace)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if self.sock.family == socket.AF_UNIX and isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)  # the MTA gets "no such file" (and retries) instead of a dead socket

    def _in_loop(self, coroutine: Any, timeout: float) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            future.result(timeout)
        except Exception as exc:
            log.warning("mailbox=%s stopping the LMTP server: %s", self.settings.mailbox, type(exc).__name__)

    async def _close_listener(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _close_connections(self) -> None:
        await asyncio.sleep(0.2)  # the answers of the last deliveries are written first
        for protocol in list(self.connections.open):
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0)

    @property
    def address(self) -> Sequence[Any] | str:
        """Where it listens: the socket's path, or (host, port) with the bound port when 0 was asked for."""
        return self._address
