"""Interne taken for the colleagues: Mijn taken and Taken van mijn afdeling (F3839), one task with its whole
klantcontact, mail and attachments (F8618), Afronden (F5241), Heropenen, Doorsturen and Retour KCC (C6114)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kcc.records.actor import ActorError, ActorRef, parse_actor
from kcc.usecases import tasks
from kcc.usecases.access import Gebruiker, Rol, require_taak_access
from kcc.usecases.actors import known_actors
from kcc.usecases.mail_files import mail_of_klantcontact
from kcc.usecases.review_queue import show_mail
from kcc.web.auth import page
from kcc.web.forms import Doorsturen, actor_choices
from kcc.web.pages import flash, pages_of
from kcc.web.views.common import BadInput, call, kcc_app, number
from kcc.web.views.werkvoorraad import FLAG_NAMES, STATE_NAMES
from store.states import TaakStatus

log = logging.getLogger(__name__)

TABS = {"mijn": "Mijn taken", "afdeling": "Taken van mijn afdeling", "alle": "Alle taken"}


@page(taken=True)
async def index(request: Request, gebruiker: Gebruiker) -> Response:
    query = request.query_params
    tabs = [t for t in TABS if t != "afdeling" or gebruiker.afdelingen]
    if not gebruiker.heeft(Rol.KCC):
        tabs = [t for t in tabs if t != "alle"]
    asked = query.get("tab") or ""
    tab = asked if asked in tabs else tabs[0]
    status = TaakStatus.VERWERKT if query.get("status") == "verwerkt" else TaakStatus.TE_VERWERKEN
    assigned: list[ActorRef] | None = {
        "mijn": [gebruiker.actor], "afdeling": list(gebruiker.afdeling_actoren), "alle": None,
    }[tab]
    size = request.app.state.web.page_size
    pagina = number(query.get("pagina"), "pagina", 1) or 1
    found = await call(tasks.search, kcc_app(request).uow(), status=status, assigned=assigned, limit=size,
                       offset=(pagina - 1) * size)
    context = {"taken": found, "tab": tab, "tabs": [(t, TABS[t]) for t in tabs], "status": status,
               "pagina": pagina, "paginas": max(1, -(-found.total // size))}
    return pages_of(request).render(request, "taken.html", context)


async def _taak(request: Request, gebruiker: Gebruiker) -> dict[str, Any]:
    taak = await call(tasks.show, kcc_app(request).uow(), str(request.path_params["ref"]))
    require_taak_access(gebruiker, taak)
    return taak


@page(taken=True)
async def show(request: Request, gebruiker: Gebruiker) -> Response:
    return await _show(request, gebruiker)


async def _show(request: Request, gebruiker: Gebruiker, *, form: Doorsturen | None = None, problem: str = "",
                status: int = 200) -> Response:
    taak = await _taak(request, gebruiker)
    app = kcc_app(request)
    contact = taak["aanleidinggevendKlantcontact"]
    mail_id = await call(mail_of_klantcontact, app.uow(), contact["id"])
    form = form or Doorsturen.bound(request, handeling=taak["gevraagdeHandeling"], toelichting=taak["toelichting"])
    await _choices(request, form)
    context = {"taak": taak, "contact": contact, "mail_id": mail_id, "form": form, "probleem": problem,
               "kcc_afdeling": request.app.state.web.kcc_afdeling}
    return pages_of(request).render(request, "taak.html", context, status)


async def _choices(request: Request, form: Doorsturen) -> None:
    actors = await call(known_actors, kcc_app(request).uow())
    form.toewijzen.choices = actor_choices(actors)


@page(taken=True)
async def complete(request: Request, gebruiker: Gebruiker) -> Response:
    taak = await _taak(request, gebruiker)
    await call(tasks.complete, kcc_app(request).uow(), taak["uuid"], gebruiker.actor)
    log.info("medewerker=%s completed taak=%s", gebruiker.identificator, taak["id"])
    flash(request, f"Taak \u201c{taak['gevraagdeHandeling']}\u201d is afgerond.")
    return RedirectResponse("/taken", status_code=303)


@page(taken=True)
async def reopen(request: Request, gebruiker: Gebruiker) -> Response:
    taak = await _taak(request, gebruiker)
    await call(tasks.reopen, kcc_app(request).uow(), taak["uuid"], gebruiker.actor)
    log.info("medewerker=%s reopened taak=%s", gebruiker.identificator, taak["id"])
    flash(request, "De taak staat weer open.")
    return RedirectResponse(f"/taak/{taak['uuid']}", status_code=303)


@page(taken=True)
async def forward(request: Request, gebruiker: Gebruiker) -> Response:
    """Doorsturen: a new task for another actor, the original verwerkt, in one transaction."""
    taak = await _taak(request, gebruiker)
    form = Doorsturen.bound(request, formdata=await request.form())
    await _choices(request, form)
    try:
        if not form.validate():
            raise BadInput("; ".join(e for errors in form.errors.values() for e in errors))
        if (form.andere_afdeling.data or "").strip():
            naar = parse_actor(f"afdeling:{form.andere_afdeling.data.strip()}")
        elif form.toewijzen.data:
            naar = parse_actor(form.toewijzen.data)
        else:
            raise BadInput("Kies naar wie de taak gaat, of vul een afdeling in.")
    except (BadInput, ActorError) as exc:
        return await _show(request, gebruiker, form=form, problem=str(exc), status=400)
    handeling = (form.handeling.data or "").strip() or None
    toelichting = form.toelichting.data if form.toelichting.data is not None else None
    nieuw = await call(tasks.reroute, kcc_app(request).uow(), taak["uuid"], [naar], gebruiker.actor,
                       gevraagde_handeling=handeling, toelichting=toelichting)
    log.info("medewerker=%s rerouted taak=%s to taak=%s", gebruiker.identificator, taak["id"], nieuw)
    flash(request, f"De taak is doorgestuurd naar {naar.identificator}.")
    return RedirectResponse("/taken", status_code=303)


@page(taken=True)
async def back_to_kcc(request: Request, gebruiker: Gebruiker) -> Response:
    """Retour KCC: the KCC routes it again; the toelichting stays."""
    taak = await _taak(request, gebruiker)
    kcc = parse_actor(f"afdeling:{request.app.state.web.kcc_afdeling}")
    await call(tasks.reroute, kcc_app(request).uow(), taak["uuid"], [kcc], gebruiker.actor,
               gevraagde_handeling=tasks.OPNIEUW_ROUTEREN)
    log.info("medewerker=%s returned taak=%s to the KCC", gebruiker.identificator, taak["id"])
    flash(request, "De taak is teruggestuurd naar het KCC.")
    return RedirectResponse("/taken", status_code=303)


@page(taken=True)
async def task_mail(request: Request, gebruiker: Gebruiker) -> Response:
    """F8618: the mail behind the task, with its attachments, to read (the decisions are the KCC's)."""
    taak = await _taak(request, gebruiker)
    app = kcc_app(request)
    mail_id = await call(mail_of_klantcontact, app.uow(), taak["aanleidinggevendKlantcontact"]["id"])
    if mail_id is None:
        raise BadInput("deze taak gaat niet over een ontvangen mail")
    mail = await call(show_mail, app.uow(), mail_id)
    context: dict[str, Any] = {
        "mail": mail, "claim": None, "history": [], "alleen_lezen": True, "terug": f"/taak/{taak['uuid']}",
        "flag_names": FLAG_NAMES, "state_names": STATE_NAMES,
    }
    return pages_of(request).render(request, "mail.html", context)


def routes() -> list[Route]:
    return [
        Route("/taken", index, methods=["GET"]),
        Route("/taak/{ref}", show, methods=["GET"]),
        Route("/taak/{ref}/mail", task_mail, methods=["GET"]),
        Route("/taak/{ref}/afronden", complete, methods=["POST"]),
        Route("/taak/{ref}/heropenen", reopen, methods=["POST"]),
        Route("/taak/{ref}/doorsturen", forward, methods=["POST"]),
        Route("/taak/{ref}/retour-kcc", back_to_kcc, methods=["POST"]),
    ]
