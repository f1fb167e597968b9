"""Run the `kcc-mail` command as a user would: a separate process, in a working directory of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.dovecot import ImapUser


def kcc_mail(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kcc-mail ARGS` with the environment cleared of KCC_ variables except those given."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kcc", *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def write_config(
    directory: Path, database_url: str, *, imap: ImapUser | None = None, smtp_port: int | None = None,
    extra: str = "",
) -> Path:
    """A kcc-mail.toml in `directory`: the test database, an IMAP mailbox on the private Dovecot (else a
    Maildir), plain SMTP to a test server on loopback (else the .eml directory), plus `extra` TOML."""
    if imap is not None:
        mailbox = (
            f'kind = "imap"\nhost = "{imap.server.host}"\nport = {imap.server.port}\nsecurity = "none"\n'
            f'username = "{imap.name}"\npassword_file = "{imap.password_file}"\ntimeout = 10.0\n'
        )
    else:
        mailbox = f'kind = "maildir"\npath = "{directory / "mail"}"\n'
    if smtp_port is not None:
        smtp = f'kind = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout = 10.0\n'
    else:
        smtp = f'kind = "directory"\ndirectory = "{directory / "outgoing"}"\n'
    (directory / "kcc-mail.toml").write_text(
        f'[database]\nurl = "{database_url}"\n\n[[mailbox]]\nname = "info"\n{mailbox}\n[smtp]\n{smtp}'
        f'from_address = "info@gemeente.example"\nfrom_name = "Gemeente Voorbeeld"\n\n{extra}',
        encoding="utf-8",
    )
    return directory
