"""The web screen over HTTP, on SQLite and PostgreSQL: who gets in where, the tokens, the headers, the decisions.

The screen runs for real (uvicorn on loopback) over the test database; people sign in through the development
sign-in, which is what a test on one machine may use (the OIDC sign-in has its own browser test).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, update
from support.mails import customer_mail, queue_mail
from support.outbox import queue_reply
from support.web import Person, Site, alerts, serving, token

from ingest.parse import ParsedMail
from kcc.bootstrap import App
from kcc.records.actor import medewerker, parse_actor
from kcc.usecases.review import HandOff, register
from store.export import ExportJob
from store.klantinteracties import Klantcontact
from store.mail import InboundMail
from store.outbox import OutboxMessage


def broken_parser(raw: bytes, received_at: object) -> ParsedMail:
    raise KeyError("boundary")


@dataclass
class World:
    site: Site
    mail: int
    quarantined: int
    outbox: int
    taak: str
    kcc: Person
    beheer: Person
    vergunningen: Person
    burgerzaken: Person
    niemand: Person


@pytest.fixture
def world(app: App) -> Iterator[World]:
    mail = queue_mail(app, customer_mail("Vraag over parkeren"))
    quarantined = queue_mail(app, customer_mail("Kapot"), parser=broken_parser)
    outbox = queue_reply(app.uow()).outbox_id
    with app.uow() as uow:
        uow.session.execute(update(OutboxMessage).where(OutboxMessage.id == outbox).values(status="uncertain"))
        uow.commit()
    handed = queue_mail(app, customer_mail("Vergunning aanvragen"))
    result = register(app.uow(), app.config, handed,
                      HandOff("Terugbellen", (parse_actor("afdeling:Vergunningen"),), "Bel 06-12345678"),
                      medewerker("anna@gemeente.nl"))
    from kcc.usecases.tasks import show

    taak = show(app.uow(), result.interne_taak_id or 0)["uuid"]
    with serving(app) as site:
        people = dict(
            kcc=Person(site, "Anna", "anna@gemeente.nl", kcc=True),
            beheer=Person(site, "Bea", "bea@gemeente.nl", beheer=True),
            vergunningen=Person(site, "Vera", "vera@gemeente.nl", afdelingen="Vergunningen"),
            burgerzaken=Person(site, "Bart", "bart@gemeente.nl", afdelingen="Burgerzaken"),
            niemand=Person(site, "Nina", "nina@gemeente.nl"),
        )
        yield World(site, mail, quarantined, outbox, taak, **people)
        for person in people.values():
            person.close()


def pages(world: World) -> dict[str, set[str]]:
    """Every GET page and who may open it."""
    kcc, beheer, afdeling = {"kcc"}, {"beheer"}, {"kcc", "vergunningen"}
    return {
        "/werkvoorraad": kcc, f"/mail/{world.mail}": kcc, "/klantcontacten": kcc,
        f"/mail/{world.mail}/eml": kcc | beheer, f"/mail/{world.mail}/html": kcc | beheer,
        "/taken": {"kcc", "vergunningen", "burgerzaken"}, f"/taak/{world.taak}": afdeling,
        f"/taak/{world.taak}/mail": afdeling,
        "/beheer": beheer, "/beheer/outbox": beheer, "/beheer/quarantaine": beheer, "/beheer/export": beheer,
        f"/beheer/quarantaine/{world.quarantined}": beheer, f"/beheer/quarantaine/{world.quarantined}/eml": beheer,
    }


def actions(world: World) -> dict[str, set[str]]:
    """Every POST and who may do it (posted here only by those who may not, so nothing changes)."""
    m, t, o, q = world.mail, world.taak, world.outbox, world.quarantined
    return {
        f"/mail/{m}/beantwoorden": {"kcc"}, f"/mail/{m}/doorzetten": {"kcc"}, f"/mail/{m}/registreren": {"kcc"},
        f"/mail/{m}/afwijzen": {"kcc"}, f"/mail/{m}/overnemen": {"kcc"}, f"/mail/{m}/vrijgeven": {"kcc"},
        f"/taak/{t}/afronden": {"kcc", "vergunningen"}, f"/taak/{t}/heropenen": {"kcc", "vergunningen"},
        f"/taak/{t}/doorsturen": {"kcc", "vergunningen"}, f"/taak/{t}/retour-kcc": {"kcc", "vergunningen"},
        f"/beheer/outbox/{o}/opnieuw": {"beheer"}, f"/beheer/outbox/{o}/verzonden": {"beheer"},
        f"/beheer/quarantaine/{q}/vrijgeven": {"beheer"}, f"/beheer/quarantaine/{q}/afwijzen": {"beheer"},
        "/beheer/export/opnieuw": {"beheer"},
    }


def test_each_role_reaches_its_own_screens_and_gets_403_on_every_other(world: World, app: App) -> None:
    people = {"kcc": world.kcc, "beheer": world.beheer, "vergunningen": world.vergunningen,
              "burgerzaken": world.burgerzaken, "niemand": world.niemand}
    for path, allowed in pages(world).items():
        for name, person in people.items():
            status = person.get(path).status_code
            assert status == (200 if name in allowed else 403), f"{name} GET {path}: {status}"
    before = counts(app)
    for path, allowed in actions(world).items():
        for name, person in people.items():
            if name in allowed:
                continue
            response = person.client.post(path, data={"csrf_token": token(person.get("/account").text)})
            assert response.status_code == 403, f"{name} POST {path}: {response.status_code}"
    assert counts(app) == before, "no refused request changed anything"


def counts(app: App) -> tuple[int, int, list[str]]:
    with app.uow() as uow:
        session = uow.session
        return (session.scalar(select(func.count()).select_from(Klantcontact)) or 0,
                session.scalar(select(func.count()).select_from(InboundMail).where(InboundMail.state ==
                                                                                    "te_beoordelen")) or 0,
                sorted(session.scalars(select(OutboxMessage.status))))


def test_without_a_sign_in_a_page_asks_for_one_and_a_post_is_refused(world: World, app: App) -> None:
    import httpx

    anonymous = httpx.Client(base_url=world.site.url, follow_redirects=False)
    page = anonymous.get(f"/mail/{world.mail}?sjabloon=antwoord")
    assert page.status_code == 303
    assert page.headers["location"] == f"/aanmelden?terug=/mail/{world.mail}%3Fsjabloon%3Dantwoord"
    assert anonymous.post(f"/mail/{world.mail}/registreren", data={}).status_code == 401
    assert anonymous.get("/gezond").text == "ok"
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        form = anonymous.get("/aanmelden")
        signed = anonymous.post("/aanmelden", data={"csrf_token": token(form.text), "naam": "Anna",
                                                    "email": "anna@gemeente.nl", "kcc": "y", "terug": target})
        assert signed.headers["location"] == "/werkvoorraad", f"{target} is not a place on this site"


def test_a_post_without_its_token_is_refused_and_changes_nothing(world: World, app: App) -> None:
    before = counts(app)
    forged = world.kcc.client.post(f"/mail/{world.mail}/registreren", data={})
    assert forged.status_code == 403 and "Dit formulier is verlopen of komt niet van deze site" in forged.text
    wrong = world.kcc.client.post(f"/mail/{world.mail}/registreren", data={"csrf_token": "20991231000000##00"})
    assert wrong.status_code == 403
    other_session = token(world.beheer.get("/account").text)
    assert world.kcc.client.post(f"/mail/{world.mail}/registreren",
                                 data={"csrf_token": other_session}).status_code == 403
    assert counts(app) == before


def test_every_page_carries_the_strict_headers_and_a_private_session_cookie(world: World) -> None:
    import httpx

    response = world.kcc.get("/werkvoorraad")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    fresh = httpx.Client(base_url=world.site.url)
    cookie = fresh.get("/aanmelden").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie  # plain http on loopback
    assert 'src="/static/kcc.js"' in response.text and "<script>" not in response.text


def test_the_mail_html_is_a_sandboxed_document_without_script(world: World, app: App) -> None:
    hostile = (
        b"From: Karel <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: HTML\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p onclick=\"alert(1)\">Beste KCC</p><script>alert(2)</script>"
        b"<img src=\"https://tracker.example/pixel.gif\"><a href=\"javascript:alert(3)\">klik</a>\r\n"
    )
    mail_id = queue_mail(app, hostile)
    page = world.kcc.get(f"/mail/{mail_id}")
    assert re.search(r'<iframe[^>]+sandbox="allow-popups allow-popups-to-escape-sandbox"[^>]+src="/mail/'
                     rf'{mail_id}/html"', page.text)
    frame = world.kcc.get(f"/mail/{mail_id}/html")
    policy = frame.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy and "img-src 'self' data:;" in policy
    body = frame.text
    assert "Beste KCC" in body and "<script" not in body and "onclick" not in body and "javascript:" not in body
    assert "tracker.example" not in body and frame.headers["x-blocked-remote-images"] == "1"
    shown = world.kcc.get(f"/mail/{mail_id}/html?extern=1")
    assert "tracker.example" in shown.text and "https:" in shown.headers["content-security-policy"]


def test_attachments_and_the_original_are_downloads_under_their_own_name(world: World, app: App) -> None:
    from support.mails import with_attachment

    mail_id = queue_mail(app, with_attachment(filename="foto van de container.jpg"))
    file = world.kcc.get(f"/mail/{mail_id}/bijlage/1")
    assert file.status_code == 200 and file.headers["content-type"] == "application/octet-stream"
    assert file.headers["content-disposition"] == (
        "attachment; filename=\"foto_van_de_container.jpg\"; filename*=UTF-8''foto%20van%20de%20container.jpg")
    original = world.kcc.get(f"/mail/{mail_id}/eml")
    assert original.headers["content-disposition"].startswith("attachment;")
    assert original.content.startswith(b"From: Karel van der Wittewiek")
    assert world.kcc.get(f"/mail/{mail_id}/bijlage/9").status_code == 404


def test_a_double_submit_decides_once_and_a_lost_race_names_the_winner(world: World, app: App) -> None:
    page = world.kcc.get(f"/mail/{world.mail}")
    form = {"csrf_token": token(page.text)}
    first = world.kcc.client.post(f"/mail/{world.mail}/registreren", data=form)
    again = world.kcc.client.post(f"/mail/{world.mail}/registreren", data=form)
    assert (first.status_code, first.headers["location"]) == (303, "/werkvoorraad")
    assert (again.status_code, again.headers["location"]) == (303, f"/mail/{world.mail}")
    assert any("was al geregistreerd door u" in text for text in alerts(world.kcc.get(again.headers["location"])
                                                                          .text))
    with app.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Klantcontact).join(
            InboundMail, InboundMail.klantcontact_id == Klantcontact.id).where(InboundMail.id == world.mail)) == 1

    contested = queue_mail(app, customer_mail("Wie is eerst?"))
    bert = Person(world.site, "Bert", "bert@gemeente.nl", kcc=True)
    tokens = {p: token(p.get(f"/mail/{contested}").text) for p in (world.kcc, bert)}
    world.kcc.client.post(f"/mail/{contested}/overnemen", data={"csrf_token": tokens[world.kcc]})
    bert.client.post(f"/mail/{contested}/overnemen", data={"csrf_token": tokens[bert]})  # Bert takes it over
    outcomes: dict[str, int] = {}

    def decide(person: Person, path: str, data: dict[str, str]) -> None:
        outcomes[person.email] = person.client.post(path, data={"csrf_token": tokens[person], **data}).status_code

    threads = [threading.Thread(target=decide, args=(bert, f"/mail/{contested}/afwijzen", {"reden": "spam"})),
               threading.Thread(target=decide, args=(world.kcc, f"/mail/{contested}/registreren", {}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes["bert@gemeente.nl"] == 303, "the one who has the mail decides"
    assert outcomes["anna@gemeente.nl"] == 409
    lost = world.kcc.client.post(f"/mail/{contested}/registreren", data={"csrf_token": tokens[world.kcc]})
    assert lost.status_code == 409 and "Deze mail is al afgewezen door Bert om" in lost.text
    bert.close()


def test_opening_a_mail_claims_it_and_a_colleague_sees_who_and_can_take_over(world: World, app: App) -> None:
    bert = Person(world.site, "Bert Jansen", "bert@gemeente.nl", kcc=True)
    mine = world.kcc.get(f"/mail/{world.mail}")
    assert any(text.startswith("U heeft deze mail in behandeling (tot ") for text in alerts(mine.text))
    theirs = bert.get(f"/mail/{world.mail}")
    (claim,) = [text for text in alerts(theirs.text) if "In behandeling bij" in text]
    assert re.match(r"In behandeling bij Anna, sinds \d\d:\d\d\. Overnemen$", claim)
    listed = bert.get("/werkvoorraad").text
    assert re.search(r"Bij Anna, sinds \d\d:\d\d", listed)
    refused = bert.client.post(f"/mail/{world.mail}/registreren", data={"csrf_token": token(theirs.text)})
    assert refused.status_code == 409 and "in behandeling bij Anna" in refused.text
    taken = bert.client.post(f"/mail/{world.mail}/overnemen", data={"csrf_token": token(theirs.text)})
    assert taken.status_code == 303
    assert any("In behandeling bij Bert Jansen" in text for text in alerts(world.kcc.get(f"/mail/{world.mail}")
                                                                             .text))
    bert.close()


def test_a_refused_export_shows_the_registers_own_words_and_the_beheerder_sends_it_again(world: World, app: App
                                                                                          ) -> None:
    refusal = ("POST /maak-klantcontact: refused with 400: referentienummer: Er bestaat al een klantcontact met "
               "eenzelfde referentienummer <b>KM00000001</b>. Fix the cause (configuration or data), then run "
               "`kcc-mail export retry`")
    with app.uow() as uow:
        job = uow.session.scalars(select(ExportJob).order_by(ExportJob.id.desc()).limit(1)).one()  # this world's
        uow.session.execute(update(ExportJob).where(ExportJob.status == "failed").values(status="done"))
        uow.session.execute(update(ExportJob).where(ExportJob.id == job.id).values(status="failed", attempts=1,
                                                                                  last_error=refusal))
        number = uow.session.scalar(select(Klantcontact.referentienummer).where(
            Klantcontact.id == job.klantcontact_id))
        uow.commit()
    page = world.beheer.get("/beheer/export").text
    assert "De export staat uit" in page, "the export is off here; the page says so, and keeps the jobs"
    assert "Er bestaat al een klantcontact met eenzelfde referentienummer &lt;b&gt;KM00000001&lt;/b&gt;" in page
    assert f"<td class=\"utrecht-table__cell\">{number}</td>" in page and "geweigerd" in page
    retried = world.beheer.post("/beheer/export/opnieuw", {"klantcontact": str(job.klantcontact_id)},
                                from_page="/beheer/export")
    assert retried.status_code == 303
    after = world.beheer.get("/beheer/export").text
    assert "1 geweigerde opdracht wordt opnieuw naar het register gestuurd." in alerts(after)
    with app.uow() as uow:
        assert uow.session.scalar(select(ExportJob.status).where(ExportJob.id == job.id)) == "retry"
