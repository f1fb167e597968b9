"""Intake speed, measured against a bare fetch-and-parse loop over the same mails in the same run.

    python benchmarks/intake.py [--mails 2000] [--rounds 3] [--corpus mixed,small] [--postgres postgresql+psycopg://…/test]

(a) bare: imapclient FETCH BODY.PEEK[] in batches + mailparser.parse_from_bytes, no database;
(b) `kcc-mail poll --once` (a separate process, so its peak memory is its own) into SQLite and PostgreSQL,
    each into a fresh mailbox and database; its baseline is the mean of the bare loop right before and after it;
(c) with `kcc-mail run` on IDLE: the time from APPEND until the mail is in the review queue, over 50 mails;
(d) the start (benchmarks/startup.py): `--help`, and `poll --once` on an empty Maildir and an empty IMAP folder.
Two corpora: "mixed" is the whole shared corpus cycled (some mails of megabytes), "small" only its bounces and
auto-replies (flufl-bounce, php-bounce-handler: a few KB each), where the cost per transaction decides.
The rounds repeat (a) and (b); the median ratio over the rounds is reported, so one noisy moment on a shared
machine does not decide. Figures are printed, never asserted: a ratio survives a noisy machine, a time does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

from benchmarks import children, startup  # noqa: E402
from store.engine import make_engine  # noqa: E402
from store.mail import InboundMail  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SMALL_CORPUS_FOLDERS = ("flufl-bounce", "php-bounce-handler")  # bounces and auto-replies, a few KB each


def corpus_mails(count: int, corpus: str = "mixed") -> list[bytes]:
    """`count` distinct mails: the corpus cycled, each copy made unique by one extra header."""
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and "_meta" not in p.parts and p.suffix != ".md")
    sources = [p.read_bytes() for p in files if "reply-bodies" not in p.parts
               and (corpus == "mixed" or p.relative_to(CORPUS).parts[0] in SMALL_CORPUS_FOLDERS)]
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
    """Run `kcc-mail poll --once` as its own process; returns its summary, seconds and its own peak RSS in MB."""
    command = [sys.executable, "-m", "kcc", "--config", str(config), "poll", "--once"]
    return children.measured(command, env=dict(os.environ))


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


def measure_round(
    number: int, dovecot: PrivateDovecot, bare_user: ImapUser, mails: list[bytes], directory: Path,
    targets: dict[str, str], corpus: str = "mixed",
) -> dict[str, dict[str, object]]:
    """bare, then each target followed by bare again; each target's ratio is against the bare loops around it."""
    results: dict[str, dict[str, object]] = {}
    count, seconds = bare_loop(bare_user)
    before = count / seconds
    print(f"{corpus} round {number}: (a) bare fetch+mailparser: {before:8.1f} mails/s ({seconds:.1f} s)", flush=True)
    for name, url in targets.items():
        user = dovecot.new_user(f"{name[:4]}{corpus[:3]}{number}")
        fill(user, mails)
        config = write_config(directory, url, user)
        kcc_mail(config, "init")
        summary, seconds, peak = measured_poll(config)
        rate = len(mails) / seconds
        count, bare_seconds = bare_loop(bare_user)
        after = count / bare_seconds
        ratio = rate / ((before + after) / 2)
        results[name] = {"summary": summary, "mails_per_s": round(rate, 1), "seconds": round(seconds, 2),
                         "bare_before": round(before, 1), "bare_after": round(after, 1), "ratio": round(ratio, 2),
                         "peak_rss_mb": round(peak, 1)}
        print(f"{corpus} round {number}: (b) kcc-mail poll --once → {name:10s}: {rate:8.1f} mails/s ({seconds:.1f} s), "
              f"bare {before:.0f}/{after:.0f} mails/s, ratio b/a {ratio:.2f}, peak RSS ≤ {peak:.0f} MB  [{summary}]",
              flush=True)
        before = after
    return results


def measure_corpus(
    name: str, mails: list[bytes], rounds: int, dovecot: PrivateDovecot, directory: Path, postgres: str,
    pg_urls: list[str],
) -> dict[str, object]:
    """The rounds of (a) and (b) on one corpus; the median ratio per database."""
    results: dict[str, object] = {"mails": len(mails), "bytes": sum(map(len, mails))}
    print(f"corpus {name}: {len(mails)} mails, {sum(map(len, mails)) / 1e6:.1f} MB", flush=True)
    bare_user = dovecot.new_user(f"bare{name[:3]}")
    fill(bare_user, mails)
    measured = []
    for number in range(1, rounds + 1):
        targets = {"sqlite": f"sqlite:///{directory / f'bench-{name}-{number}.db'}"}
        if postgres:
            pg_urls.append(postgres_database(postgres))
            targets["postgresql"] = pg_urls[-1]
        measured.append(measure_round(number, dovecot, bare_user, mails, directory, targets, name))
    results["rounds"] = measured
    for target in measured[0]:
        ratios = [float(r[target]["ratio"]) for r in measured]  # type: ignore[arg-type]
        peak = max(float(r[target]["peak_rss_mb"]) for r in measured)  # type: ignore[arg-type]
        results[target] = {"median_ratio": round(statistics.median(ratios), 2), "peak_rss_mb": peak}
        print(f"corpus {name}, {target}: median ratio b/a {statistics.median(ratios):.2f} over {len(ratios)} rounds "
              f"({', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.0), peak RSS ≤ {peak:.0f} MB "
              "(target ≤ 250 MB)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="repeat (a) and (b); the median ratio is reported")
    parser.add_argument("--corpus", default="mixed,small", help="which corpora, comma-separated: mixed, small")
    parser.add_argument("--idle-samples", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, PrivateDovecot() as dovecot:
        directory = Path(tmp)
        idle_user, empty_user = dovecot.new_user("idle"), dovecot.new_user("empty")
        pg_urls: list[str] = []
        try:
            empty = write_config(directory, f"sqlite:///{directory / 'empty.db'}", empty_user)
            kcc_mail(empty, "init")
            kcc_mail(empty, "poll", "--once")  # the first poll creates the mailbox's state row
            commands = startup.startup_commands(directory)
            commands["poll --once, empty IMAP folder, SQLite"] = (
                [sys.executable, "-m", "kcc", "--config", str(empty), "poll", "--once"], directory)
            results["startup"] = startup.measure(commands, runs=7)
            startup.report(results["startup"], runs=7)
            for name in args.corpus.split(","):
                mails = corpus_mails(args.mails, name)
                results[name] = measure_corpus(name, mails, args.rounds, dovecot, directory, args.postgres, pg_urls)
            if args.idle_samples:
                idle_url = f"sqlite:///{directory / 'idle.db'}"
                kcc_mail(write_config(directory, idle_url, idle_user), "init")
                latencies = idle_latency(directory, idle_url, idle_user, args.idle_samples)
                p95 = statistics.quantiles(latencies, n=20)[18]
                results["idle"] = {"median_s": round(statistics.median(latencies), 3), "p95_s": round(p95, 3)}
                print(f"(c) IDLE: APPEND → in the review queue: median {statistics.median(latencies) * 1000:.0f} "
                      f"ms, p95 {p95 * 1000:.0f} ms over {len(latencies)} mails", flush=True)
        finally:
            for url in pg_urls:
                drop_postgres(args.postgres, url)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
