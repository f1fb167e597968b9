"""A loopback TCP proxy that breaks connections on command, for the network fault tests.

    with running_proxy(dovecot.port) as proxy:        # the service talks to 127.0.0.1:proxy.port
        proxy.cut_after(200_000, "downstream")        # one-shot: the connection that carries byte 200,001 dies
        proxy.cut_at(b"COMMIT", "upstream")           # one-shot: dies just before COMMIT reaches the server
        proxy.cut_at(b"COMMIT", "upstream", forward=True)   # ... just after the server got it, before the answer
        proxy.stall(); proxy.resume()                 # hold every byte in both directions, then let them go
        proxy.cut_all()                               # every open connection dies at once

A real network failure, not a mocked protocol: the client sees a connection reset (RST) in the middle of whatever
it was doing. The server side is closed with a FIN after the last forwarded byte, so a server always receives
exactly the bytes that were forwarded before the cut (a COMMIT forwarded is a COMMIT the server will run).

Bounded: it listens on 127.0.0.1 only, forwards only to an address in 127.0.0.0/8, holds at most
`max_connections` connections at once (more are refused), and runs in one daemon thread stopped by `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["upstream", "downstream"]
"""upstream: from the client (the service) to the server; downstream: from the server back to the client."""

CHUNK = 64 * 1024
STOP_TIMEOUT = 10.0
DISCARD_TIMEOUT = 5.0  # how long the server side of a cut connection may still talk before it is closed hard


@dataclass
class _Connection:
    """One proxied connection: the client's stream and the server's, and the pumps between them."""

    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cut: bool = False


@dataclass
class _CutAfter:
    direction: Direction
    remaining: int


@dataclass
class _CutAt:
    direction: Direction
    pattern: bytes
    forward: bool
    after: bytes | None
    seen_after: set[int] = field(default_factory=set)  # connections whose stream carried `after` since arming


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`; see the module docstring for the controls."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, max_connections: int = 64) -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"the test proxy only forwards to loopback addresses, not to {target_host}")
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.max_connections = max_connections
        # Counters, written by the proxy thread only (plain ints: reading them from a test is safe).
        self.accepted = 0
        self.refused = 0
        self.bytes_upstream = 0
        self.bytes_downstream = 0
        self.cuts = 0
        self.cut_happened = threading.Event()
        """Set by every cut (one-shot or cut_all); clear it before arming the next one to wait for that one."""
        self._connections: dict[int, _Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._cut_after: _CutAfter | None = None
        self._cut_at: _CutAt | None = None

    # --- life cycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a port the kernel picks (so no race with other tests) and serve in a daemon thread."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"netproxy-{self.target_port}", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), loop).result(STOP_TIMEOUT)

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # --- controls -------------------------------------------------------------------------------------------

    def stall(self) -> None:
        """Stop forwarding in both directions (a chunk already read is held); new connections are held too."""
        self._call(lambda: self._require_flowing().clear())

    def resume(self) -> None:
        """Forward again everything that was held."""
        self._call(lambda: self._require_flowing().set())

    def cut_all(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        return self._run(self._cut_all())

    def cut_after(self, n_bytes: int, direction: Direction = "downstream") -> None:
        """One-shot: forward `n_bytes` more in `direction` (all connections together), then cut the connection
        that carries the next byte."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")

        def arm() -> None:
            self._cut_after = _CutAfter(direction, n_bytes)

        self._call(arm)

    def cut_at(
        self, pattern: bytes, direction: Direction = "upstream", *, forward: bool = False, after: bytes | None = None
    ) -> None:
        """One-shot: cut the connection whose `direction` stream next contains `pattern`.

        With `forward=False` the chunk holding the pattern is not forwarded (the server never gets it); with
        `forward=True` it is forwarded first, so the server gets it and the client never hears the answer.
        With `after`, only a connection whose stream carried `after` (since arming) before the pattern counts:
        `cut_at(b"COMMIT", after=b"outbox_message")` cuts the commit of a transaction that touched the outbox,
        not one of another thread sharing the connection pool.
        """
        if not pattern or after == b"":
            raise ValueError("the patterns must not be empty")

        def arm() -> None:
            self._cut_at = _CutAt(direction, pattern, forward, after)

        self._call(arm)

    def disarm(self) -> None:
        """Forget a one-shot cut that has not happened."""

        def clear() -> None:
            self._cut_after = None
            self._cut_at = None

        self._call(clear)

    @property
    def armed(self) -> bool:
        return self._cut_after is not None or self._cut_at is not None

    # --- the proxy thread -----------------------------------------------------------------------------------

    def _call(self, action: Callable[[], None]) -> None:
        """Run `action` on the proxy's loop and wait for it, so a control takes effect before the test goes on."""

        async def run() -> int:
            action()
            return 0

        self._run(run())

    def _run(self, coroutine: Coroutine[Any, Any, int]) -> int:
        if self._loop is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(STOP_TIMEOUT)

    def _require_flowing(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> int:
        if self._server is not None:
            self._server.close()
        self._require_flowing().set()
        await self._cut_all(count=False)
        tasks = [task for conn in list(self._connections.values()) for task in conn.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._connections.values()):
            _reset(conn.client)
            _reset(conn.server)
        self._connections.clear()
        return 0

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            _reset(client_writer)
            return
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), STOP_TIMEOUT
            )
        except (OSError, TimeoutError):
            self.refused += 1
            _reset(client_writer)  # the target is down: the client sees its connection refused, as it would
            return
        self.accepted += 1
        conn = _Connection(self.accepted, client_writer, server_writer)
        self._connections[conn.number] = conn
        conn.tasks = [
            asyncio.create_task(self._pump(conn, client_reader, server_writer, "upstream")),
            asyncio.create_task(self._pump(conn, server_reader, client_writer, "downstream")),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._connections.pop(conn.number, None)
        for writer in (client_writer, server_writer):
            _close(writer)

    async def _pump(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        """Copy one direction until EOF or a cut, honouring stalls and the armed one-shot cut.

        After a cut, what the server still sends is read and dropped until it closes (see `_cut`).
        """
        tail = b""  # the end of the previous chunk, so a pattern split over two chunks is still found
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    if not conn.cut and writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                if not conn.cut:
                    await self._require_flowing().wait()
                if conn.cut:
                    if direction == "downstream":
                        continue
                    return
                if await self._cut_here(conn, writer, data, tail, direction):
                    continue
                await self._forward(writer, data, direction)
                tail = (tail + data)[-64:]
        except (ConnectionError, OSError):
            await self._cut(conn, count=False)

    async def _cut_here(
        self, conn: _Connection, writer: asyncio.StreamWriter, data: bytes, tail: bytes, direction: Direction
    ) -> bool:
        """Carry out the armed one-shot cut when this chunk triggers it; True when the connection was cut."""
        cut_at = self._cut_at
        if cut_at is not None and cut_at.direction == direction and self._triggers(cut_at, conn, tail + data):
            self._cut_at = None
            if cut_at.forward:
                await self._forward(writer, data, direction)
            await self._cut(conn)
            return True
        cut_after = self._cut_after
        if cut_after is None or cut_after.direction != direction:
            return False
        if len(data) <= cut_after.remaining:
            cut_after.remaining -= len(data)
            return False
        self._cut_after = None
        await self._forward(writer, data[:cut_after.remaining], direction)
        await self._cut(conn)
        return True

    @staticmethod
    def _triggers(cut_at: _CutAt, conn: _Connection, window: bytes) -> bool:
        """Does this chunk (with the end of the previous one) set off the armed cut_at on this connection?"""
        if cut_at.after is None or conn.number in cut_at.seen_after:
            return cut_at.pattern in window
        position = window.find(cut_at.after)
        if position < 0:
            return False
        cut_at.seen_after.add(conn.number)
        return cut_at.pattern in window[position + len(cut_at.after):]

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes, direction: Direction) -> None:
        if not data:
            return
        writer.write(data)
        await writer.drain()
        if direction == "upstream":
            self.bytes_upstream += len(data)
        else:
            self.bytes_downstream += len(data)

    async def _cut_all(self, *, count: bool = True) -> int:
        connections = list(self._connections.values())
        for conn in connections:
            await self._cut(conn, count=count)
        return len(connections)

    async def _cut(self, conn: _Connection, *, count: bool = True) -> None:
        """The client gets a reset; the server gets a FIN after the bytes already forwarded, then is closed."""
        if conn.cut:
            return
        conn.cut = True
        if count:
            self.cuts += 1
            self.cut_happened.set()
        _reset(conn.client)
        server = conn.server
        if server.can_write_eof() and not server.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                server.write_eof()
        # Let the server finish talking into the void (a server that is still writing would otherwise see a reset
        # and might drop what it received), but not for ever.
        asyncio.get_running_loop().call_later(DISCARD_TIMEOUT, _reset, server)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees ECONNRESET, as after a network failure."""
    if writer.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()


@contextlib.contextmanager
def running_proxy(target_port: int, target_host: str = "127.0.0.1") -> Iterator[TcpProxy]:
    """A started proxy to `target_host`:`target_port`, stopped (every connection closed) afterwards."""
    proxy = TcpProxy(target_port, target_host)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
