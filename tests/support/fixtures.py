"""Pytest fixtures for the real servers; loaded with `pytest_plugins = ["support.fixtures"]` in tests/conftest.py.

A missing Dovecot skips the tests that need it, except under KCC_REQUIRE_ALL=1 (CI), where a skipped
integration test would hide a failure and so fails instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dovecot import ImapUser, PrivateDovecot, dovecot_binary
from .require import unavailable
from .smtpserver import SmtpTestServer

MISSING_DOVECOT = "dovecot is not installed: apt-get install -y dovecot-imapd"


def require_dovecot() -> None:
    """Skip (or, under KCC_REQUIRE_ALL=1, fail) the calling test when there is no dovecot binary."""
    if dovecot_binary() is None:
        unavailable(MISSING_DOVECOT)


def _running_dovecot(keep_log_in: Path, *, tls: bool) -> Iterator[PrivateDovecot]:
    """Run a private Dovecot outside pytest's tmp dirs (see PrivateDovecot); its log is kept in `keep_log_in`."""
    require_dovecot()
    server = PrivateDovecot(tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.log_path.exists():
            shutil.copy(server.log_path, keep_log_in / "dovecot.log")
        server.close()


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDovecot]:
    """One private Dovecot (plain IMAP, no TLS) for the whole test session; use `imap_user` for a clean mailbox."""
    yield from _running_dovecot(tmp_path_factory.mktemp("dovecot"), tls=False)


@pytest.fixture(scope="session")
def dovecot_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDovecot]:
    """A private Dovecot with a self-signed certificate: imaps on `ssl_port`, STARTTLS on `port`.

    Clients verify it with `dovecot_tls.ssl_context()` (or `cafile=dovecot_tls.cert_path`).
    """
    yield from _running_dovecot(tmp_path_factory.mktemp("dovecot-tls"), tls=True)


@pytest.fixture
def imap_user(dovecot: PrivateDovecot) -> ImapUser:
    """A fresh user with an empty INBOX on the session Dovecot, so tests never see each other's mail."""
    return dovecot.new_user()


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A recording SMTP server (no AUTH, no TLS) on a free loopback port, for one test."""
    server = SmtpTestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
