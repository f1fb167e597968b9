"""One mail: what it says, what came with it and before it, who has it open, and the four decisions.

Each decision posts to the same use case the CLI calls, in its one transaction; a resubmitted form or a double
click meets the decision's own lock and is told the mail was decided (by this person: their decision stands).
"""

from __future__ import annotations

import email
import logging
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kcc.errors import Refused
from kcc.records.actor import ActorError, ActorRef, parse_actor
from kcc.usecases.access import Gebruiker, Rol, require_mail_access
from kcc.usecases.actors import known_actors
from kcc.usecases.claims import open_mail, release, require_claim
from kcc.usecases.history import history
from kcc.usecases.mail_files import IMAGE_TYPES, attachment_file, mail_html, raw_mail
from kcc.usecases.reply import NEVER_ANSWER_AUTOMATICALLY, Reply, preview, reply
from kcc.usecases.review import HandOff, NoFollowUp, dismiss, register
from kcc.usecases.review_queue import show_mail
from kcc.usecases.templates import survey_templates
from kcc.web.auth import page
from kcc.web.forms import Afwijzen, Doorzetten, actor_choices, handeling_choices
from kcc.web.pages import flash, pages_of
from kcc.web.sanitize import mail_html as sanitised
from kcc.web.security import frame_policy
from kcc.web.views.common import OUTBOX_NAMES, BadInput, call, kcc_app, path_id
from kcc.web.views.werkvoorraad import FLAG_NAMES, STATE_NAMES

log = logging.getLogger(__name__)

INLINE_IMAGE_SECONDS = 3600
"""How long the address of an inline image works: the sandboxed frame loads it without the session cookie."""


# --- the page ---------------------------------------------------------------------------------------------------


@page(Rol.KCC)
async def show(request: Request, gebruiker: Gebruiker) -> Response:
    return await _render(request, gebruiker, path_id(request))


async def _render(
    request: Request, gebruiker: Gebruiker, mail_id: int, *, status: int = 200, problem: str = "",
    reply_values: dict[str, str] | None = None, concept: dict[str, Any] | None = None,
    doorzetten: Doorzetten | None = None, afwijzen: Afwijzen | None = None,
) -> Response:
    app = kcc_app(request)
    web = request.app.state.web
    mail = await call(show_mail, app.uow(), mail_id)
    claim = await call(open_mail, app.uow(), mail_id, gebruiker, minutes=web.claim_minutes)
    earlier = await call(history, app.uow(), mail_id)
    templates = [t for t in await call(survey_templates, app.config) if t.info is not None]
    chosen = (reply_values or {}).get("sjabloon") or request.query_params.get("sjabloon") or "antwoord"
    template = next((t.info for t in templates if t.name == chosen), templates[0].info if templates else None)
    actors = await call(known_actors, app.uow())
    doorzetten = doorzetten or Doorzetten.bound(request)
    _choices(doorzetten, web.gevraagde_handelingen, actors)
    values = reply_values or {f"var_{k}": v for k, v in (template.defaults if template else ())}
    context = {
        "mail": mail, "claim": claim, "history": earlier, "templates": templates, "template": template,
        "reply_values": values, "concept": concept, "probleem": problem, "doorzetten": doorzetten,
        "afwijzen": afwijzen or Afwijzen.bound(request), "flag_names": FLAG_NAMES, "state_names": STATE_NAMES,
        "outbox_names": OUTBOX_NAMES,
        "needs_force": [f for f in NEVER_ANSWER_AUTOMATICALLY if f in mail["flags"]],
        "image_token": _signer(request).dumps(mail_id),
    }
    return pages_of(request).render(request, "mail.html", context, status)


def _choices(form: Doorzetten, handelingen: tuple[str, ...], actors: list[dict[str, Any]]) -> None:
    form.handeling.choices = handeling_choices(handelingen)
    form.toewijzen.choices = actor_choices(actors)


@page(Rol.KCC)
async def take_over(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    app = kcc_app(request)
    await call(open_mail, app.uow(), mail_id, gebruiker, minutes=request.app.state.web.claim_minutes, take_over=True)
    log.info("medewerker=%s took over mail=%s", gebruiker.identificator, mail_id)
    flash(request, "U heeft deze mail overgenomen.")
    return RedirectResponse(f"/mail/{mail_id}", status_code=303)


@page(Rol.KCC)
async def give_back(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    await call(release, kcc_app(request).uow(), mail_id, gebruiker)
    flash(request, f"Mail {mail_id} is vrijgegeven.")
    return RedirectResponse("/werkvoorraad", status_code=303)


# --- the mail's HTML, its images and its files ------------------------------------------------------------------


@page()
async def frame(request: Request, gebruiker: Gebruiker) -> Response:
    """The HTML part, sanitised, as its own document for the sandboxed iframe (never inside the page itself)."""
    mail_id = path_id(request)
    app = kcc_app(request)
    await call(require_mail_access, app.uow(), gebruiker, mail_id)
    found = await call(mail_html, app.uow(), mail_id)
    remote = request.query_params.get("extern") == "1"
    token = _signer(request).dumps(mail_id)

    def inline(content_id: str) -> str | None:
        number = found.inline.get(content_id)
        return None if number is None else f"/mail/{mail_id}/afbeelding/{number}?t={quote(token)}"

    cleaned = sanitised(found.html or "", inline_image=inline, remote_images=remote)
    document = (
        '<!doctype html><html lang="nl"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
        "<title>HTML-weergave</title></head><body>" + cleaned.html + "</body></html>"
    )
    headers = {"Content-Security-Policy": frame_policy(remote_images=remote), "Referrer-Policy": "no-referrer",
               "X-Blocked-Remote-Images": str(cleaned.remote_images_blocked)}
    return Response(document, media_type="text/html; charset=utf-8", headers=headers)


async def inline_image(request: Request) -> Response:
    """A cid: image of a mail, for the frame: its signed address is the permission (the frame sends no cookie)."""
    mail_id, number = path_id(request), path_id(request, "nummer")
    try:
        signed = _signer(request).loads(request.query_params.get("t", ""), max_age=INLINE_IMAGE_SECONDS)
    except BadSignature:
        return Response(status_code=403)
    if signed != mail_id:
        return Response(status_code=403)
    try:
        saved = await call(attachment_file, kcc_app(request).uow(), mail_id, str(number))
    except Refused:
        return Response(status_code=404)
    if saved.formaat.lower() not in IMAGE_TYPES:
        return Response(status_code=404)
    return Response(saved.data, media_type=saved.formaat.lower(),
                    headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": "inline"})


@page()
async def download_eml(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    app = kcc_app(request)
    await call(require_mail_access, app.uow(), gebruiker, mail_id)
    data = await call(raw_mail, app.uow(), mail_id)
    log.info("medewerker=%s downloaded mail=%s (.eml)", gebruiker.identificator, mail_id)
    return download(data, f"mail-{mail_id}.eml", "message/rfc822")


@page()
async def download_attachment(request: Request, gebruiker: Gebruiker) -> Response:
    mail_id = path_id(request)
    nummer = str(request.path_params["nummer"])
    app = kcc_app(request)
    await call(require_mail_access, app.uow(), gebruiker, mail_id)
    saved = await call(attachment_file, app.uow(), mail_id, nummer)
    log.info("medewerker=%s downloaded mail=%s attachment=%s", gebruiker.identificator, mail_id, nummer)
    return download(saved.data, saved.bestandsnaam or f"bijlage-{nummer}", "application/octet-stream")


def download(data: bytes, filename: str, media_type: str) -> Response:
    """Always a download, never shown inline: a mail's file is not the site's content."""
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)[:120] or "bestand"
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:200], safe='')}"
    return Response(data, media_type=media_type, headers={"Content-Disposition": disposition,
                                                          "Cache-Control": "private, no-store"})


def _signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(request.app.state.csrf_secret, salt="kcc-inline-image")


# --- the decisions ----------------------------------------------------------------------------------------------


@page(Rol.KCC)
async def answer(request: Request, gebruiker: Gebruiker) -> Response:
    """Beantwoorden: "voorbeeld" shows exactly what the customer will receive; "verzenden" decides."""
    mail_id = path_id(request)
    app = kcc_app(request)
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if k.startswith("var_") or k in ("sjabloon", "bevestig")}
    template = values.get("sjabloon", "antwoord")
    variables = tuple((k[4:], v.replace("\r\n", "\n")) for k, v in values.items() if k.startswith("var_"))
    follow_up = Reply(template=template, variables=variables, force=values.get("bevestig") == "ja")
    if form.get("actie") != "verzenden":
        try:
            composed = await call(preview, app.uow(), app.config, mail_id, follow_up)
        except Refused as exc:
            return await _render(request, gebruiker, mail_id, status=409, problem=str(exc), reply_values=values)
        return await _render(request, gebruiker, mail_id, reply_values=values, concept=_concept(composed.data))

    async def decide() -> str:
        result = await call(reply, app.uow(), app.config, mail_id, follow_up, gebruiker.actor)
        return f"Het antwoord is klaargezet voor verzending (referentienummer {result.referentienummer})."

    return await _decision(request, gebruiker, mail_id, decide, reply_values=values)


@page(Rol.KCC)
async def hand_off(request: Request, gebruiker: Gebruiker) -> Response:
    """Doorzetten: an interne taak for an afdeling or a medewerker."""
    mail_id = path_id(request)
    app = kcc_app(request)
    form = Doorzetten.bound(request, formdata=await request.form())
    _choices(form, request.app.state.web.gevraagde_handelingen, await call(known_actors, app.uow()))
    handeling = (form.andere_handeling.data or "").strip() or (form.handeling.data or "").strip()
    try:
        if not form.validate():
            raise BadInput("; ".join(e for errors in form.errors.values() for e in errors))
        if not handeling:
            raise BadInput("Kies een gevraagde handeling of vul er een in.")
        toewijzen = _assignee(form.toewijzen.data, form.andere_afdeling.data)
    except (BadInput, ActorError) as exc:
        return await _render(request, gebruiker, mail_id, status=400, problem=str(exc), doorzetten=form)
    follow_up = HandOff(handeling, (toewijzen,), (form.toelichting.data or "").strip())

    async def decide() -> str:
        result = await call(register, app.uow(), app.config, mail_id, follow_up, gebruiker.actor)
        return (f"Geregistreerd (referentienummer {result.referentienummer}) en doorgezet naar "
                f"{toewijzen.identificator}.")

    return await _decision(request, gebruiker, mail_id, decide, doorzetten=form)


def _assignee(choice: str | None, other: str | None) -> ActorRef:
    if other and other.strip():
        return parse_actor(f"afdeling:{other.strip()}")
    if not choice:
        raise BadInput("Kies aan wie de taak wordt toegewezen, of vul een afdeling in.")
    return parse_actor(choice)


@page(Rol.KCC)
async def register_only(request: Request, gebruiker: Gebruiker) -> Response:
    """Registreren zonder vervolg."""
    mail_id = path_id(request)
    app = kcc_app(request)

    async def decide() -> str:
        result = await call(register, app.uow(), app.config, mail_id, NoFollowUp(), gebruiker.actor)
        return f"Geregistreerd zonder vervolg (referentienummer {result.referentienummer})."

    return await _decision(request, gebruiker, mail_id, decide)


@page(Rol.KCC)
async def reject(request: Request, gebruiker: Gebruiker) -> Response:
    """Afwijzen: not a customer contact, the reason recorded."""
    mail_id = path_id(request)
    app = kcc_app(request)
    form = Afwijzen.bound(request, formdata=await request.form())
    if not form.validate():
        return await _render(request, gebruiker, mail_id, status=400, problem="Kies een reden.", afwijzen=form)

    async def decide() -> str:
        await call(dismiss, app.uow(), mail_id, form.reden.data, gebruiker.actor)
        return f"Mail {mail_id} is afgewezen ({form.reden.data.replace('_', ' ')})."

    return await _decision(request, gebruiker, mail_id, decide, afwijzen=form)


async def _decision(request: Request, gebruiker: Gebruiker, mail_id: int, decide: Any, **keep: Any) -> Response:
    """Run one decision; when it is refused, say why, and when it lost a race, say who won."""
    app = kcc_app(request)
    try:
        await call(require_claim, app.uow(), mail_id, gebruiker)
        said = await decide()
    except Refused as exc:
        mail = await call(show_mail, app.uow(), mail_id)
        if mail["state"] != "te_beoordelen":
            return _already_decided(request, gebruiker, mail)
        return await _render(request, gebruiker, mail_id, status=409, problem=str(exc), **keep)
    await call(release, app.uow(), mail_id, gebruiker)
    log.info("medewerker=%s decided on mail=%s", gebruiker.identificator, mail_id)
    flash(request, said)
    return RedirectResponse("/werkvoorraad", status_code=303)


def _already_decided(request: Request, gebruiker: Gebruiker, mail: dict[str, Any]) -> Response:
    who = mail.get("reviewedBy") or {}
    when = pages_of(request).templates.env.filters["tijd"](mail.get("reviewedAt"))
    state = STATE_NAMES.get(mail["state"], mail["state"])
    if who.get("identificator") == gebruiker.actor.identificator:
        flash(request, f"Deze mail was al {state} door u ({when}); er is niets dubbel gedaan.")
        return RedirectResponse(f"/mail/{mail['id']}", status_code=303)
    naam = who.get("naam") or "een collega"
    return pages_of(request).error(
        request, 409, f"Deze mail is al {state} door {naam} om {when}. Uw beslissing is niet uitgevoerd.")


def _concept(data: bytes) -> dict[str, Any]:
    """The composed message as the customer's mail program will show it: To, Subject, text and HTML."""
    message = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    return {
        "to": str(message.get("To", "")), "subject": str(message.get("Subject", "")),
        "from": str(message.get("From", "")),
        "text": text.get_content() if text is not None else "",
        "html": sanitised(html.get_content(), inline_image=lambda _cid: None, remote_images=False).html
        if html is not None else None,
    }


def routes() -> list[Route]:
    return [
        Route("/mail/{id:int}", show, methods=["GET"]),
        Route("/mail/{id:int}/overnemen", take_over, methods=["POST"]),
        Route("/mail/{id:int}/vrijgeven", give_back, methods=["POST"]),
        Route("/mail/{id:int}/html", frame, methods=["GET"]),
        Route("/mail/{id:int}/afbeelding/{nummer:int}", inline_image, methods=["GET"]),
        Route("/mail/{id:int}/eml", download_eml, methods=["GET"]),
        Route("/mail/{id:int}/bijlage/{nummer}", download_attachment, methods=["GET"]),
        Route("/mail/{id:int}/beantwoorden", answer, methods=["POST"]),
        Route("/mail/{id:int}/doorzetten", hand_off, methods=["POST"]),
        Route("/mail/{id:int}/registreren", register_only, methods=["POST"]),
        Route("/mail/{id:int}/afwijzen", reject, methods=["POST"]),
    ]
