"""Signing in: OpenID Connect against the municipality's identity provider, or the development sign-in.

The person's identity (e-mail, name) and roles come from the ID token's claims and are kept in the signed session
cookie; there is no `--as` here: what the audit trail and the actor records say is who signed in. The development
sign-in lets anyone pick a name and roles, so it exists only on a loopback address (kcc.config refuses it
elsewhere) and every page says it is on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kcc.config import OidcConfig, WebConfig
from kcc.errors import KccError, NotAllowed
from kcc.secrets import resolve_secret
from kcc.usecases.access import Gebruiker, Rol
from kcc.web.forms import CsrfOnly, DevSignIn, fresh_csrf_secret
from kcc.web.pages import http_status, pages_of

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
View = Callable[[Request, Gebruiker], Awaitable[Response]]


def page(rol: Rol | None = None, *, taken: bool = False) -> Callable[[View], Endpoint]:
    """A route for signed-in people: the sign-in first when there is none, the role checked on the server, every
    POST's CSRF token checked, and the error family turned into the page that says what to do."""

    def wrap(view: View) -> Endpoint:
        @wraps(view)
        async def endpoint(request: Request) -> Response:
            pages = pages_of(request)
            gebruiker = signed_in(request)
            if gebruiker is None:
                if request.method != "GET":
                    return pages.error(request, 401, "U bent niet (meer) aangemeld; meld u opnieuw aan.")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/aanmelden?terug={quote(target)}", status_code=303)
            request.scope["gebruiker"] = gebruiker
            token_form = CsrfOnly.bound(request)
            request.scope["csrf_token"] = token_form.csrf_token.current_token
            try:
                if rol is not None:
                    gebruiker.vereist(rol)
                if taken:
                    gebruiker.vereist_taken()
                if request.method == "POST":
                    posted = CsrfOnly.bound(request, formdata=await request.form())
                    if not posted.validate():
                        log.warning("medewerker=%s POST %s refused: no valid CSRF token", gebruiker.identificator,
                                    request.url.path)
                        return pages.error(request, 403, "Dit formulier is verlopen of komt niet van deze site. "
                                                         "Open de pagina opnieuw en probeer het nog eens.")
                return await view(request, gebruiker)
            except KccError as exc:
                status = http_status(exc)
                log.info("medewerker=%s %s %s: %s (%s)", gebruiker.identificator, request.method, request.url.path,
                         status, type(exc).__name__)
                return pages.error(request, status, str(exc))

        return endpoint

    return wrap


def signed_in(request: Request) -> Gebruiker | None:
    """The person of this session, unless the session has run out (web.session_hours)."""
    data = request.session.get("gebruiker")
    since = request.session.get("aangemeld_op")
    if not data or not since:
        return None
    hours: float = request.app.state.web.session_hours
    if datetime.fromisoformat(since) + timedelta(hours=hours) < datetime.now(UTC):
        request.session.clear()
        return None
    try:
        return Gebruiker.from_json(data)
    except (KeyError, ValueError, NotAllowed):
        request.session.clear()
        return None


def start_session(request: Request, gebruiker: Gebruiker) -> None:
    """A new session for the person (never the one from before the sign-in: no session fixation)."""
    request.session.clear()
    # The CSRF secret is made here, once: the session lives in a cookie that every response (a stylesheet too)
    # sends back as it was read, so a secret first made while a page loads would be lost to a parallel request.
    request.session["csrf"] = fresh_csrf_secret()
    request.session["gebruiker"] = gebruiker.as_json()
    request.session["aangemeld_op"] = datetime.now(UTC).isoformat()
    log.info("medewerker=%s signed in (roles %s, afdelingen %d)", gebruiker.identificator,
             ",".join(sorted(gebruiker.rollen)) or "-", len(gebruiker.afdelingen))


def local_target(value: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another host (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def home_of(gebruiker: Gebruiker) -> str:
    if gebruiker.heeft(Rol.KCC):
        return "/werkvoorraad"
    if gebruiker.afdelingen:
        return "/taken"
    if gebruiker.heeft(Rol.BEHEER):
        return "/beheer"
    return "/account"


# --- the development sign-in ------------------------------------------------------------------------------------


async def dev_form(request: Request) -> Response:
    form = DevSignIn.bound(request)
    return pages_of(request).render(request, "aanmelden.html", {"form": form, "terug": request.query_params
                                                                       .get("terug", "/")})


async def dev_sign_in(request: Request) -> Response:
    form = DevSignIn.bound(request, formdata=await request.form())
    terug = local_target((await request.form()).get("terug"))  # type: ignore[arg-type]
    if not form.validate():
        return pages_of(request).render(request, "aanmelden.html", {"form": form, "terug": terug}, 400)
    rollen = frozenset(r for r, on in ((Rol.KCC, form.kcc.data), (Rol.BEHEER, form.beheer.data)) if on)
    afdelingen = tuple(a.strip() for a in (form.afdelingen.data or "").split(",") if a.strip())
    try:
        gebruiker = Gebruiker(form.email.data.strip(), form.naam.data.strip(), rollen, afdelingen)
    except NotAllowed as exc:
        form.email.errors = [str(exc)]
        return pages_of(request).render(request, "aanmelden.html", {"form": form, "terug": terug}, 400)
    start_session(request, gebruiker)
    return RedirectResponse(terug if terug != "/" else home_of(gebruiker), status_code=303)


# --- OpenID Connect ---------------------------------------------------------------------------------------------


class OidcSignIn:
    """Authorization code flow with PKCE (authlib), the roles read from one configurable claim."""

    def __init__(self, web: WebConfig) -> None:
        from authlib.integrations.starlette_client import OAuth

        self.config = web.oidc
        self.callback = f"{web.base_url}/aanmelden/terug"
        secret = ""
        if self.config.client_secret_env or self.config.client_secret_file:
            secret = resolve_secret(self.config.client_secret_env, self.config.client_secret_file, "web.oidc",
                                    key="client_secret")
        oauth = OAuth()
        oauth.register(
            "idp", client_id=self.config.client_id, client_secret=secret or None,
            server_metadata_url=f"{self.config.issuer.rstrip('/')}/.well-known/openid-configuration",
            client_kwargs={"scope": self.config.scopes, "code_challenge_method": "S256",
                           # a public client (no secret) names itself in the token request's body
                           "token_endpoint_auth_method": "client_secret_basic" if secret else "none"},
        )
        self.client: Any = oauth.create_client("idp")

    async def start(self, request: Request) -> Response:
        request.session["terug"] = local_target(request.query_params.get("terug"))
        try:
            response: Response = await self.client.authorize_redirect(request, self.callback)
        except Exception as exc:  # the provider is down or its discovery document is wrong
            log.error("sign-in: the identity provider cannot be reached (%s)", type(exc).__name__)
            return pages_of(request).error(
                request, 503, "De aanmeldserver is niet bereikbaar. Probeer het over enkele minuten opnieuw; "
                              "blijft het zo, meld het de functioneel beheerder.")
        return response

    async def finish(self, request: Request) -> Response:
        from authlib.integrations.base_client import OAuthError

        pages = pages_of(request)
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            log.warning("sign-in refused by the identity provider or invalid: %s", exc.error)
            return pages.error(request, 403, "Aanmelden is niet gelukt. Probeer het opnieuw.")
        claims: Mapping[str, Any] = token.get("userinfo") or {}
        try:
            gebruiker = person_from_claims(claims, self.config)
        except NotAllowed as exc:
            return pages.error(request, http_status(exc), str(exc))
        terug = request.session.get("terug", "/")
        start_session(request, gebruiker)
        return RedirectResponse(terug if terug != "/" else home_of(gebruiker), status_code=303)


def person_from_claims(claims: Mapping[str, Any], oidc: OidcConfig) -> Gebruiker:
    """The person and their roles from the ID token: e-mail, name, and the groups (or app roles) claim."""
    email = str(claims.get(oidc.email_claim) or claims.get("preferred_username") or "").strip()
    naam = str(claims.get(oidc.name_claim) or email)
    groups = _as_list(claims.get(oidc.roles_claim))
    rollen = frozenset(
        rol for rol, group in ((Rol.KCC, oidc.role_kcc), (Rol.BEHEER, oidc.role_beheer)) if group and group in groups
    )
    prefix = oidc.afdeling_prefix
    afdelingen = tuple(sorted(g[len(prefix):] for g in groups if prefix and g.startswith(prefix) and g[len(prefix):]))
    if not email:
        raise NotAllowed(f"the identity provider sent no {oidc.email_claim} claim; kcc-mail needs it to know who "
                         "decides (ask the administrator to add it to the ID token)")
    return Gebruiker(email, naam, rollen, afdelingen)


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return []


async def sign_out(request: Request) -> Response:
    posted = CsrfOnly.bound(request, formdata=await request.form())
    if posted.validate():
        gebruiker = signed_in(request)
        if gebruiker is not None:
            log.info("medewerker=%s signed out", gebruiker.identificator)
        request.session.clear()
    return RedirectResponse("/aanmelden", status_code=303)


def routes(web: WebConfig) -> list[Route]:
    if web.auth == "dev":
        return [
            Route("/aanmelden", dev_form, methods=["GET"]),
            Route("/aanmelden", dev_sign_in, methods=["POST"]),
            Route("/afmelden", sign_out, methods=["POST"]),
        ]
    oidc = OidcSignIn(web)
    return [
        Route("/aanmelden", oidc.start, methods=["GET"]),
        Route("/aanmelden/terug", oidc.finish, methods=["GET"]),
        Route("/afmelden", sign_out, methods=["POST"]),
    ]
