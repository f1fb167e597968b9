"""Run the `kcc-mail` command as a user would: a separate process, in a working directory of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from support.dovecot import ImapUser
from support.procfs import process_stats


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
    extra: str = "", imap_port: int | None = None, mailbox_extra: str = "", smtp_extra: str = "",
    timeout: float = 10.0, mailbox_name: str = "info", web: str = "enabled = false\n",
) -> Path:
    """A kcc-mail.toml in `directory`: the test database, an IMAP mailbox on the private Dovecot (else a
    Maildir), plain SMTP to a test server on loopback (else the .eml directory), plus `extra` TOML.

    `imap_port` points the mailbox at another loopback port (a fault proxy in front of Dovecot); `mailbox_extra`
    and `smtp_extra` are TOML lines added to the [[mailbox]] and [smtp] tables; `timeout` is both their timeout.
    `web` is the [web] table: off unless a test wants the screen, so services started side by side (and tests
    run beside each other) never compete for its default port.
    """
    if imap is not None:
        mailbox = (
            f'kind = "imap"\nhost = "{imap.server.host}"\nport = {imap_port or imap.server.port}\n'
            f'security = "none"\nusername = "{imap.name}"\npassword_file = "{imap.password_file}"\n'
            f"timeout = {timeout}\n"
        )
    else:
        mailbox = f'kind = "maildir"\npath = "{directory / "mail"}"\n'
    if smtp_port is not None:
        smtp = f'kind = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout = {timeout}\n'
    else:
        smtp = f'kind = "directory"\ndirectory = "{directory / "outgoing"}"\n'
    (directory / "kcc-mail.toml").write_text(
        f'[database]\nurl = "{database_url}"\n\n[[mailbox]]\nname = "{mailbox_name}"\n{mailbox}{mailbox_extra}\n'
        f'[smtp]\n{smtp}{smtp_extra}'
        f'from_address = "info@gemeente.example"\nfrom_name = "Gemeente Voorbeeld"\n\n[web]\n{web}\n{extra}',
        encoding="utf-8",
    )
    return directory


def start_kcc_mail(
    *args: str, cwd: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`kcc-mail ARGS` in the background, stdout and stderr appended to `log` (a pipe could fill up and block
    a long-running service). It runs in a session of its own, so the processes it starts can be found by
    `session_processes` and none outlives the test."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    environment.update(env or {})
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "kcc", *args], cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
            stdout=output, stderr=output, start_new_session=True,
        )


def session_processes(session_id: int) -> list[int]:
    """The pids of the live (not zombie) processes in session `session_id`, read from /proc."""
    return [
        pid for pid, fields in process_stats() if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == session_id
    ]


def end_session(process: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a service started by `start_kcc_mail` (its own pid, then its session's)."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    for pid in session_processes(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def peak_rss_mb(pid: int) -> float:
    """The highest resident memory the process has had (VmHWM), in MB; read it before the process exits."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")
