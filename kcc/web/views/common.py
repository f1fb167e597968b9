"""What the screens share: running a use case off the event loop, reading numbers and dates from a query."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from kcc.bootstrap import App
from kcc.errors import Refused

T = TypeVar("T")

OUTBOX_NAMES = {  # an outbox status as the screens say it
    "pending": "wacht", "sending": "wordt verzonden", "retry": "opnieuw proberen", "sent": "verzonden",
    "failed": "mislukt", "uncertain": "onzeker", "bounced": "onbestelbaar",
}

EXPORT_NAMES = {  # an export job's status as the screens say it
    "pending": "wacht", "sending": "wordt verzonden", "retry": "opnieuw proberen", "done": "in het register",
    "failed": "geweigerd",
}


class BadInput(Refused):
    """A value in the address or the form cannot be read; the message says which and how to write it."""


def kcc_app(request: Request) -> App:
    app: App = request.app.state.kcc
    return app


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A use case (blocking database work) on the thread pool, so the event loop keeps serving others."""
    return await run_in_threadpool(function, *args, **kwargs)


def number(value: str | None, name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise BadInput(f"{name} ontbreekt")
        return default
    if not value.isdigit() or len(value) > 18:
        raise BadInput(f"{name} moet een positief getal zijn, niet {value[:20]!r}")
    return int(value)


def day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{name} moet een datum zijn (jjjj-mm-dd), niet {value[:20]!r}") from None


def path_id(request: Request, name: str = "id") -> int:
    return number(str(request.path_params[name]), name)
