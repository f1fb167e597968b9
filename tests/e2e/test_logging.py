"""Logging as an operator and an auditor see it: one line per event, ids instead of contents, never a secret.

A full flow (APPEND to Dovecot, `poll --once`, `reply`, `relay --once`, `run` for a moment) at INFO, as text and as
JSON: no sender, recipient, subject or word of the mail or the answer appears, and the lines name the mailbox, the
mail and the outbox message they are about. Then the same at DEBUG with an IMAP password, an SMTP AUTH password and
XOAUTH2 tokens for both, all of them distinctive: none appears, not even base64-encoded as the wire carries it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import signal
from pathlib import Path
from typing import Any

import pytest
from faultkit import contents_in, stored_count, wait_until
from kcc_cli import end_session, kcc_mail, start_kcc_mail, write_config
from sqlalchemy import Engine, func, select
from support.dovecot import ImapUser, PrivateDovecot
from support.smtpfaults import running_faulty_server
from support.smtpserver import SmtpTestServer

from store.engine import make_engine
from store.mail import InboundMail

SENDER = "Marieke Verhoeven <marieke.verhoeven@voorbeeld-burger.nl>"
ADDRESSES = ("marieke.verhoeven@voorbeeld-burger.nl", "m.verhoeven.prive@voorbeeld-burger.nl",
             "info@gemeente.example")
SUBJECT = "Lantaarnpaal kapot Kastanjelaan"
BODY = "De lantaarnpaal voor huisnummer zeventien brandt al weken niet; het is er erg donker."
ANSWER = "Onze monteur repareert de lantaarnpaal aan de Kastanjelaan binnen vijf werkdagen."
WORDS = (*ADDRESSES, "Marieke", "Verhoeven", "Lantaarnpaal", "lantaarnpaal", "Kastanjelaan", "zeventien",
         "monteur", "werkdagen")
"""Everything this test puts in a mail or an answer that must not reach a log line at INFO or above."""

IMAP_PASSWORD = "Imap-Wachtwoord-9d41fe"
IMAP_TOKEN = "Imap-Token-5c0b72aa"
SMTP_PASSWORD = "Smtp-Wachtwoord-3e88c1"
SMTP_TOKEN = "Smtp-Token-a61f09d3"
SMTP_USER = "kcc-relay"


def customer_mail(number: int, *, padding: int = 0) -> bytes:
    extra = ("\r\n" + "Extra uitleg over de straat. " * (padding // 29 + 1))[:padding] if padding else ""
    return (
        f"From: {SENDER}\r\nReply-To: m.verhoeven.prive@voorbeeld-burger.nl\r\nTo: info@gemeente.example\r\n"
        f"Subject: {SUBJECT} {number}\r\nMessage-ID: <lamp-{number}@voorbeeld-burger.nl>\r\n"
        "Date: Mon, 23 Nov 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"\r\n{BODY}{extra}\r\n"
    ).encode()


def run(cwd: Path, fmt: str, level: str, *args: str) -> tuple[str, str]:
    """One kcc-mail command at `level` in `fmt`; returns (stdout, stderr) and requires success."""
    result = kcc_mail("--log-level", level, "--log-format", fmt, *args, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, result.stderr


def reply_to_oldest(cwd: Path, fmt: str, level: str, mailbox: str, database_url: str) -> str:
    """Answer the oldest waiting mail of `mailbox` with ANSWER, as an employee does; returns the log."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            mail_id = connection.scalar(
                select(func.min(InboundMail.id))
                .where(InboundMail.mailbox == mailbox, InboundMail.state == "te_beoordelen")
            )
    finally:
        engine.dispose()
    (cwd / "antwoord.txt").write_text(ANSWER + "\n", encoding="utf-8")
    return run(cwd, fmt, level, "reply", str(mail_id), "--text-file", "antwoord.txt", "--as", "anna@gemeente.nl")[1]


def events(log: str, fmt: str) -> list[dict[str, Any]]:
    """Each log line as an event: JSON lines parsed, text lines split into time, level, logger and message.

    Every line must be a whole event: a traceback or a multi-line message would not parse.
    """
    found = []
    for line in log.splitlines():
        if fmt == "json":
            found.append(json.loads(line))
            continue
        match = re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) (.*)",
                             line)
        assert match, f"not one event per line: {line!r}"
        found.append({"level": match[1], "logger": match[2], "message": match[3]})
    return found


def naming(found: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    return [event for event in found if re.search(pattern, event["message"])]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_info_logs_name_the_ids_and_show_no_addresses_subjects_or_text(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser, smtp_server: SmtpTestServer, fmt: str
) -> None:
    mailbox = imap_user.name
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=mailbox, smtp_port=smtp_server.port,
                 extra="[storage]\nmax_mail_bytes = 20000\n\n[replies]\nrelay_interval = 0.5\n")
    run(tmp_path, fmt, "INFO", "init")
    imap_user.append(customer_mail(1))
    imap_user.append(customer_mail(2, padding=30_000))  # over max_mail_bytes: kept in quarantine
    imap_user.append(customer_mail(3))
    log = run(tmp_path, fmt, "INFO", "poll", "--once")[1]
    log += reply_to_oldest(tmp_path, fmt, "INFO", mailbox, database_url)
    log += run(tmp_path, fmt, "INFO", "relay", "--once")[1]
    assert len(smtp_server.messages) == 1

    log += reply_to_oldest(tmp_path, fmt, "INFO", mailbox, database_url)  # sent by the running service below
    imap_user.append(customer_mail(4))  # fetched by the running service
    service_log = tmp_path / "service.log"
    service = start_kcc_mail("--log-level", "INFO", "--log-format", fmt, "run", cwd=tmp_path, log=service_log)
    try:
        wait_until(lambda: stored_count(engine, mailbox) == 4 and len(smtp_server.messages) == 2, 60,
                   "the running service fetched the new mail and sent the second answer")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        end_session(service)
    log += service_log.read_text()

    print(f"\n{len(log.splitlines())} log lines, e.g.:\n" + "\n".join(log.splitlines()[:12]))
    assert contents_in(log, WORDS) == [], "mail contents or addresses at INFO"
    found = events(log, fmt)
    assert all(event["level"] in ("INFO", "WARNING") for event in found), "a clean run logs no errors"
    stored = naming(found, r"^mailbox=\S+ mail=\d+ stored$")
    quarantined = naming(found, r"^mailbox=\S+ mail=\d+ quarantined reason=too_large$")
    sent = naming(found, r"^outbox=\d+ sent attempt=1$")
    connected = naming(found, r"^mailbox=\S+ connected to ")
    assert (len(stored), len(quarantined), len(sent)) == (3, 1, 2)
    assert connected and all(mailbox in event["message"] for event in stored + quarantined + connected)
    if fmt == "json":  # the ids are keys of their own, for a log collector to filter on
        assert all(event["mailbox"] == mailbox and isinstance(event["mail"], int) for event in stored + quarantined)
        assert all(isinstance(event["outbox"], int) for event in sent)
        assert all(event["mailbox"] == mailbox for event in connected)


def secrets_in(log: str) -> list[str]:
    """Each secret found in the log, also in the encodings the wire uses (AUTH PLAIN, XOAUTH2)."""
    secrets = [IMAP_PASSWORD, IMAP_TOKEN, SMTP_PASSWORD, SMTP_TOKEN]
    encoded = [
        base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),
        base64.b64encode(SMTP_PASSWORD.encode()).decode(),
        base64.b64encode(f"user={SMTP_USER}\x01auth=Bearer {SMTP_TOKEN}\x01\x01".encode()).decode(),
    ]
    return [secret for secret in secrets + encoded if secret in log]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_passwords_and_tokens_never_appear_even_at_debug(tmp_path: Path, dovecot: PrivateDovecot, fmt: str) -> None:
    # The secrets are those of the mail servers, which do not depend on the database: SQLite is enough here.
    url = f"sqlite:///{tmp_path / 'kcc-mail.db'}"
    with_password = make_user(dovecot, "wachtwoord", IMAP_PASSWORD, tmp_path)
    with_token = make_user(dovecot, "token", IMAP_TOKEN, tmp_path)  # Dovecot checks the token as a password
    (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    (tmp_path / "smtp-token").write_text(SMTP_TOKEN + "\n")
    (tmp_path / "wrong-password").write_text("Fout-Wachtwoord-7b2e90\n")
    smtp_auth = SmtpTestServer(auth=(SMTP_USER, SMTP_PASSWORD))
    smtp_auth.start()
    log = ""
    try:
        with running_faulty_server(xoauth2=(SMTP_USER, SMTP_TOKEN)) as smtp_oauth:
            # Passwords: IMAP LOGIN and SMTP AUTH.
            write_config(tmp_path, url, imap=with_password, mailbox_name=with_password.name,
                         smtp_port=smtp_auth.port, smtp_extra=f'username = "{SMTP_USER}"\n'
                         f'password_file = "{tmp_path / "smtp-password"}"\n')
            log += run(tmp_path, fmt, "DEBUG", "init")[1]
            with_password.append(customer_mail(11))
            log += run(tmp_path, fmt, "DEBUG", "poll", "--once")[1]
            log += reply_to_oldest(tmp_path, fmt, "DEBUG", with_password.name, url)
            log += run(tmp_path, fmt, "DEBUG", "relay", "--once")[1]
            assert len(smtp_auth.messages) == 1

            # Tokens: IMAP AUTHENTICATE XOAUTH2 and SMTP AUTH XOAUTH2.
            write_config(tmp_path, url, imap=with_token, mailbox_name=with_token.name,
                         mailbox_extra=f'auth = "xoauth2"\ntoken_file = "{with_token.password_file}"\n',
                         smtp_port=smtp_oauth.port, smtp_extra=f'auth = "xoauth2"\nusername = "{SMTP_USER}"\n'
                         f'token_file = "{tmp_path / "smtp-token"}"\n')
            log += run(tmp_path, fmt, "DEBUG", "check")[1]
            with_token.append(customer_mail(12))
            log += run(tmp_path, fmt, "DEBUG", "poll", "--once")[1]
            log += reply_to_oldest(tmp_path, fmt, "DEBUG", with_token.name, url)
            log += run(tmp_path, fmt, "DEBUG", "relay", "--once")[1]
            assert len(smtp_oauth.messages) == 1

            # A refused login: the server's refusal is shown, the password that was tried is not.
            write_config(tmp_path, url, imap=with_password, mailbox_name=with_password.name,
                         smtp_port=smtp_auth.port)
            config = tmp_path / "kcc-mail.toml"
            config.write_text(config.read_text().replace(str(with_password.password_file),
                                                         str(tmp_path / "wrong-password")))
            refused = kcc_mail("--log-level", "DEBUG", "--log-format", fmt, "poll", "--once", cwd=tmp_path)
            assert refused.returncode == 1 and "login refused" in refused.stderr
            log += refused.stdout + refused.stderr
    finally:
        smtp_auth.stop()
    assert "> AUTHENTICATE XOAUTH2" in log and "> LOGIN" in log, "the DEBUG log shows kcc-mail's IMAP steps"
    (tmp_path / "debug.log").write_text(log)  # kept for whoever has to look at a failure
    assert secrets_in(log) == [], "a secret in the log"
    assert "Fout-Wachtwoord-7b2e90" not in log
    assert contents_in(log, WORDS) == [], "mail contents or addresses at DEBUG (a library's protocol log)"


def make_user(dovecot: PrivateDovecot, prefix: str, password: str, directory: Path) -> ImapUser:
    """A new Dovecot user with a chosen (distinctive) password, kept in a file as kcc-mail reads it."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    dovecot.add_user(name, password)
    password_file = directory / f"{prefix}-secret"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return ImapUser(dovecot, name, password, password_file)
