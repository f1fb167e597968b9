"""What the screen costs: the werkvoorraad, a search, a mail page and a reply decision through HTTP, beside the
same use cases called directly, on PostgreSQL with a large database.

    python benchmarks/web.py [--waiting 100000] [--klantcontacten 1000000] [--rounds 200] [--postgres URL]

The database gets `--klantcontacten` registered klantcontacten (years of history) and `--waiting` mails waiting
for review, with real text. The screen is served by uvicorn on loopback as `kcc-mail run` serves it; a signed-in
employee (development sign-in) asks for each page `--rounds` times. Printed per action: median and p95 through
HTTP (round trip on loopback, the server's time plus the loopback hop) and called directly, and their ratio: what
the web layer adds. Targets (issue 13): p95 under 50 ms for pages and search, under 100 ms for the decision.
Reported, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import text  # noqa: E402
from support.mails import customer_mail, queue_mail  # noqa: E402
from support.web import Person, form_token, serving  # noqa: E402

from benchmarks.intake import drop_postgres, postgres_database  # noqa: E402
from benchmarks.review import seed  # noqa: E402
from kcc.bootstrap import App, build_app  # noqa: E402
from kcc.config import Config, DatabaseConfig  # noqa: E402
from kcc.records.actor import medewerker  # noqa: E402
from kcc.usecases.access import Gebruiker, Rol  # noqa: E402
from kcc.usecases.claims import open_mail  # noqa: E402
from kcc.usecases.history import history  # noqa: E402
from kcc.usecases.reply import Reply, reply  # noqa: E402
from kcc.usecases.review_queue import show_mail  # noqa: E402
from kcc.usecases.werkvoorraad import WerkvoorraadFilter, werkvoorraad  # noqa: E402
from store.schema import upgrade  # noqa: E402

TOPICS = [
    ("Afvalkalender", "Wanneer wordt het oud papier opgehaald in de Lindenlaan? De container staat al twee dagen."),
    ("Parkeervergunning", "Mijn parkeervergunning verloopt volgende week. Hoe kan ik die verlengen?"),
    ("Paspoort aanvragen", "Ik wil een afspraak maken voor een nieuw paspoort voor mijn dochter."),
    ("Kapotte lantaarnpaal", "De lantaarnpaal voor huisnummer 12 brandt al een week niet meer."),
    ("Bezwaar WOZ", "Ik ben het niet eens met de WOZ-waarde van mijn woning en wil bezwaar maken."),
]
BOXES = ["info"]
"""The configured mailboxes, as the screen passes them."""
ANNA = Gebruiker("anna@gemeente.nl", "Anna", frozenset({Rol.KCC}), ())


def seed_waiting(app: App, waiting: int) -> list[int]:
    """`waiting` mails waiting for review: a few stored as intake stores them, the rest copied from those in SQL
    (each with bytes of its own, as no two mails are alike), received over the last months."""
    for n, (subject, body) in enumerate(TOPICS * 20):
        queue_mail(app, customer_mail(f"{subject} {n}", f"Goedemorgen,\r\n\r\n{body}\r\n\r\nGroet, Karel {n}",
                                      sender=f"Karel {n} <karel{n}@example.nl>"))
    with app.engine.begin() as connection:
        connection.execute(text("""
            INSERT INTO blob (sha256, size, data, created_at)
            SELECT encode(sha256((b.sha256 || g)::bytea), 'hex'), b.size, b.data, b.created_at
            FROM blob b JOIN inbound_mail m ON m.raw_sha256 = b.sha256, generate_series(1, :copies) g
        """), {"copies": max(0, waiting // 100 - 1)})
        connection.execute(text("""
            INSERT INTO inbound_mail (uuid, mailbox, uidvalidity, uid, source_key, raw_sha256, size, received_at,
                stored_at, message_id, message_id_synthetic, from_name, from_address, to_addresses, cc_addresses,
                reply_to, subject, sent_at, in_reply_to, "references", text_body, html_body, flags, classification,
                defects, state, error)
            SELECT md5(m.uuid::text || g)::uuid, m.mailbox, m.uidvalidity, m.uid * 1000000 + g,
                m.source_key || '-' || g,
                encode(sha256((m.raw_sha256 || g)::bytea), 'hex'), m.size,
                now() - (g * interval '97 seconds'), m.stored_at, '<' || g || '-' || m.message_id, false,
                m.from_name || ' ' || g, 'klant' || g || '@example.nl', m.to_addresses, m.cc_addresses,
                m.reply_to, m.subject || ' ' || g, m.sent_at, '', m."references", m.text_body || ' zaak' || g,
                NULL, m.flags, m.classification, m.defects, m.state, ''
            FROM inbound_mail m, generate_series(1, :copies) g
        """), {"copies": max(0, waiting // 100 - 1)})
        ids = connection.execute(text(
            "SELECT id FROM inbound_mail WHERE state = 'te_beoordelen' ORDER BY received_at DESC LIMIT :n"
        ), {"n": 10_000}).scalars().all()
    with app.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))  # what autovacuum does soon after a load like this
    return list(ids)


def timed(action: Callable[[], Any], rounds: int) -> list[float]:
    action()  # warm: the first call pays for connections, caches and compiled templates
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        latencies.append(time.perf_counter() - started)
    return latencies


def line(name: str, web: list[float], direct: list[float], target_ms: float) -> None:
    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[18] * 1000

    verdict = "within" if p95(web) < target_ms else "OVER"
    print(f"{name:22s} http median {statistics.median(web) * 1000:6.1f} ms p95 {p95(web):6.1f} ms | direct median "
          f"{statistics.median(direct) * 1000:6.1f} ms p95 {p95(direct):6.1f} ms | ratio "
          f"{statistics.median(web) / statistics.median(direct):4.1f} | {verdict} the {target_ms:g} ms target",
          flush=True)


def measure(url: str, waiting: int, klantcontacten: int, rounds: int) -> None:
    config = Config(database=DatabaseConfig(url=url), source="benchmark")
    app = build_app(config)
    upgrade(app.engine)
    started = time.perf_counter()
    seed(app, klantcontacten)
    mail_ids = seed_waiting(app, waiting)
    print(f"seeded {klantcontacten:,} klantcontacten and {waiting:,} waiting mails in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    where = WerkvoorraadFilter()
    search = WerkvoorraadFilter(zoek="lantaarnpaal")
    with serving(app, page_size=50) as site:
        anna = Person(site, "Anna", "anna@gemeente.nl", kcc=True)
        ok = anna.get("/werkvoorraad")
        assert ok.status_code == 200, ok.status_code
        page_ids = iter(mail_ids)
        line("werkvoorraad page", timed(lambda: anna.get("/werkvoorraad"), rounds),
             timed(lambda: werkvoorraad(app.uow(), where, gebruiker=ANNA, mailboxes=BOXES), rounds), 50)
        line("search", timed(lambda: anna.get("/werkvoorraad?zoek=lantaarnpaal"), rounds),
             timed(lambda: werkvoorraad(app.uow(), search, gebruiker=ANNA, mailboxes=BOXES), rounds), 50)

        def mail_direct() -> None:
            mail_id = next(page_ids)
            show_mail(app.uow(), mail_id)
            open_mail(app.uow(), mail_id, ANNA, minutes=5)
            history(app.uow(), mail_id)

        line("mail page", timed(lambda: anna.get(f"/mail/{next(page_ids)}"), rounds),
             timed(mail_direct, rounds), 50)

        follow_up = Reply(variables=(("tekst", "Dank voor uw vraag; het antwoord staat hieronder."),))

        def decide_http() -> None:
            mail_id = next(page_ids)
            page = anna.client.get(f"/mail/{mail_id}")  # the page the employee is on: not timed below
            token = form_token(page.text, f"/mail/{mail_id}/beantwoorden")
            started = time.perf_counter()
            answered = anna.client.post(f"/mail/{mail_id}/beantwoorden", data={
                "csrf_token": token, "sjabloon": "antwoord", "actie": "verzenden",
                "var_tekst": "Dank voor uw vraag; het antwoord staat hieronder."})
            decisions.append(time.perf_counter() - started)
            assert answered.status_code == 303, answered.status_code

        decisions: list[float] = []
        for _ in range(rounds + 1):
            decide_http()
        direct = timed(lambda: reply(app.uow(), config, next(page_ids), follow_up, medewerker("anna@gemeente.nl")),
                       rounds)
        line("reply decision", decisions[1:], direct, 100)
        anna.close()
    app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--klantcontacten", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    url = postgres_database(args.postgres)
    try:
        measure(url, args.waiting, args.klantcontacten, args.rounds)
    finally:
        drop_postgres(args.postgres, url)


if __name__ == "__main__":
    main()
