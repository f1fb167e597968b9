"""The Documenten API (Open Zaak's DRC): a ZGW JWT per request, otherwise the common JSON API.

ZGW APIs authenticate with a JSON Web Token signed (HS256) with the secret of a client id that Open Zaak's admin
knows; a fresh token per request keeps its `iat` recent, which Open Zaak checks against a leeway.

Beyond the JSON API it speaks the large-file upload: a document created without `inhoud` comes back locked with
its `bestandsdelen`; each part is PUT as multipart/form-data (the bytes streamed from a file-like object, never
held whole), and the document is unlocked with its lock once every part is voltooid.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey

from kcc.registers.http import JsonApi


@dataclass(frozen=True, slots=True)
class DocumentenSettings:
    url: str
    client_id: str
    secret: Callable[[], str] = field(repr=False)
    timeout: float = 60.0


def zgw_token(client_id: str, secret: str, *, now: float | None = None) -> str:
    """The ZGW JWT: issuer and client are kcc-mail's client id; the user is the service itself."""
    claims = {"iss": client_id, "iat": int(now if now is not None else time.time()), "client_id": client_id,
              "user_id": client_id, "user_representation": client_id}
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))


class DocumentenClient(JsonApi):
    def __init__(self, settings: DocumentenSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(
            settings.url, lambda: f"Bearer {zgw_token(settings.client_id, settings.secret())}",
            timeout=settings.timeout, transport=transport,
            secret_hint="are documenten.client_id and the secret in documenten.secret_env/secret_file right?",
        )
        self.client_id = settings.client_id

    def upload_bestandsdeel(self, url: str, lock: str, inhoud: io.RawIOBase, bestandsnaam: str) -> dict[str, Any]:
        """PUT one part: `inhoud` must be seekable (httpx sends its length, then reads it in small pieces)."""
        self._check_owned("PUT", url)
        return self._request("PUT", url, files={"inhoud": (bestandsnaam, inhoud, "application/octet-stream")},
                             data={"lock": lock})

    def lock(self, url: str) -> str:
        """Lock (check out) the document at `url`: the new lock, needed to change it, upload its parts, unlock it."""
        self._check_owned("POST", url)
        return str(self._request("POST", f"{url}/lock", json={}).get("lock") or "")

    def unlock(self, url: str, lock: str | None) -> None:
        """Unlock with the lock; `None` is a forced unlock (scope documenten.geforceerd-unlock), which in Open Zaak
        also throws away the parts of an unfinished upload."""
        self._check_owned("POST", url)
        self._request("POST", f"{url}/unlock", json={"lock": lock} if lock is not None else {})

    def __enter__(self) -> DocumentenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
