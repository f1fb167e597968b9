"""A private, throw-away Dovecot IMAP server for integration tests.

Everything it owns (configuration, sockets, state, log, mail) lives in one directory, it listens on 127.0.0.1 only,
and it never reads /etc/dovecot, so tests can start as many as they like next to a system Dovecot.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from imapclient import IMAPClient

from kcc.config import MailboxConfig, Security

from .procfs import process_stats

START_TIMEOUT = 5.0
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]+")

_CONFIG = Template("""\
# Written by tests/support/dovecot.py; nothing here comes from /etc/dovecot.
instance_name = kcc-test-$port
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/log/dovecot.log
info_log_path = $dir/log/dovecot.log
protocols = imap
listen = 127.0.0.1
verbose_proctitle = yes

default_login_user = $login_user
default_internal_user = $internal_user
default_internal_group = $internal_group
first_valid_uid = $mail_uid
first_valid_gid = $mail_gid

disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_cache_size = 0
auth_verbose = yes
# Failed logins are part of the tests: no 2 s delay after a failure (and no auth penalty, see service anvil).
auth_failure_delay = 0
passdb {
  driver = passwd-file
  # One passwd-file per user: Dovecot stats a passwd-file at most once a second, so a user added to a
  # shared file right after another login could be unknown for up to a second. A new file is read at once.
  args = scheme=PLAIN username_format=%u $dir/users/%u
}
userdb {
  driver = static
  args = uid=$mail_uid gid=$mail_gid home=$dir/home/%u
}

mail_location = maildir:$dir/mail/%u:LAYOUT=fs
mail_uid = $mail_uid
mail_gid = $mail_gid
mail_fsync = never
mailbox_idle_check_interval = 1 secs
namespace inbox {
  inbox = yes
  separator = /
}
protocol imap {
  mail_max_userip_connections = 100
}

ssl = $ssl
$ssl_settings

service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $ssl_port
  }
}
service anvil {
  chroot =
  # Without this socket the auth process disables its penalty, which would otherwise delay every login
  # from 127.0.0.1 by up to 15 s after one wrong password.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service stats {
  chroot =
}
service auth {
  user = $internal_user
}
service auth-worker {
  user = $internal_user
}
""")


def dovecot_binary() -> str | None:
    """The dovecot executable, also when /usr/sbin is not on PATH (a non-root shell)."""
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries when it loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_self_signed_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """Write NAME.pem/NAME.key: a self-signed cert for localhost and 127.0.0.1 that clients can trust directly."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install -y openssl")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "7", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


def make_traversable(directory: Path) -> None:
    """Let Dovecot's unprivileged users reach `directory`: pytest makes its temporary directories 0700.

    Only directories below the system temporary directory that we own are opened up; anything else must
    already be traversable, otherwise we say so rather than chmod a home directory.
    """
    tmp_root = Path(tempfile.gettempdir()).resolve()
    directory = directory.resolve()
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if mode & 0o001:
            continue
        if tmp_root in path.parents and path.stat().st_uid == os.geteuid():
            path.chmod((mode & 0o7777) | 0o011)
        else:
            raise RuntimeError(f"{path} is not traversable by other users; put the Dovecot directory under /tmp")


@dataclass(frozen=True)
class ImapUser:
    """One mailbox user on a private Dovecot, with its password also written to a file (as kcc-mail reads it)."""

    server: PrivateDovecot
    name: str
    password: str
    password_file: Path

    def client(self, *, tls: bool = False) -> IMAPClient:
        """A logged-in IMAPClient for this user (plain port, or the imaps port with `tls`)."""
        return self.server.client(self.name, tls=tls)

    def append(self, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> None:
        """Deliver `raw` into `folder` as another mail client would."""
        self.server.append(self.name, folder, raw, flags)

    def mailbox_config(self, security: Security = "none", **overrides: Any) -> MailboxConfig:
        """A MailboxConfig that points kcc-mail at this user's INBOX over `security`."""
        values: dict[str, Any] = {
            "name": "test",
            "kind": "imap",
            "host": self.server.host,
            "port": self.server.ssl_port if security == "tls" else self.server.port,
            "security": security,
            "username": self.name,
            "password_file": str(self.password_file),
            "timeout": 10.0,
        }
        values.update(overrides)
        return MailboxConfig(**values)


class PrivateDovecot:
    """A Dovecot master process on free loopback ports, with all its state in one directory.

    Leave `directory` out: a fresh one is made under /tmp and removed by `close()`. Do not use a pytest tmp_path:
    every pytest session that starts (another engineer's, a CI shard) chmods /tmp/pytest-of-USER back to 0700,
    which locks Dovecot's unprivileged processes out of a server that is still running.
    """

    def __init__(self, directory: Path | None = None, *, tls: bool = False, extra_config: str = "") -> None:
        """`extra_config` is appended to dovecot.conf, e.g. `imap_capability = IMAP4rev1` for an old server."""
        self._owns_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="kcc-dovecot-"))
        self.directory = Path(directory).resolve()
        self.tls = tls
        self.extra_config = extra_config
        self.host = "127.0.0.1"
        self.port = 0
        self.ssl_port = 0
        self.cert_path: Path | None = None
        self._key_path: Path | None = None
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._counter = 0

    # --- life cycle ---------------------------------------------------------------------------------------------

    @property
    def master_pid(self) -> int | None:
        """The master's pid while it runs; it is the only process we ever signal to stop the server."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "dovecot.log"

    def start(self) -> None:
        """Start on fresh free ports (a second time on the same ports), and wait until it greets with `* OK`."""
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed: apt-get install -y dovecot-imapd")
        self._prepare_directory()
        reuse_ports = self.port != 0
        for attempt in range(3):
            if not reuse_ports:
                self.port = free_port()
                self.ssl_port = free_port() if self.tls else 0
            self._write_config()
            try:
                self._launch(binary)
                return
            except RuntimeError:
                in_use = "Address already in use" in self.log_text()
                if reuse_ports or not in_use or attempt == 2:
                    raise

    def stop(self) -> None:
        """Stop the master (it stops its children) and wait for it; kill it when it does not go within 5 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def close(self) -> None:
        """Stop, and remove the directory when we made it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateDovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def restart(self) -> None:
        """Stop and start again on the same ports, as a server reboot looks to a connected client."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything Dovecot logged, for assertions and failure messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _prepare_directory(self) -> None:
        """Create the layout and hand the parts to the users that need them (mail to the mail uid, users to auth)."""
        for sub in ("run", "state", "log", "mail", "home", "secrets", "users"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        make_traversable(self.directory)
        self.directory.chmod(0o755)
        (self.directory / "run").chmod(0o755)
        (self.directory / "secrets").chmod(0o700)
        ids = _process_ids()
        for sub in ("mail", "home"):
            os.chown(self.directory / sub, ids["mail_uid"], ids["mail_gid"])
        os.chown(self.directory / "users", -1, ids["internal_gid"])
        (self.directory / "users").chmod(0o750)
        if self.tls:
            self.cert_path, self._key_path = make_self_signed_cert(self.directory)

    def _write_config(self) -> None:
        ssl_settings = ""
        if self.tls:
            ssl_settings = f"ssl_cert = <{self.cert_path}\nssl_key = <{self._key_path}\nssl_min_protocol = TLSv1.2"
        text = _CONFIG.substitute(
            dir=self.directory,
            port=self.port,
            ssl_port=self.ssl_port,
            ssl="yes" if self.tls else "no",
            ssl_settings=ssl_settings,
            **{k: str(v) for k, v in _process_ids().items()},
        )
        (self.directory / "dovecot.conf").write_text(text + self.extra_config + "\n", encoding="utf-8")

    def _launch(self, binary: str) -> None:
        """Run the master in the foreground (so it is our child and we hold its pid) and wait for the greeting."""
        output = open(self.directory / "log" / "master.out", "ab")  # noqa: SIM115 - kept open by the child
        with output:
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(self.directory / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _greets(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        master_out = (self.directory / "log" / "master.out").read_text(errors="replace")
        tail = "\n".join((master_out + self.log_text()).splitlines()[-20:])
        raise RuntimeError(f"private dovecot on {self.host}:{self.port} did not answer * OK; log tail:\n{tail}")

    # --- users and mail -----------------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a user, usable at once (no auth cache, a passwd-file of its own).

        Changing the password of an existing user can take up to a second to be seen: Dovecot checks a
        passwd-file for changes at most once a second.
        """
        if not _USER_NAME.fullmatch(name) or ":" in password or "\n" in password:
            raise ValueError("test user names are letters, digits, '.', '_', '-', '@'; passwords hold no ':'")
        self._users[name] = password
        self._write_user(name, password)

    def new_user(self, prefix: str = "user") -> ImapUser:
        """A fresh user with a random password, so a test never sees another test's mail."""
        self._counter += 1
        name = f"{prefix}{self._counter}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        self.add_user(name, password)
        password_file = self.directory / "secrets" / name
        password_file.write_text(password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        return ImapUser(self, name, password, password_file)

    def password(self, user: str) -> str:
        return self._users[user]

    def client(self, user: str, *, tls: bool = False) -> IMAPClient:
        """A logged-in IMAPClient for `user`: the plain port, or the imaps port verified against our cert."""
        if tls:
            client = IMAPClient(self.host, self.ssl_port, ssl=True, ssl_context=self.ssl_context(), timeout=10)
        else:
            client = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        client.login(user, self._users[user])
        return client

    @contextmanager
    def session(self, user: str) -> Iterator[IMAPClient]:
        """A logged-in client that is logged out again at the end of the block."""
        client = self.client(user)
        try:
            yield client
        finally:
            client.logout()

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this server's self-signed certificate."""
        if self.cert_path is None:
            raise RuntimeError("this private dovecot was started without tls=True")
        return ssl.create_default_context(cafile=str(self.cert_path))

    def append(self, user: str, folder: str, raw: bytes, flags: Iterable[str] = ()) -> None:
        """APPEND `raw` to `folder` of `user`, creating the folder when needed."""
        with self.session(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw, flags=tuple(flags))

    def create_folder(self, user: str, folder: str) -> None:
        with self.session(user) as client:
            client.create_folder(folder)

    def delete_folder(self, user: str, folder: str) -> None:
        with self.session(user) as client:
            client.delete_folder(folder)

    def kill_sessions(self, user: str) -> int:
        """SIGKILL every imap process serving `user`: to a client this is a connection dropped without a word.

        Returns how many processes were killed. Only children of our own master are considered.
        """
        master = self.master_pid
        if master is None:
            return 0
        killed = 0
        for pid in _children(master):
            if _comm(pid) == "imap" and f"/imap [{user} " in _cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed

    def _write_user(self, name: str, password: str) -> None:
        """Write the user's passwd-file atomically, readable by the auth process's group and nobody else."""
        path = self.directory / "users" / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n", encoding="utf-8")
        os.chown(tmp, -1, _process_ids()["internal_gid"])
        tmp.chmod(0o640)
        os.replace(tmp, path)


def _process_ids() -> dict[str, Any]:
    """Which users Dovecot runs as: as root the Debian package's users and `nobody`; else the invoking user."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return {
            "login_user": "dovenull",
            "internal_user": "dovecot",
            "internal_group": "dovecot",
            "internal_gid": grp.getgrnam("dovecot").gr_gid,
            "mail_uid": nobody.pw_uid,
            "mail_gid": nobody.pw_gid,
        }
    me = pwd.getpwuid(os.geteuid())
    return {
        "login_user": me.pw_name,
        "internal_user": me.pw_name,
        "internal_group": grp.getgrgid(os.getegid()).gr_name,
        "internal_gid": os.getegid(),
        "mail_uid": os.geteuid(),
        "mail_gid": os.getegid(),
    }


def _greets(host: str, port: int) -> bool:
    """True when the port accepts a connection and says `* OK` (Dovecot is ready for logins)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _children(parent: int) -> list[int]:
    """Pids whose parent is `parent`, read from /proc."""
    return [pid for pid, fields in process_stats() if len(fields) > 1 and int(fields[1]) == parent]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
