"""Latency of the reply decision with 100,000 klantcontacten already in the database (SQLite and PostgreSQL).

    python benchmarks/review.py [--existing 100000] [--decisions 200] [--postgres URL]

Each decision is the real use case: incoming klantcontact, answer klantcontact, bijlagen, outbox row, audit, in one
transaction. Printed: median and p95 per database, and the SQL statements one decision sends (counted by an
event listener on the engine; `--statements` lists them). Target p95 under 20 ms; reported, not asserted.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import event, insert, update  # noqa: E402
from support.mails import customer_mail, queue_mail  # noqa: E402

from benchmarks.intake import drop_postgres, postgres_database  # noqa: E402
from kcc.bootstrap import build_app  # noqa: E402
from kcc.config import Config, DatabaseConfig  # noqa: E402
from kcc.records.actor import medewerker  # noqa: E402
from kcc.usecases.reply import Reply, reply  # noqa: E402
from store.klantinteracties import Betrokkene, Klantcontact, Referentieteller  # noqa: E402
from store.schema import upgrade  # noqa: E402

START = datetime(2020, 1, 1, tzinfo=UTC)


def seed(app: object, existing: int) -> None:
    """`existing` klantcontacten with their betrokkene, inserted in bulk (as years of history would be)."""
    engine = app.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        for start in range(0, existing, 5000):
            rows = [
                {"uuid": uuid.uuid4(), "referentienummer": f"{n + 1:010d}", "kanaal": "e-mail",
                 "onderwerp": f"Vraag {n}", "inhoud": "Historische vraag " * 10, "taal": "nld",
                 "vertrouwelijk": False, "plaatsgevonden_op": START + timedelta(minutes=n),
                 "indicatie_contact_gelukt": True, "created_at": START}
                for n in range(start, min(existing, start + 5000))
            ]
            ids = connection.execute(insert(Klantcontact).returning(Klantcontact.id), rows).scalars().all()
            connection.execute(insert(Betrokkene), [
                {"uuid": uuid.uuid4(), "klantcontact_id": i, "rol": "klant", "initiator": True,
                 "organisatienaam": "", "contactnaam_voorletters": "", "contactnaam_voornaam": "Klant",
                 "contactnaam_voorvoegsel_achternaam": "", "contactnaam_achternaam": str(i)}
                for i in ids
            ])
        connection.execute(update(Referentieteller).values(waarde=existing))


def measure(url: str, existing: int, decisions: int, workdir: Path) -> tuple[list[float], list[str]]:
    """The latency of each decision, and the statements (their first words) of the last one."""
    config = Config(database=DatabaseConfig(url=url), source="benchmark")
    app = build_app(config)
    upgrade(app.engine)
    seed(app, existing)
    mail_ids = [queue_mail(app, customer_mail(subject=f"Vraag {i}")) for i in range(decisions)]
    follow_up = Reply(variables=(("tekst", "Dank voor uw vraag; het antwoord staat hieronder."),))
    anna = medewerker("anna@gemeente.nl")
    statements: list[str] = []

    @event.listens_for(app.engine, "before_cursor_execute")
    def _count(connection: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()[:4]))

    latencies = []
    for mail_id in mail_ids:
        statements.clear()
        started = time.perf_counter()
        reply(app.uow(), config, mail_id, follow_up, anna)
        latencies.append(time.perf_counter() - started)
    last = list(statements)
    app.close()
    return latencies, last


def report(name: str, measured: tuple[list[float], list[str]], list_statements: bool) -> None:
    latencies, statements = measured
    p95 = statistics.quantiles(latencies, n=20)[18]
    print(f"{name:10s} reply decision: median {statistics.median(latencies) * 1000:6.1f} ms, "
          f"p95 {p95 * 1000:6.1f} ms over {len(latencies)} decisions, {len(statements)} SQL statements each "
          "(BEGIN and COMMIT not counted)", flush=True)
    if list_statements:
        for text, count in collections.Counter(statements).items():
            print(f"  {count:3d} × {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--statements", action="store_true", help="list the statements of one decision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report("sqlite", measure(f"sqlite:///{tmp}/review.db", args.existing, args.decisions, Path(tmp)),
               args.statements)
        if args.postgres:
            url = postgres_database(args.postgres)
            try:
                report("postgresql", measure(url, args.existing, args.decisions, Path(tmp)), args.statements)
            finally:
                drop_postgres(args.postgres, url)


if __name__ == "__main__":
    main()
