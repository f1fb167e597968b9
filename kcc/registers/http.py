"""A JSON API over HTTP with httpx, as the ZGW registers speak it: paginated lists, error bodies, two kinds of failure.

Errors come in two kinds the exporter acts on: unreachable (connection errors, timeouts, 5xx, 429: try again
later; the request may or may not have been carried out) and refused (any other 4xx: the request itself is wrong,
so retrying cannot help until someone changes the configuration or the data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

MAX_PAGES = 50
"""A lookup never needs more: it filters on a parent or an identificator, and a page holds 100."""


class RegisterError(Exception):
    """A request to a register did not succeed; the message names the request, never a secret."""


class RegisterUnreachable(RegisterError):
    """No answer, a broken connection, or a server error: the request may or may not have been carried out."""


class RegisterRefused(RegisterError):
    """The register refused the request (4xx); `detail` is its own explanation, for the operator."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class JsonApi:
    """One HTTP connection pool to one API; thread-confined (one per exporter thread)."""

    def __init__(self, url: str, authorization: Callable[[], str], *, timeout: float, secret_hint: str,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._base = url.rstrip("/")
        self._authorization = authorization
        self._timeout = timeout
        self._secret_hint = secret_hint
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def owns(self, url: str) -> bool:
        """Is `url` an address of this API (and not of a register kcc-mail was connected to before)?"""
        return url.startswith(self._base + "/")

    def find(self, resource: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every object of `resource` matching the filters, all pages followed."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self._base}/{resource}"
        query: Mapping[str, str] | None = {**params, "pageSize": "100"}
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            page = self._request("GET", url, params=query)
            found += page.get("results", [])
            url, query = page.get("next"), None  # `next` carries the query itself
        raise RegisterRefused(f"GET {resource}: more than {MAX_PAGES} pages for one lookup", 0,
                              "too many results; the filter did not narrow the lookup")

    def count(self, resource: str, params: Mapping[str, str] | None = None) -> int:
        """How many objects of `resource` the API holds (one small page read): proves address and credentials."""
        page = self._request("GET", f"{self._base}/{resource}", params={**(params or {}), "pageSize": "1"})
        return int(page.get("count") or 0)

    def get(self, url: str) -> dict[str, Any]:
        """The object at `url` (an url the API gave out)."""
        self._check_owned("GET", url)
        return self._request("GET", url)

    def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"{self._base}/{resource}", json=body)

    def update(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH the object at `url` (an url the API gave out, so on this API)."""
        self._check_owned("PATCH", url)
        return self._request("PATCH", url, json=body)

    def _check_owned(self, method: str, url: str) -> None:
        """Only urls of this API are sent to: a stored url of another register is never given our credentials."""
        if not self.owns(url):
            raise RegisterRefused(f"{method} {url}: not an address of {self._base}", 0,
                                  "the stored remote url belongs to another API; was its url changed?")

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        what = f"{method} {_path(url, self._base)}"
        headers = {"Authorization": self._authorization(), "Accept": "application/json"}
        try:
            response = self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise RegisterUnreachable(f"{what}: no answer within {self._timeout:g} s") from None
        except httpx.TransportError as exc:
            raise RegisterUnreachable(f"{what}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise RegisterUnreachable(f"{what}: the server answered {response.status_code}")
        if response.status_code >= 400:
            detail = _detail(response)
            hint = f" ({self._secret_hint})" if response.status_code in (401, 403) else ""
            raise RegisterRefused(f"{what}: refused with {response.status_code}{hint}: {detail}",
                                  response.status_code, detail)
        if response.status_code == 204:  # done, nothing to say (the Documenten API's unlock)
            return {}
        try:
            data = response.json()
        except ValueError:
            raise RegisterUnreachable(f"{what}: the answer ({response.status_code}) is not JSON") from None
        if not isinstance(data, dict):
            raise RegisterUnreachable(f"{what}: the answer is not a JSON object")
        return data


def _path(url: str, base: str) -> str:
    """The request as the log may show it: the path under the API, without query values (they can name people)."""
    return url.removeprefix(base).partition("?")[0] or "/"


def _detail(response: httpx.Response) -> str:
    """The server's own explanation of a refusal, in one line (Open Klant answers with `invalidParams`)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500].replace("\n", " ")
    if not isinstance(body, dict):
        return str(body)[:500]
    parts = [str(body.get("detail") or body.get("title") or "")]
    for item in body.get("invalidParams") or []:
        if isinstance(item, dict):
            parts.append(f"{item.get('name')}: {item.get('reason')}")
    return "; ".join(p for p in parts if p)[:1000]
