"""The headers every response carries, and the stricter policy of the frame that shows a mail's HTML.

The screen itself runs only its own script and style (no inline script, nothing from elsewhere); a mail's HTML is
served on its own URL into a sandboxed iframe under a policy that allows no script at all and no request to any
other host, unless the employee asked for remote images, and then images only.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCREEN_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)


def frame_policy(*, remote_images: bool) -> str:
    """For the mail's HTML: no script, no form, no plugin, no frame; images only from here (cid:) or, when
    asked, from anywhere; inline style (a mail's layout) but no style sheet from elsewhere."""
    images = "'self' data: https: http:" if remote_images else "'self' data:"
    return (
        f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; font-src 'none'; "
        "frame-ancestors 'self'; form-action 'none'; base-uri 'none'; sandbox allow-popups "
        "allow-popups-to-escape-sandbox"
    )


class SecurityHeaders:
    """Adds the screen's policy and the usual hardening headers to every response that has none of its own."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", SCREEN_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("X-Frame-Options", "SAMEORIGIN")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"  # personal data: never kept by a shared cache
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, with_headers)
