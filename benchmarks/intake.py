"""Intake speed, measured against a bare fetch-and-parse loop over the same mails in the same run.

    python benchmarks/intake.py [--mails 2000] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

(a) bare: imapclient FETCH BODY.PEEK[] in batches + mailparser.parse_from_bytes, no database;
(b) `kcc-mail poll --once` (a separate process, so its peak memory is its own) into SQLite and PostgreSQL;
(c) with `kcc-mail run` on IDLE: the time from APPEND until the mail is in the review queue, over 50 mails.
Figures are printed, never asserted: a ratio survives a noisy machine, an absolute time does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from imapclient import IMAPClient  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from support.dovecot import ImapUser, PrivateDovecot  # noqa: E402

from store.engine import make_engine  # noqa: E402
from store.mail import InboundMail  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"


def corpus_mails(count: int) -> list[bytes]:
    """`count` distinct mails: the corpus cycled, each copy made unique by one extra header."""
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and "_meta" not in p.parts and p.suffix != ".md")
    sources = [p.read_bytes() for p in files if "reply-bodies" not in p.parts]
    return [b"X-Bench-Seq: %d\r\n" % i + sources[i % len(sources)] for i in range(count)]


def fill(user: ImapUser, mails: list[bytes]) -> None:
    client = user.client()
    for start in range(0, len(mails), 100):
        client.multiappend("INBOX", mails[start:start + 100])
    client.logout()


def bare_loop(user: ImapUser, batch: int = 50) -> tuple[int, float]:
    import mailparser

    started = time.perf_counter()
    client = user.client()
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["ALL"])
    parsed = 0
    for start in range(0, len(uids), batch):
        for data in client.fetch(uids[start:start + batch], ["BODY.PEEK[]", "INTERNALDATE"]).values():
            with contextlib.suppress(Exception):  # the baseline fails on some broken mail; count the attempt
                mailparser.parse_from_bytes(data[b"BODY[]"])
            parsed += 1
    client.logout()
    return parsed, time.perf_counter() - started


def write_config(directory: Path, database_url: str, user: ImapUser, poll_interval: float = 60.0) -> Path:
    config = directory / f"kcc-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n\n[[mailbox]]\nname = "info"\nkind = "imap"\n'
        f'host = "{user.server.host}"\nport = {user.server.port}\nsecurity = "none"\nusername = "{user.name}"\n'
        f'password_file = "{user.password_file}"\npoll_interval = {poll_interval}\n\n'
        f'[smtp]\nkind = "directory"\ndirectory = "{directory / "outgoing"}"\n'
    )
    return config


def kcc_mail(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kcc", "--config", str(config), *args], capture_output=True, text=True, check=True
    )


def measured_poll(config: Path) -> tuple[str, float, float]:
    """Run `kcc-mail poll --once` as its own process; returns its summary, seconds and peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = kcc_mail(config, "poll", "--once")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result.stdout.strip(), seconds, max(peak, before) / 1024


def idle_latency(directory: Path, database_url: str, user: ImapUser, samples: int) -> list[float]:
    """Seconds from APPEND until the mail is stored, with `kcc-mail run` waiting in IDLE."""
    config = write_config(directory, database_url, user, poll_interval=300.0)
    engine = make_engine(database_url)
    service = subprocess.Popen([sys.executable, "-m", "kcc", "--config", str(config), "run"])
    latencies = []
    try:
        time.sleep(3.0)
        client: IMAPClient = user.client()
        for i in range(samples):
            appended = time.perf_counter()
            client.append("INBOX", b"From: a@example.nl\r\nSubject: idle %d\r\n\r\nbericht %d\r\n" % (i, i))
            while _count(engine) < i + 1:
                if time.perf_counter() - appended > 30:
                    raise RuntimeError("a mail did not arrive within 30 s; is IDLE working?")
                time.sleep(0.005)
            latencies.append(time.perf_counter() - appended)
        client.logout()
    finally:
        service.terminate()
        service.wait(timeout=30)
        engine.dispose()
    return latencies


def _count(engine: object) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(connection.execute(select(func.count()).select_from(InboundMail)).scalar_one())


def postgres_database(server_url: str) -> str:
    import psycopg

    name = f"kcc_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres(server_url: str, url: str) -> None:
    import psycopg

    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--idle-samples", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    mails = corpus_mails(args.mails)
    results: dict[str, object] = {"mails": len(mails), "bytes": sum(map(len, mails))}
    with tempfile.TemporaryDirectory() as tmp, PrivateDovecot() as dovecot:
        directory = Path(tmp)
        bare_user, sqlite_user, pg_user, idle_user = (dovecot.new_user(n) for n in ("bare", "lite", "pg", "idle"))
        for user in (bare_user, sqlite_user, pg_user):
            fill(user, mails)
        count, seconds = bare_loop(bare_user)
        results["bare"] = {"mails_per_s": round(count / seconds, 1), "seconds": round(seconds, 2)}
        print(f"(a) bare fetch+mailparser: {count / seconds:8.1f} mails/s ({seconds:.1f} s)", flush=True)

        targets = {"sqlite": (f"sqlite:///{directory / 'bench.db'}", sqlite_user)}
        pg_url = postgres_database(args.postgres) if args.postgres else ""
        if pg_url:
            targets["postgresql"] = (pg_url, pg_user)
        try:
            for name, (url, user) in targets.items():
                config = write_config(directory, url, user)
                kcc_mail(config, "init")
                summary, seconds, peak = measured_poll(config)
                rate = len(mails) / seconds
                results[name] = {"summary": summary, "mails_per_s": round(rate, 1), "seconds": round(seconds, 2),
                                 "ratio": round(rate / results["bare"]["mails_per_s"], 2),  # type: ignore[index]
                                 "peak_rss_mb_max_of_children": round(peak, 1)}
                print(f"(b) kcc-mail poll --once → {name:10s}: {rate:8.1f} mails/s ({seconds:.1f} s), "
                      f"ratio b/a {results[name]['ratio']}, peak RSS ≤ {peak:.0f} MB  [{summary}]",  # type: ignore[index]
                      flush=True)
            idle_url = f"sqlite:///{directory / 'idle.db'}"
            kcc_mail(write_config(directory, idle_url, idle_user), "init")
            latencies = idle_latency(directory, idle_url, idle_user, args.idle_samples)
            p95 = statistics.quantiles(latencies, n=20)[18]
            results["idle"] = {"median_s": round(statistics.median(latencies), 3), "p95_s": round(p95, 3)}
            print(f"(c) IDLE: APPEND → in the review queue: median {statistics.median(latencies) * 1000:.0f} ms, "
                  f"p95 {p95 * 1000:.0f} ms over {len(latencies)} mails", flush=True)
        finally:
            if pg_url:
                drop_postgres(args.postgres, pg_url)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
