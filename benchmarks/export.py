"""Export speed, measured against a bare loop of the same HTTP requests with the same client, in the same run.

    python benchmarks/export.py [--mails 1000] [--rounds 3] [--postgres postgresql+psycopg://…/test]

Each mail has two attachments, so one klantcontact is a klantcontact, betrokkene, digitaal adres, two
actorklantcontacten, three documents and three bijlagen (and the two actors, once).
(a) kcc-mail: `Exporter.run_once` over the registered mails, into a temporary SQLite database (and PostgreSQL
    with --postgres), to the Open Klant and Open Zaak test servers of tests/support/registers.py;
(b) bare: the requests (a) made, recorded by the servers, replayed in order by one httpx client against fresh
    servers (uuids of created objects substituted), with no database — the ceiling for these servers.
Both sides carry the test servers' OpenAPI validation, which dominates the time per request. The servers run
in a process of their own (uvicorn, one thread each), so the figures compare, they do not predict a real Open
Klant. The bare loop runs before and after kcc-mail in each round; the median ratio over the rounds is
reported. Printed, never asserted; target ratio ≥ 0.9. The exporter works on `--concurrency` klantcontacten at
once (default 4, as `export.concurrency`); the bare loop sends one request after another. On a real Open Klant
over a network the time per request is mostly waiting, which concurrency overlaps more than it can here, on two
shared cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import delete  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from support.mails import queue_mail, with_attachment  # noqa: E402
from support.registers import (  # noqa: E402
    BASE_PATH,
    CLIENT_ID,
    DRC_PATH,
    INFORMATIEOBJECTTYPE,
    RSIN,
    SECRET,
    TOKEN,
    OpenKlantServer,
    created_urls,
    open_klant,
    open_zaak,
)

from kcc.bootstrap import App, build_app  # noqa: E402
from kcc.config import Config, DatabaseConfig, DocumentenConfig, OpenKlantConfig  # noqa: E402
from kcc.records.actor import medewerker  # noqa: E402
from kcc.registers.documenten import zgw_token  # noqa: E402
from kcc.usecases.review import NoFollowUp, register  # noqa: E402
from store.engine import make_engine  # noqa: E402
from store.export import ExportedRecord, ExportJob  # noqa: E402
from store.schema import upgrade  # noqa: E402

ANNA = medewerker("anna@gemeente.nl")
CONCURRENCY = [4]
BASE_PATHS = {"ok": BASE_PATH, "drc": DRC_PATH}


def two_attachments(n: int) -> bytes:
    raw = with_attachment(f"Zie de foto's, melding {n}.", filename=f"container-{n}.jpg").decode()
    second = (f"--grens\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"brief-{n}.pdf\""
              "\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcTl8uXr\r\n--grens--\r\n")
    return raw.replace("--grens--\r\n", second).encode()


def prepare(url: str, mails: int, root: Path) -> App:
    engine = make_engine(url)
    upgrade(engine)
    config = Config(database=DatabaseConfig(url=url), source="benchmark")
    app = build_app(config, engine=engine)
    for n in range(mails):
        register(app.uow(), app.config, queue_mail(app, two_attachments(n)), NoFollowUp(), ANNA)
    return app


@contextmanager
def registers() -> Iterator[tuple[str, str, Callable[[], list[Any]]]]:
    """Fresh Open Klant and Open Zaak test servers in a process of their own, as a real register is one: the
    exporter's threads and the servers do not share a GIL. Yields their urls and a way to read their journals."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve_registers, args=(theirs,), daemon=True, name="registers")
    process.start()
    theirs.close()
    ok_url, drc_url = ours.recv()

    def journal() -> list[Any]:
        ours.send("journal")
        return list(ours.recv())

    try:
        yield ok_url, drc_url, journal
    finally:
        ours.send("stop")
        process.join(15)


def _serve_registers(connection: Connection) -> None:
    with open_klant() as ok, open_zaak() as drc:
        ok.journal, drc.journal = [], []
        connection.send((ok.url, drc.url))
        while connection.recv() != "stop":
            connection.send(_interleave(ok, drc))


def export_round(app: App) -> tuple[float, list[Any], int]:
    """kcc-mail's exporter, to fresh servers; returns the time, the requests the servers recorded, and the count."""
    with app.uow() as uow:  # every job due again, no map: the same work each round
        uow.session.execute(delete(ExportedRecord))
        uow.session.execute(ExportJob.__table__.update().values(status="pending", attempts=0))  # type: ignore[attr-defined]
        uow.commit()
    with registers() as (ok_url, drc_url, journal):
        config = dataclasses.replace(
            app.config,
            openklant=OpenKlantConfig(enabled=True, url=ok_url, token_env="KCC_BENCH_TOKEN", timeout=30),
            export=dataclasses.replace(app.config.export, concurrency=CONCURRENCY[0]),
            documenten=DocumentenConfig(url=drc_url, client_id=CLIENT_ID, secret_env="KCC_BENCH_SECRET",
                                        bronorganisatie=RSIN, informatieobjecttype=INFORMATIEOBJECTTYPE),
        )
        exporter = build_app(config, engine=app.engine).exporter()
        started = time.perf_counter()
        summary = exporter.run_once()
        elapsed = time.perf_counter() - started
        assert summary.failed == summary.retry == 0, summary
        return elapsed, journal(), summary.done


def _interleave(ok: OpenKlantServer, drc: OpenKlantServer) -> list[Any]:
    """Both journals, each in the order its server carried the requests out (all that a replay needs)."""
    assert ok.journal is not None and drc.journal is not None
    return [("ok", *e) for e in ok.journal] + [("drc", *e) for e in drc.journal]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A uuid in a recorded request: substituted by the one the fresh server gave (one pass per request, not one
per object made so far, which made the replay itself quadratic)."""


def bare_round(requests: list[Any]) -> float:
    """The same requests, one client, one after another, against fresh servers (in their own process, as for
    kcc-mail): the uuids of created objects substituted."""
    with registers() as (ok_url, drc_url, _journal):
        urls = {"ok": ok_url, "drc": drc_url}
        renamed: dict[str, str] = {}
        documents = [r for r in requests if r[0] == "drc"]
        rest = [r for r in requests if r[0] == "ok"]
        with httpx.Client(timeout=30) as client:
            started = time.perf_counter()
            for server, method, path, query, body, created in documents + rest:
                auth = f"Token {TOKEN}" if server == "ok" else f"Bearer {zgw_token(CLIENT_ID, SECRET)}"
                text, query, path = (_UUID.sub(lambda m: renamed.get(m.group(0), m.group(0)), part)
                                     for part in (body.decode(), query, path))
                base = urls[server]
                url = f"{base.rpartition(BASE_PATHS[server])[0]}{path}" + (f"?{query}" if query else "")
                response = client.request(method, url, content=text.encode() or None,
                                          headers={"Authorization": auth, "Content-Type": "application/json"})
                response.raise_for_status()
                for old, new in zip(created, created_urls(response.json()), strict=True):
                    renamed[old.rpartition("/")[2]] = new.rpartition("/")[2]
            return time.perf_counter() - started


def measure(name: str, url: str, mails: int, rounds: int, root: Path) -> None:
    print(f"{name}: registering {mails} mails with two attachments each …", flush=True)
    app = prepare(url, mails, root)
    ratios = []
    for number in range(1, rounds + 1):
        ours, requests, done = export_round(app)
        before, after = bare_round(requests), bare_round(requests)
        bare = (before + after) / 2
        ratios.append(bare / ours)
        print(f"  round {number}: {len(requests)} requests for {done} klantcontacten; bare {len(requests) / bare:.0f} "
              f"req/s, kcc-mail {len(requests) / ours:.0f} req/s ({done / ours:.1f} klantcontacten/s), "
              f"ratio {bare / ours:.2f}", flush=True)
    print(f"{name}: median ratio {statistics.median(ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
    app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="klantcontacten exported at once")
    parser.add_argument("--postgres", help="also measure on PostgreSQL (a fresh database is made on this server)")
    args = parser.parse_args()
    CONCURRENCY[0] = args.concurrency
    os.environ["KCC_BENCH_TOKEN"], os.environ["KCC_BENCH_SECRET"] = TOKEN, SECRET
    with tempfile.TemporaryDirectory() as tmp:
        measure("SQLite", f"sqlite:///{tmp}/bench.db", args.mails, args.rounds, Path(tmp))
    if args.postgres:
        name = f"kcc_bench_{uuid.uuid4().hex[:8]}"
        admin = make_url(args.postgres).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        try:
            with tempfile.TemporaryDirectory() as tmp:
                measure("PostgreSQL", make_url(args.postgres).set(database=name).render_as_string(
                    hide_password=False), args.mails, args.rounds, Path(tmp))
        finally:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
