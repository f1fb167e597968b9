"""For the functioneel beheerder: the health checks of `kcc-mail status`, the outbox (with Opnieuw verzenden and
Markeer als verzonden for an uncertain reply), the export to the registers (backlog, refusals, Opnieuw proberen),
and the quarantine (show, release, dismiss, download)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kcc.usecases.access import Gebruiker, Rol
from kcc.usecases.export import export_status, list_jobs, retry_failed
from kcc.usecases.mail_files import raw_mail
from kcc.usecases.outbox import list_messages, mark_sent, resend
from kcc.usecases.paging import Page
from kcc.usecases.quarantine import dismiss_quarantined, list_quarantine, release, show_quarantined
from kcc.usecases.status import check_status
from kcc.web.auth import page
from kcc.web.forms import Afwijzen
from kcc.web.pages import flash, pages_of
from kcc.web.views.common import EXPORT_NAMES, OUTBOX_NAMES, BadInput, call, kcc_app, number, path_id
from kcc.web.views.mail import download
from store.states import ExportStatus, OutboxStatus

log = logging.getLogger(__name__)



@page(Rol.BEHEER)
async def status(request: Request, gebruiker: Gebruiker) -> Response:
    app = kcc_app(request)
    report = await call(check_status, app.uow(), app.config)
    return pages_of(request).render(request, "beheer.html", {"report": report})


async def status_list(request: Request, list_rows: Callable[..., Page[Any]], statuses: type[StrEnum],
                      attention: tuple[str, str]) -> dict[str, Any]:
    """A list by status, paged, or (the default) what needs a person: the rows of the two `attention` statuses."""
    wanted = request.query_params.get("status") or "aandacht"
    if wanted not in ("aandacht", "alle", *statuses):
        raise BadInput(f"status {wanted[:20]!r} bestaat niet; kies aandacht, alle of een van {', '.join(statuses)}")
    size = request.app.state.web.page_size
    pagina = number(request.query_params.get("pagina"), "pagina", 1) or 1
    app = kcc_app(request)
    if wanted == "aandacht":
        rows = [row for status in attention for row in await call(list_rows, app.uow(), status=status, limit=size)]
        total = len(rows)
    else:
        found = await call(list_rows, app.uow(), status=None if wanted == "alle" else wanted, limit=size,
                           offset=(pagina - 1) * size)
        rows, total = list(found), found.total
    return {"rows": rows, "wanted": wanted, "total": total, "pagina": pagina, "paginas": max(1, -(-total // size)),
            "statuses": list(statuses)}


@page(Rol.BEHEER)
async def outbox(request: Request, gebruiker: Gebruiker) -> Response:
    """Uncertain and failed replies first: they need a person."""
    context = await status_list(request, list_messages, OutboxStatus, (OutboxStatus.UNCERTAIN, OutboxStatus.FAILED))
    return pages_of(request).render(request, "outbox.html", {**context, "names": OUTBOX_NAMES})


@page(Rol.BEHEER)
async def outbox_resend(request: Request, gebruiker: Gebruiker) -> Response:
    outbox_id = path_id(request)
    app = kcc_app(request)
    await call(resend, app.uow(), outbox_id, str(gebruiker.actor),
               deliver_for=timedelta(hours=app.config.replies.deliver_until_hours))
    log.info("medewerker=%s queued outbox=%s again", gebruiker.identificator, outbox_id)
    flash(request, f"Bericht {outbox_id} wordt opnieuw verzonden, met dezelfde inhoud en Message-ID.")
    return RedirectResponse("/beheer/outbox", status_code=303)


@page(Rol.BEHEER)
async def outbox_mark_sent(request: Request, gebruiker: Gebruiker) -> Response:
    outbox_id = path_id(request)
    await call(mark_sent, kcc_app(request).uow(), outbox_id, str(gebruiker.actor))
    log.info("medewerker=%s marked outbox=%s sent", gebruiker.identificator, outbox_id)
    flash(request, f"Bericht {outbox_id} is gemarkeerd als verzonden.")
    return RedirectResponse("/beheer/outbox", status_code=303)


@page(Rol.BEHEER)
async def export(request: Request, gebruiker: Gebruiker) -> Response:
    """The export to Open Klant: the backlog, and what the register refused in its own words (to fix, then retry);
    refused jobs first, then those waiting to be tried again."""
    context = await status_list(request, list_jobs, ExportStatus, (ExportStatus.FAILED, ExportStatus.RETRY))
    app = kcc_app(request)
    backlog = await call(export_status, app.uow())
    return pages_of(request).render(request, "export.html", {
        **context, "names": EXPORT_NAMES, "backlog": backlog, "enabled": app.config.openklant.enabled})


@page(Rol.BEHEER)
async def export_retry(request: Request, gebruiker: Gebruiker) -> Response:
    """The refused jobs (all, or one klantcontact's) tried again at the exporter's next round."""
    form = await request.form()
    klantcontact = form.get("klantcontact")
    klantcontact_id = number(str(klantcontact), "klantcontact") if klantcontact else None
    count = await call(retry_failed, kcc_app(request).uow(), klantcontact_id=klantcontact_id)
    log.info("medewerker=%s retried %s failed export jobs (klantcontact=%s)", gebruiker.identificator, count,
             klantcontact_id or "all")
    flash(request, f"{count} geweigerde {'opdracht wordt' if count == 1 else 'opdrachten worden'} opnieuw "
                   "naar het register gestuurd.")
    return RedirectResponse("/beheer/export", status_code=303)


@page(Rol.BEHEER)
async def quarantine(request: Request, gebruiker: Gebruiker) -> Response:
    found = await call(list_quarantine, kcc_app(request).uow(), reason=request.query_params.get("reden") or None,
                       limit=request.app.state.web.page_size * 4)
    return pages_of(request).render(request, "quarantaine.html", {"found": found})


@page(Rol.BEHEER)
async def quarantined(request: Request, gebruiker: Gebruiker) -> Response:
    mail = await call(show_quarantined, kcc_app(request).uow(), path_id(request))
    return pages_of(request).render(request, "quarantaine_mail.html",
                                    {"mail": mail, "afwijzen": Afwijzen.bound(request)})


@page(Rol.BEHEER)
async def quarantine_release(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    await call(release, kcc_app(request).uow(), mail_id, gebruiker.actor)
    flash(request, f"Mail {mail_id} staat nu in de werkvoorraad.")
    return RedirectResponse("/beheer/quarantaine", status_code=303)


@page(Rol.BEHEER)
async def quarantine_dismiss(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    form = Afwijzen.bound(request, formdata=await request.form())
    if not form.validate():
        return pages_of(request).error(request, 400, "Kies een reden om de mail af te wijzen.")
    await call(dismiss_quarantined, kcc_app(request).uow(), mail_id, form.reden.data, gebruiker.actor)
    flash(request, f"Mail {mail_id} is afgewezen.")
    return RedirectResponse("/beheer/quarantaine", status_code=303)


@page(Rol.BEHEER)
async def quarantine_download(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    data = await call(raw_mail, kcc_app(request).uow(), mail_id)
    log.info("medewerker=%s downloaded quarantined mail=%s", gebruiker.identificator, mail_id)
    return download(data, f"quarantaine-{mail_id}.eml", "message/rfc822")


def routes() -> list[Route]:
    return [
        Route("/beheer", status, methods=["GET"]),
        Route("/beheer/outbox", outbox, methods=["GET"]),
        Route("/beheer/outbox/{id:int}/opnieuw", outbox_resend, methods=["POST"]),
        Route("/beheer/outbox/{id:int}/verzonden", outbox_mark_sent, methods=["POST"]),
        Route("/beheer/export", export, methods=["GET"]),
        Route("/beheer/export/opnieuw", export_retry, methods=["POST"]),
        Route("/beheer/quarantaine", quarantine, methods=["GET"]),
        Route("/beheer/quarantaine/{id:int}", quarantined, methods=["GET"]),
        Route("/beheer/quarantaine/{id:int}/vrijgeven", quarantine_release, methods=["POST"]),
        Route("/beheer/quarantaine/{id:int}/afwijzen", quarantine_dismiss, methods=["POST"]),
        Route("/beheer/quarantaine/{id:int}/eml", quarantine_download, methods=["GET"]),
    ]
