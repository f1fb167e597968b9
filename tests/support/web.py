"""The web screen served for real (uvicorn on a loopback port, over the test's database), and people using it
over HTTP: signed in through the development sign-in, with the CSRF token each page gives."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx

from kcc.bootstrap import App
from kcc.web.server import WebThread

_TOKEN = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    """The running screen: its address and the application behind it."""

    url: str
    app: App


@contextmanager
def serving(app: App, **web: Any) -> Iterator[Site]:
    """Serve `app`'s screen on a free loopback port until the block ends; `web` overrides [web] keys."""
    port = free_port()
    config = replace(app.config, web=replace(app.config.web, listen=f"127.0.0.1:{port}", **web))
    served = replace(app, config=config)
    thread = WebThread(served)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{url}/gezond", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the web screen did not answer on {url} within 15 s")
            time.sleep(0.05)
        yield Site(url, served)
    finally:
        thread.stop()


def token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _TOKEN.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def form_token(html: str, action: str) -> str:
    """The CSRF token inside the form that posts to `action` (the first form's when the page has none: a test
    of a refused POST may post where no form points)."""
    for form in re.findall(r"<form\b[^>]*>.*?</form>", html, re.S):
        if re.search(rf'action="{re.escape(action)}"', form.split(">", 1)[0]):
            found = _TOKEN.search(form)
            assert found and found.group(1), f"the form that posts to {action} carries no CSRF token"
            return found.group(1)
    return token(html)


class Person:
    """Someone using the screen: an HTTP client with its own session cookie."""

    def __init__(self, site: Site, naam: str, email: str, *, kcc: bool = False, beheer: bool = False,
                 afdelingen: str = "") -> None:
        self.email = email
        # TCP_NODELAY: without it each request after the first waits ~40 ms for a delayed ACK (Nagle)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.client = httpx.Client(base_url=site.url, follow_redirects=False, timeout=30, transport=transport)
        form = self.client.get("/aanmelden")
        data = {"csrf_token": token(form.text), "naam": naam, "email": email, "afdelingen": afdelingen, "terug": "/"}
        if kcc:
            data["kcc"] = "y"
        if beheer:
            data["beheer"] = "y"
        signed_in = self.client.post("/aanmelden", data=data)
        assert signed_in.status_code == 303, signed_in.text

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, data: dict[str, str] | None = None, *, from_page: str | None = None) -> httpx.Response:
        """Post a form the way the browser does: the form on the page it is on (`from_page`, else `path`'s own
        page without its last part) whose action is `path`, with that form's own token."""
        page = self.client.get(from_page or path.rsplit("/", 1)[0])
        return self.client.post(path, data={"csrf_token": form_token(page.text, path), **(data or {})})

    def close(self) -> None:
        self.client.close()


def alerts(html: str) -> list[str]:
    """The texts of the page's alerts and status messages, as a screen reader announces them."""
    return [" ".join(re.sub(r"<[^>]+>", " ", m).split())
            for m in re.findall(r'role="(?:alert|status)"[^>]*>(.*?)</(?:div|p)>', html, re.S)]
