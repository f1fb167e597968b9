"""Relay speed, measured against a bare smtplib loop sending the same bytes to the same server in the same run.

    python benchmarks/relay.py [--messages 1000] [--rounds 3] [--postgres postgresql+psycopg://…/test]

(a) bare: one smtplib connection, `sendmail` for each message, no database — the ceiling for this server;
(b) the relay: `relay_once` over the queued replies (claim in batches, send, finish each in its own transaction)
    into a temporary SQLite database (and PostgreSQL with --postgres).
The server is aiosmtpd in a separate process, so it does not share the relay's interpreter. In each round the bare
loop runs before and after the relay and its mean is the baseline; the median ratio over the rounds is reported,
so one noisy moment on a shared machine does not decide. Figures are printed, never asserted; target ratio ≥ 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from support.outbox import QueuedReply, queue_replies  # noqa: E402

from kcc.bootstrap import App, build_app  # noqa: E402
from kcc.config import Config, DatabaseConfig, SmtpConfig  # noqa: E402
from kcc.usecases.outbox import Outbox  # noqa: E402
from replies.delivery import RelaySettings  # noqa: E402
from replies.relay import relay_once  # noqa: E402
from store.engine import make_engine  # noqa: E402
from store.schema import upgrade  # noqa: E402


class CountingHandler:
    """Accepts every message and only counts it: the server should cost as little as possible."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def serve() -> None:
    """Child process: an aiosmtpd server on a free loopback port; prints the port, runs until stdin closes."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(CountingHandler(), hostname="127.0.0.1", port=port, data_size_limit=100 * 1024 * 1024)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()
    asyncio.set_event_loop(None)


def start_server() -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def bare_loop(port: int, messages: list[QueuedReply], sender: str, recipient: str) -> float:
    """Messages per second over one reused smtplib connection."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for message in messages:
            client.sendmail(sender, [recipient], message.data)
    return len(messages) / (time.perf_counter() - started)


def relay_rate(app: App, count: int) -> float:
    started = time.perf_counter()
    settings = RelaySettings(lease_seconds=300)
    summary = relay_once(Outbox(app.uow, settings), app.transport(), settings=settings)
    elapsed = time.perf_counter() - started
    if summary.sent != count:
        raise SystemExit(f"the relay sent {summary.line()}, expected sent={count}")
    return count / elapsed


def prepare(database_url: str, port: int) -> App:
    engine = make_engine(database_url)
    upgrade(engine)
    smtp = SmtpConfig(kind="smtp", host="127.0.0.1", port=port, security="none", timeout=30)
    config = dataclasses.replace(Config(), database=DatabaseConfig(url=database_url), smtp=smtp)
    return build_app(config, engine=engine)


def queue(app: App, count: int) -> list[QueuedReply]:
    queued: list[QueuedReply] = []
    for start in range(0, count, 200):
        queued += queue_replies(app.uow(), min(200, count - start))
    return queued


def measure(label: str, database_url: str, port: int, count: int, rounds: int) -> None:
    """Per round: queue `count` replies, bare loop, relay, bare loop; the median ratio over the rounds."""
    app = prepare(database_url, port)
    sender, recipient = "info@gemeente.example", "burger@example.nl"
    warm_up = queue(app, 100)
    bare_loop(port, warm_up, sender, recipient)
    relay_rate(app, len(warm_up))
    ratios = []
    print(f"{label}: {rounds} rounds of {count} replies")
    for number in range(1, rounds + 1):
        queued = queue(app, count)
        before = bare_loop(port, queued, sender, recipient)
        relayed = relay_rate(app, count)
        after = bare_loop(port, queued, sender, recipient)
        baseline = (before + after) / 2
        ratios.append(relayed / baseline)
        size = sum(len(q.data) for q in queued) / len(queued)
        print(f"  round {number}: bare smtplib loop {baseline:6.0f} msg/s (before {before:.0f}, after {after:.0f}), "
              f"relay {relayed:6.0f} msg/s, ratio {relayed / baseline:.2f}  [{size / 1024:.1f} kB each]")
    app.close()
    print(f"  median ratio relay / bare: {statistics.median(ratios):.2f}  (target >= 0.7)")


def create_postgres_database(server_url: str) -> tuple[str, str]:
    name = f"kcc_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="repeat; the median ratio is reported")
    parser.add_argument("--postgres", default="", help="also measure on a throw-away database on this server")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    child, port = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="kcc-relay-bench-") as directory:
            measure("SQLite", f"sqlite:///{Path(directory) / 'bench.db'}", port, args.messages, args.rounds)
        if args.postgres:
            admin, url = create_postgres_database(args.postgres)
            try:
                measure("PostgreSQL", url, port, args.messages, args.rounds)
            finally:
                with psycopg.connect(admin, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
