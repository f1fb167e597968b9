"""Klantcontacten: found by referentienummer, address or subject, and one klantcontact with everything attached."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kcc.usecases.access import Gebruiker, Rol
from kcc.usecases.contacts import list_contacts, show_contact
from kcc.usecases.mail_files import mail_of_klantcontact
from kcc.web.auth import page
from kcc.web.pages import pages_of
from kcc.web.views.common import call, kcc_app, number


@page(Rol.KCC)
async def index(request: Request, gebruiker: Gebruiker) -> Response:
    zoek = (request.query_params.get("zoek") or "")[:200]
    size = request.app.state.web.page_size
    pagina = number(request.query_params.get("pagina"), "pagina", 1) or 1
    found = await call(list_contacts, kcc_app(request).uow(), zoek=zoek, limit=size, offset=(pagina - 1) * size)
    context = {"contacten": found, "zoek": zoek, "pagina": pagina, "paginas": max(1, -(-found.total // size))}
    return pages_of(request).render(request, "klantcontacten.html", context)


@page(Rol.KCC)
async def show(request: Request, gebruiker: Gebruiker) -> Response:
    app = kcc_app(request)
    contact = await call(show_contact, app.uow(), str(request.path_params["ref"]))
    mail_id = await call(mail_of_klantcontact, app.uow(), contact["id"])
    return pages_of(request).render(request, "klantcontact.html", {"contact": contact, "mail_id": mail_id})


def routes() -> list[Route]:
    return [
        Route("/klantcontacten", index, methods=["GET"]),
        Route("/klantcontact/{ref}", show, methods=["GET"]),
    ]
