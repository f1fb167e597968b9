"""Werkvoorraad e-mail: the waiting mails, oldest first, 50 a page, filtered and searched; refreshed live."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kcc.usecases.access import Gebruiker, Rol
from kcc.usecases.werkvoorraad import FILTER_FLAGS, BadFilter, WerkvoorraadFilter, werkvoorraad
from kcc.web.auth import page
from kcc.web.pages import pages_of
from kcc.web.views.common import BadInput, call, day, kcc_app, number
from store.states import MailState

FLAG_NAMES = {
    "auto_reply": "automatisch antwoord", "bounce": "onbestelbaar", "bulk": "massamail",
    "feedback_report": "klachtrapport", "own_loop": "eigen mail terug", "spam": "spam", "vervolg": "vervolg",
}
STATE_NAMES = {
    MailState.TE_BEOORDELEN: "te beoordelen", MailState.GEREGISTREERD: "geregistreerd",
    MailState.AFGEWEZEN: "afgewezen", MailState.QUARANTAINE: "quarantaine",
}


@page(Rol.KCC)
async def index(request: Request, gebruiker: Gebruiker) -> Response:
    query = request.query_params
    app = kcc_app(request)
    web = request.app.state.web
    problem = ""
    try:
        where = WerkvoorraadFilter(
            state=query.get("status") or MailState.TE_BEOORDELEN, mailbox=query.get("mailbox") or None,
            flag=query.get("kenmerk") or None, van=day(query.get("van"), "van"), tot=day(query.get("tot"), "tot"),
            zoek=(query.get("zoek") or "")[:200], zone=request.app.state.zone,
        )
        where.check()
    except (BadFilter, BadInput) as exc:
        problem, where = str(exc), WerkvoorraadFilter(zone=request.app.state.zone)
    pagina = number(query.get("pagina"), "pagina", 1) or 1
    result = await call(werkvoorraad, app.uow(), where, gebruiker=gebruiker, page=pagina, page_size=web.page_size,
                        mailboxes=sorted(m.name for m in app.config.mailboxes))
    pages = max(1, -(-result.mails.total // web.page_size))
    context = {
        "result": result, "where": where, "pagina": min(pagina, pages), "paginas": pages, "probleem": problem,
        "flags": [(flag, FLAG_NAMES.get(flag, flag)) for flag in FILTER_FLAGS], "flag_names": FLAG_NAMES,
        "states": [(s.value, STATE_NAMES[s]) for s in MailState],
        "query": {k: v for k, v in query.items() if k != "deel"},
    }
    name = "_werkvoorraad_lijst.html" if query.get("deel") == "lijst" else "werkvoorraad.html"
    return pages_of(request).render(request, name, context)


def routes() -> list[Route]:
    return [Route("/werkvoorraad", index, methods=["GET"])]
