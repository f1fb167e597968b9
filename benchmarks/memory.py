"""Peak memory of storing one large mail: `kcc-mail poll --once` in a process of its own, its ru_maxrss.

    python benchmarks/memory.py [--megabytes 40] [--dovecot] [--postgres postgresql+psycopg://…/test]

Three mails of about `--megabytes` each: two base64 attachments (random bytes, so nothing compresses), one large
plain text body (quoted-printable, Dutch-looking text), and one large HTML body. Each is stored into a fresh
SQLite database (and PostgreSQL with --postgres) from a fresh Maildir, and with --dovecot also from an IMAP folder
of a private Dovecot. The figure is the peak resident set of that one process (benchmarks/children.py), beside
the same command on an empty mailbox (what the interpreter and the libraries take), and the ratio peak / mail
size. Children run with bytecode caching allowed, as an installed package has. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import quopri
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from e2e.kcc_cli import write_config  # noqa: E402
from support.dovecot import ImapUser, PrivateDovecot  # noqa: E402

from benchmarks import children  # noqa: E402
from benchmarks.intake import drop_postgres, postgres_database  # noqa: E402

WORDS = ("de", "gemeente", "aanvraag", "vergunning", "lantaarnpaal", "straat", "graag", "bericht", "woensdag",
         "parkeren", "afval", "container", "klacht", "melding", "burgerzaken", "paspoort", "ë", "€")


def headers(subject: str, content_type: str) -> bytes:
    return (
        f"From: Burger <burger@example.nl>\r\nTo: info@gemeente.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.nl>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
    ).encode()


def base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def attachments_mail(size: int) -> bytes:
    """Two attachments that together make a mail of about `size` bytes."""
    rng = random.Random(15)
    part = size * 3 // 8  # base64 grows by 4/3 and adds line ends: two of these make about `size`
    body = headers("twee grote bijlagen", 'multipart/mixed; boundary="grens"') + (
        b"\r\n--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie de bijlagen.\r\n"
    )
    for number in (1, 2):
        body += (
            b"--grens\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="scan-%d.pdf"\r\n\r\n' % number
        ) + base64_lines(rng.randbytes(part))
    return body + b"--grens--\r\n"


def text(size: int) -> str:
    rng = random.Random(40)
    words: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        words.append(line)
        length += len(line) + 1
    return "\n".join(words)


def text_mail(size: int) -> bytes:
    """A plain text body of about `size` bytes, quoted-printable (as mail programs send long text)."""
    encoded = quopri.encodestring(text(size * 9 // 10).encode("utf-8")).replace(b"\n", b"\r\n")
    return headers("een lange tekst", "text/plain; charset=utf-8") + (
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ) + encoded + b"\r\n"


def html_mail(size: int) -> bytes:
    """An HTML body of about `size` bytes, 8-bit (what a pasted spreadsheet looks like)."""
    rows = text(size * 9 // 10).split("\n")
    html = "<html><body><table>" + "".join(f"<tr><td>{row}</td></tr>\r\n" for row in rows) + "</table></body></html>"
    return headers("een grote tabel", "text/html; charset=utf-8") + (
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    ) + html.encode("utf-8") + b"\r\n"


MAILS: dict[str, Callable[[int], bytes]] = {"attachments": attachments_mail, "text": text_mail, "html": html_mail}


def child_environment() -> dict[str, str]:
    """The defaults are measured: no KCC_ settings from the caller's environment."""
    return children.child_environment({k: v for k, v in os.environ.items() if not k.startswith("KCC_")})


def peak_of(command: list[str], cwd: Path) -> tuple[float, str]:
    """Peak RSS in MB of the one process running `command` (not of this benchmark), and its output."""
    output, _seconds, peak = children.measured(command, cwd, child_environment())
    return peak, output


def kcc_mail(*args: str) -> list[str]:
    return [sys.executable, "-m", "kcc", *args]


def prepare(directory: Path, database_url: str, user: ImapUser | None) -> Path:
    directory.mkdir()
    write_config(directory, database_url, imap=user)
    subprocess.run(kcc_mail("init"), cwd=directory, env=child_environment(), check=True, capture_output=True)
    return directory


def deliver(directory: Path, user: ImapUser | None, raw: bytes) -> None:
    """Put the mail where `poll --once` finds it: a new file in the Maildir, or APPEND to the IMAP folder."""
    if user is None:
        (directory / "mail" / "new").mkdir(parents=True, exist_ok=True)
        (directory / "mail" / "new" / f"{uuid.uuid4().hex}.eml").write_bytes(raw)
        return
    client = user.client()
    client.append("INBOX", raw)
    client.logout()


def measure(directory: Path, database_url: str, user: ImapUser | None, raw: bytes) -> dict[str, object]:
    """The empty poll first (the floor), then the poll that stores `raw`."""
    prepare(directory, database_url, user)
    empty, _ = peak_of(kcc_mail("poll", "--once"), directory)
    deliver(directory, user, raw)
    peak, output = peak_of(kcc_mail("poll", "--once"), directory)
    if "stored=1" not in output:
        raise RuntimeError(f"the mail was not stored: {output}")
    return {"mail_mb": round(len(raw) / 1e6, 1), "empty_poll_mb": round(empty), "peak_mb": round(peak),
            "peak_per_mail_size": round(peak / (len(raw) / 1e6), 1), "above_empty_mb": round(peak - empty)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=40)
    parser.add_argument("--mails", default=",".join(MAILS), help="which mails, comma-separated")
    parser.add_argument("--dovecot", action="store_true", help="also from an IMAP folder of a private Dovecot")
    parser.add_argument("--postgres", default="", help="also into PostgreSQL on this server")
    args = parser.parse_args()
    size = int(args.megabytes * 1e6)
    results: dict[str, object] = {}
    server = PrivateDovecot() if args.dovecot else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, server as dovecot:
        pg_urls: list[str] = []
        try:
            for name in args.mails.split(","):
                raw = MAILS[name](size)
                sources: list[tuple[str, ImapUser | None]] = [("maildir", None)]
                if dovecot is not None:
                    sources.append(("imap", dovecot.new_user(f"mem{name[:4]}")))
                for source, user in sources:
                    databases = {"sqlite": f"sqlite:///{Path(tmp) / f'{name}-{source}.db'}"}
                    if args.postgres:
                        pg_urls.append(postgres_database(args.postgres))
                        databases["postgresql"] = pg_urls[-1]
                    for database, url in databases.items():
                        key = f"{name} from {source} into {database}"
                        if user is not None and database != "sqlite":
                            user = dovecot.new_user(f"mem{name[:4]}{database[:2]}")  # type: ignore[union-attr]
                        figures = measure(Path(tmp) / f"{name}-{source}-{database}", url, user, raw)
                        results[key] = figures
                        print(f"{key:40s} mail {figures['mail_mb']:5.1f} MB: peak RSS {figures['peak_mb']:4} MB "
                              f"= {figures['peak_per_mail_size']:4.1f}× the mail (empty poll "
                              f"{figures['empty_poll_mb']} MB; target ≤ 4×)", flush=True)
        finally:
            for url in pg_urls:
                drop_postgres(args.postgres, url)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
