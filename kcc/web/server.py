"""Serving the screen with uvicorn: on its own (`kcc-mail web`) or as a thread of `kcc-mail run`.

The listening socket is bound here, before anything else starts, so an address in use or a port without
permission stops the start with one clear line instead of a thread that quietly died.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from kcc.bootstrap import App
from kcc.config import WebConfig
from kcc.errors import ConfigurationError
from kcc.web.app import create_web_app

log = logging.getLogger(__name__)


def bind(web: WebConfig) -> socket.socket:
    """The listening socket of `web.listen`; ConfigurationError (what to change) when it cannot be had."""
    family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # every response after a connection's first waits ~40 ms for the browser's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((web.host, web.port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"web: cannot listen on {web.listen} ({exc.strerror}); stop what uses it or set another web.listen"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def server_for(app: App, sock: socket.socket) -> uvicorn.Server:
    web = app.config.web
    config = uvicorn.Config(
        create_web_app(app), log_level="warning", access_log=False, proxy_headers=True,
        forwarded_allow_ips="127.0.0.1,::1", server_header=False, timeout_graceful_shutdown=10,
        lifespan="off",
    )
    log.debug("web app built for %s", web.listen)
    return uvicorn.Server(config)


def serve(app: App) -> None:
    """`kcc-mail web`: serve until SIGTERM or SIGINT (uvicorn handles them in the main thread)."""
    sock = bind(app.config.web)
    server = server_for(app, sock)
    server.run(sockets=[sock])


class WebThread:
    """The screen beside the intake and the relay in `kcc-mail run`."""

    def __init__(self, app: App) -> None:
        self.web = app.config.web
        self.sock = bind(self.web)
        self.server = server_for(app, self.sock)
        self.thread = threading.Thread(target=self._run, name="web", daemon=True)

    def describe(self) -> str:
        how = "development sign-in, this computer only" if self.web.auth == "dev" else "sign-in through OIDC"
        return f"web screen: {self.web.base_url}/ ({how})"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception as exc:  # the rest of the service goes on; status and the log say the screen is down
            log.error("the web screen stopped: %s: %s", type(exc).__name__, exc)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
