"""Assembling the web application: the routes of every screen, the session, the headers, the static files."""

from __future__ import annotations

import logging
import secrets
import zoneinfo
from datetime import timedelta

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kcc.bootstrap import App
from kcc.config import WebConfig, check_web
from kcc.errors import ConfigurationError
from kcc.secrets import resolve_secret
from kcc.usecases.access import Gebruiker
from kcc.web import auth
from kcc.web.pages import STATIC, Pages, pages_of
from kcc.web.security import SecurityHeaders
from kcc.web.views import beheer, klantcontacten, mail, taken, werkvoorraad

log = logging.getLogger(__name__)


def create_web_app(app: App, web: WebConfig | None = None) -> Starlette:
    """The ASGI application over `app`'s use cases; refuses a configuration that would let anyone in."""
    web = web or app.config.web
    check_web(dataclass_enabled(web), app.config.source)
    zone = zoneinfo.ZoneInfo(web.timezone)
    secret = _session_secret(web)

    async def home(request: Request) -> Response:
        gebruiker = auth.signed_in(request)
        return RedirectResponse(auth.home_of(gebruiker) if gebruiker else "/aanmelden", status_code=303)

    async def healthy(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def theme(request: Request) -> Response:
        if not web.theme_css:
            return PlainTextResponse("", media_type="text/css")
        return FileResponse(web.theme_css, media_type="text/css")

    @auth.page()
    async def account(request: Request, gebruiker: Gebruiker) -> Response:
        return pages_of(request).render(request, "account.html", {})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        status = exc.status_code
        message = "Deze pagina bestaat niet." if status == 404 else "Dit verzoek kan niet worden uitgevoerd."
        return pages_of(request).error(request, status, message)

    routes = [
        Route("/", home),
        Route("/gezond", healthy),
        Route("/thema.css", theme),
        Route("/account", account),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        *auth.routes(web),
        *werkvoorraad.routes(),
        *mail.routes(),
        *taken.routes(),
        *beheer.routes(),
        *klantcontacten.routes(),
    ]
    https = web.base_url.startswith("https://")
    middleware = [
        Middleware(SecurityHeaders, https=https),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie="kcc_sessie",
                   max_age=int(web.session_hours * 3600), same_site="lax", https_only=https),
    ]
    application = Starlette(routes=routes, middleware=middleware,
                            exception_handlers={404: not_found, 405: not_found})  # type: ignore[dict-item]
    application.state.kcc = app
    application.state.web = web
    application.state.zone = zone
    application.state.csrf_secret = secret.encode()
    application.state.csrf_time_limit = timedelta(hours=web.session_hours)
    application.state.pages = Pages(zone, dev_sign_in=web.auth == "dev", refresh_seconds=web.refresh_seconds,
                                    theme=bool(web.theme_css))
    return application


def dataclass_enabled(web: WebConfig) -> WebConfig:
    """The checks of kcc.config as for a web screen that is switched on (it is, when it is being built)."""
    from dataclasses import replace

    return replace(web, enabled=True)


def _session_secret(web: WebConfig) -> str:
    """The key that signs the session cookie: configured, or for the development sign-in a new one per start."""
    if web.session_secret_env or web.session_secret_file:
        value = resolve_secret(web.session_secret_env, web.session_secret_file, "web", key="session_secret")
        if len(value) < 32:
            raise ConfigurationError("web: the session secret must be at least 32 characters; generate one with "
                                     "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        return value
    if web.auth != "dev":
        raise ConfigurationError("web: web.auth = \"oidc\" needs web.session_secret_env or web.session_secret_file")
    log.info("web: no session secret configured; sign-ins last until this process stops (development sign-in)")
    return secrets.token_urlsafe(48)
