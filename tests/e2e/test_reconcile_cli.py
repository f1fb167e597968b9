"""`kcc-mail reconcile` and the reconciliation inside `kcc-mail run`, as an operator uses them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from faultkit import wait_until
from kcc_cli import end_session, kcc_mail, start_kcc_mail, write_config
from sqlalchemy import Engine, delete, select
from support.dovecot import ImapUser

from store.mail import InboundMail, ReconcileResult


def mail(subject: str) -> bytes:
    return f"From: karel@example.nl\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode()


def test_reconcile_says_nothing_lost_then_names_a_loss_with_exit_1_and_status_goes_critical(
    tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser,
) -> None:
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=imap_user.name)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    imap_user.append(mail("Een"))
    imap_user.append(mail("Twee"))
    assert kcc_mail("poll", "--once", cwd=tmp_path).returncode == 0

    fine = kcc_mail("reconcile", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip() == f"mailbox {imap_user.name}: nothing lost; folder INBOX: 2 of 2 on the server stored"

    with engine.begin() as connection:
        connection.execute(delete(InboundMail).where(InboundMail.mailbox == imap_user.name,
                                                     InboundMail.subject == "Twee"))
    lost = kcc_mail("reconcile", "--json", "--mailbox", imap_user.name, cwd=tmp_path)
    assert lost.returncode == 1, lost.stderr
    [found] = json.loads(lost.stdout)
    assert found["lost"] == 1 and found["folders"][0]["marked_not_stored"][0]["uid"] == 2
    status = kcc_mail("status", cwd=tmp_path)
    assert status.returncode == 2 and "found 1 lost mail(s)" in status.stdout, status.stdout


def test_reconcile_refuses_a_mailbox_that_has_no_uids(tmp_path: Path, database_url: str) -> None:
    write_config(tmp_path, database_url)  # a Maildir mailbox
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    refused = kcc_mail("reconcile", "--mailbox", "info", cwd=tmp_path)
    assert refused.returncode != 0 and "only an IMAP mailbox has UIDs to reconcile" in refused.stderr
    none = kcc_mail("reconcile", cwd=tmp_path)
    assert none.returncode == 2 and "no IMAP mailbox is configured" in none.stderr


def test_run_reconciles_every_interval(tmp_path: Path, database_url: str, engine: Engine, imap_user: ImapUser) -> None:
    write_config(tmp_path, database_url, imap=imap_user, mailbox_name=imap_user.name,
                 extra="[monitoring]\nreconcile_interval_minutes = 0.02\n")
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    imap_user.append(mail("Een"))
    log = tmp_path / "service.log"
    service = start_kcc_mail("--log-level", "INFO", "run", cwd=tmp_path, log=log)
    try:
        def reconciled() -> bool:
            with engine.connect() as connection:
                summary = connection.scalar(select(ReconcileResult.summary)
                                            .where(ReconcileResult.mailbox == imap_user.name))
            return summary == f"mailbox {imap_user.name}: nothing lost; folder INBOX: 1 of 1 on the server stored"

        wait_until(reconciled, 60, "the service reconciled the mailbox after intake stored its mail")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        end_session(service)
    said = log.read_text(errors="replace")
    assert f"reconcile: mailbox {imap_user.name} against the database every 0.02 min" in said
    assert "Traceback" not in said
