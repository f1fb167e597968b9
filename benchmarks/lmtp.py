"""LMTP intake speed, measured against the IMAP intake of the same mails in the same run.

    python benchmarks/lmtp.py [--mails 1000] [--rounds 3] [--connections 2] [--postgres postgresql+psycopg://…/test]

Per round and database (SQLite, and PostgreSQL unless --postgres ""), each into a fresh database:
(a) IMAP: the mails APPENDed to a private Dovecot, then `kcc-mail poll --once` (fetch, parse, store, mark);
(b) LMTP: `kcc-mail run` with one LMTP mailbox, the same mails delivered by smtplib.LMTP over `--connections`
    connections at once (as Postfix delivers in parallel), timed from the first MAIL FROM to the last 250.
The ratio is (b)/(a) in mails per second; the median over the rounds is reported, so one noisy moment on a shared
machine does not decide. Figures are printed, never asserted: a ratio survives a noisy machine, a time does not.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from intake import corpus_mails, drop_postgres, fill, kcc_mail, measured_poll, postgres_database  # noqa: E402
from intake import write_config as imap_config  # noqa: E402
from support import lmtp  # noqa: E402
from support.dovecot import PrivateDovecot, free_port  # noqa: E402

RECIPIENT = "info@gemeente.example"


def as_an_mta_sends_it(raw: bytes) -> bytes:
    """CRLF line ends and a final CRLF, as an MTA's LMTP client sends every mail."""
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def lmtp_config(directory: Path, database_url: str, port: int) -> Path:
    config = directory / f"lmtp-{port}.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n\n[[mailbox]]\nname = "info"\nkind = "lmtp"\n'
        f'listen = "127.0.0.1:{port}"\nrecipients = ["{RECIPIENT}"]\n\n'
        f'[smtp]\nkind = "directory"\ndirectory = "{directory / "outgoing"}"\n\n[web]\nenabled = false\n'
    )
    return config


def wait_for_port(port: int, service: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError("kcc-mail run stopped before it listened; run it by hand to see why")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def measured_lmtp(config: Path, port: int, mails: list[bytes], connections: int) -> float:
    """Seconds to deliver every mail to `kcc-mail run` and hear its 250 for each."""
    service = subprocess.Popen([sys.executable, "-m", "kcc", "--config", str(config), "run"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures: list[str] = []
    try:
        wait_for_port(port, service)

        def deliver(share: list[bytes]) -> None:
            client = lmtp.connect("127.0.0.1", port)
            for raw in share:
                codes = lmtp.deliver(client, "mta@gemeente.example", [RECIPIENT], raw).codes
                if codes != [250]:
                    failures.append(f"answered {codes}")
            client.quit()

        threads = [threading.Thread(target=deliver, args=(mails[i::connections],)) for i in range(connections)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        service.terminate()
        service.wait(timeout=30)
    if failures:
        raise RuntimeError(f"{len(failures)} mails were not stored: {failures[:3]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    mails = [as_an_mta_sends_it(m) for m in corpus_mails(args.mails)]
    results: dict[str, object] = {"mails": len(mails), "bytes": sum(map(len, mails)), "rounds": []}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, PrivateDovecot() as dovecot:
        directory = Path(tmp)
        pg_urls: list[str] = []
        try:
            for number in range(1, args.rounds + 1):
                targets = {"sqlite": lambda n, name: f"sqlite:///{directory / f'{name}{n}.db'}"}
                if args.postgres:
                    def on_postgres(n: int, name: str) -> str:
                        pg_urls.append(postgres_database(args.postgres))
                        return pg_urls[-1]
                    targets["postgresql"] = on_postgres
                for database, new_url in targets.items():
                    user = dovecot.new_user(f"{database[:4]}{number}")
                    fill(user, mails)
                    imap = imap_config(directory, new_url(number, "imap"), user)
                    kcc_mail(imap, "init")
                    summary, imap_seconds, _ = measured_poll(imap)
                    port = free_port()
                    config = lmtp_config(directory, new_url(number, "lmtp"), port)
                    kcc_mail(config, "init")
                    lmtp_seconds = measured_lmtp(config, port, mails, args.connections)
                    imap_rate, lmtp_rate = len(mails) / imap_seconds, len(mails) / lmtp_seconds
                    ratio = lmtp_rate / imap_rate
                    ratios.setdefault(database, []).append(ratio)
                    results["rounds"].append({  # type: ignore[attr-defined]
                        "round": number, "database": database, "imap_mails_per_s": round(imap_rate, 1),
                        "lmtp_mails_per_s": round(lmtp_rate, 1), "ratio": round(ratio, 2), "imap": summary,
                    })
                    print(f"round {number} {database:10s}: IMAP poll --once {imap_rate:7.1f} mails/s "
                          f"({imap_seconds:.1f} s), LMTP over {args.connections} connections {lmtp_rate:7.1f} "
                          f"mails/s ({lmtp_seconds:.1f} s), ratio LMTP/IMAP {ratio:.2f}", flush=True)
        finally:
            for url in pg_urls:
                drop_postgres(args.postgres, url)
    for database, values in ratios.items():
        results[database] = {"median_ratio": round(statistics.median(values), 2)}
        print(f"{database}: median ratio LMTP/IMAP {statistics.median(values):.2f} over {len(values)} rounds")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
