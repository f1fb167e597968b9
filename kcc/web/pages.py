"""Rendering: the Jinja templates of the screens, their filters, flash messages, and the one error table."""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from kcc.errors import ConfigurationError, KccError, NotAllowed, NotFound, PeerUnreachable, Refused

log = logging.getLogger(__name__)

TEMPLATES = resources.files("kcc.web") / "templates"
STATIC = resources.files("kcc.web") / "static"

HTTP_STATUS: tuple[tuple[type[KccError], int], ...] = (
    (NotAllowed, 403),
    (NotFound, 404),
    (ConfigurationError, 500),
    (PeerUnreachable, 503),
    (Refused, 409),
)
"""Each kind of the error family and its HTTP status; the CLI has the same table for exit codes."""

TITLES = {400: "Ongeldig verzoek", 401: "Niet aangemeld", 403: "Geen toegang", 404: "Niet gevonden",
          409: "Niet uitgevoerd", 500: "Installatiefout", 503: "Server niet bereikbaar"}


def http_status(exc: KccError) -> int:
    return next((status for kind, status in HTTP_STATUS if isinstance(exc, kind)), 500)


class Pages:
    """The templates with the filters every screen uses, in the KCC's time zone."""

    def __init__(self, zone: tzinfo, *, dev_sign_in: bool, refresh_seconds: float, theme: bool) -> None:
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        env.autoescape = True
        env.globals.update(dev_sign_in=dev_sign_in, refresh_seconds=refresh_seconds, theme=theme)
        env.filters["tijd"] = lambda moment: _local(moment, zone, "%d-%m-%Y %H:%M")
        env.filters["uur"] = lambda moment: _local(moment, zone, "%H:%M")
        env.filters["datum"] = lambda moment: _local(moment, zone, "%d-%m-%Y")
        env.filters["grootte"] = size

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        values = {"gebruiker": request.scope.get("gebruiker"), "meldingen": take_flashes(request),
                  "csrf_token": request.scope.get("csrf_token", ""), **context}
        return self.templates.TemplateResponse(request, name, values, status_code=status)

    def error(self, request: Request, status: int, message: str) -> Response:
        """An error page: what went wrong and what to do (the use case's message), never a traceback."""
        return self.render(request, "fout.html", {"titel": TITLES.get(status, "Fout"), "bericht": message}, status)


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A message for the next page the person sees (after a redirect); assigned, not appended, so the session
    knows it changed."""
    request.session["meldingen"] = [*request.session.get("meldingen", []), {"tekst": text, "soort": kind}]


def take_flashes(request: Request) -> list[dict[str, str]]:
    if "session" not in request.scope:
        return []
    return list(request.session.pop("meldingen", []))


def size(count: int) -> str:
    """1.234 bytes as people read them: "1,2 kB"."""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            text = f"{value:.0f}" if unit == "bytes" else f"{value:.1f}".replace(".", ",")
            return f"{text} {unit}"
        value /= 1000
    return f"{count} bytes"


def _local(moment: datetime | str | None, zone: tzinfo, pattern: str) -> str:
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(zone).strftime(pattern)


def pages_of(request: Request) -> Pages:
    """The application's Pages (kcc.web.app puts them on its state)."""
    pages: Pages = request.app.state.pages
    return pages
