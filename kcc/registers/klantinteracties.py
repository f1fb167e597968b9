"""The Klantinteracties API of Open Klant: `Authorization: Token …`, otherwise the common JSON API.

The adapter knows the API's shape, not kcc-mail's records: the use case kcc.usecases.export says what to send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from kcc.registers.http import JsonApi, RegisterError, RegisterRefused, RegisterUnreachable

__all__ = ["KlantinteractiesClient", "KlantinteractiesSettings", "RegisterError", "RegisterRefused",
           "RegisterUnreachable"]


@dataclass(frozen=True, slots=True)
class KlantinteractiesSettings:
    """Where the API is and how to sign requests; `token` is read at every request, so a rotated file is seen."""

    url: str
    token: Callable[[], str] = field(repr=False)
    timeout: float = 30.0


class KlantinteractiesClient(JsonApi):
    def __init__(self, settings: KlantinteractiesSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(settings.url, lambda: f"Token {settings.token()}", timeout=settings.timeout,
                         secret_hint="is the token in openklant.token_env/token_file right?", transport=transport)

    def __enter__(self) -> KlantinteractiesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
