"""The batch commands as an operator runs them: import, reprocess (also killed and run again), quarantine, purge."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kcc_cli import kcc_mail
from sqlalchemy import Engine, select
from support.mails import customer_mail

from ingest.reevaluate import derived_of
from kcc.bootstrap import App, analyse_settings
from kcc.config import load_config
from kcc.usecases.mail_import import import_path
from kcc.usecases.reprocess import Selection, reprocess
from store.audit import AuditEvent
from store.mail import InboundMail

LONG_AGO = datetime(2020, 3, 1, tzinfo=UTC)


class Operator:
    """A working directory with a kcc-mail.toml on the test database, and the mailboxes it configures."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.mailboxes: list[str] = []

    def mailbox(self) -> str:
        name = f"m{uuid.uuid4().hex[:8]}"
        self.mailboxes.append(name)
        return name

    def configure(self, *, max_mail_bytes: int = 50 * 1024 * 1024) -> None:
        parts = [f'[database]\nurl = "{self.database_url}"\n', f"[storage]\nmax_mail_bytes = {max_mail_bytes}\n"]
        for name in self.mailboxes:
            parts.append(f'[[mailbox]]\nname = "{name}"\nkind = "maildir"\npath = "{self.root / "mail" / name}"\n')
        (self.root / "kcc-mail.toml").write_text("\n".join(parts), encoding="utf-8")

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = kcc_mail(*args, cwd=self.root)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
        return subprocess.Popen(
            [sys.executable, "-m", "kcc", *args], cwd=self.root, env=environment, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )


@pytest.fixture
def operator(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[Operator]:
    yield Operator(tmp_path, database_url)


def write(path: Path, data: bytes, mtime: datetime | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def ids_by_subject(app: App, mailbox: str) -> dict[str, int]:
    with app.uow() as uow:
        mails = uow.session.scalars(select(InboundMail).where(InboundMail.mailbox == mailbox)).all()
        return {m.subject or m.source_key: m.id for m in mails}


def states(app: App, mailbox: str) -> dict[str, int]:
    with app.uow() as uow:
        found: dict[str, int] = {}
        for state in uow.session.scalars(select(InboundMail.state).where(InboundMail.mailbox == mailbox)):
            found[state] = found.get(state, 0) + 1
        return found


# ---------------------------------------------------------------------------------------------------- tests


def test_import_quarantine_and_reprocess_as_an_operator_works(operator: Operator, app: App) -> None:
    mailbox = operator.mailbox()
    operator.configure(max_mail_bytes=300)
    folder = operator.root / "bewaard"
    write(folder / "vraag.eml", customer_mail("Vraag", body="Kort."))
    write(folder / "groot.eml", customer_mail("Groot", body="Lang. " * 60))
    write(folder / "kapot.eml", b"dit is geen mail\n")
    write(folder / "notities.txt", b"Bel Karel terug\n")

    first = operator.run("import", str(folder), "--mailbox", mailbox)
    assert first.stdout.strip() == "read=3 stored=1 quarantined=2 duplicates=0 skipped=1 errors=0"
    assert "kcc-mail: skipped notities.txt: does not start with a mail header" in first.stderr
    again = operator.run("import", str(folder), "--mailbox", mailbox)
    assert again.stdout.strip() == "read=3 stored=0 quarantined=0 duplicates=3 skipped=1 errors=0"

    listed = operator.run("quarantine", "list").stdout
    assert re.search(r"^too_large\s+\d+$", listed, re.MULTILINE)
    assert re.search(r"^unparseable\s+\d+$", listed, re.MULTILINE)

    ids = ids_by_subject(app, mailbox)
    shown = operator.run("quarantine", "show", str(ids["Groot"])).stdout
    assert f"Mail {ids['Groot']} (quarantaine, too_large) in mailbox {mailbox}" in shown
    assert "Error: the mail is " in shown and "Subject: Groot" in shown and "Lang." not in shown
    export = operator.run("quarantine", "export", str(ids["kapot.eml"]), "--out", "kapot.eml")
    assert export.stdout.strip() == f"mail {ids['kapot.eml']} written to kapot.eml (17 bytes)"
    assert (operator.root / "kapot.eml").read_bytes() == b"dit is geen mail\n"
    twice = operator.run("quarantine", "export", str(ids["kapot.eml"]), "--out", "kapot.eml", ok=False)
    assert (twice.returncode, twice.stderr.strip()) == (
        1, "kcc-mail: kapot.eml exists already; choose another --out or add --force to overwrite it"
    )

    operator.configure()  # the limit raised: the large mail can now be parsed
    dry = operator.run("reprocess", "--mailbox", mailbox, "--dry-run")
    lines = dry.stdout.strip().splitlines()
    assert lines[0].startswith(f"mail {ids['Groot']}: quarantaine → te_beoordelen, would change state, reason, error")
    assert lines[-1] == "selected=2 reparsed=2 released=1 still_quarantined=1 unchanged=1 errors=0"
    assert "kcc-mail: dry run: nothing was changed" in dry.stderr
    assert states(app, mailbox) == {"te_beoordelen": 1, "quarantaine": 2}

    done = json.loads(operator.run("reprocess", "--mailbox", mailbox, "--json").stdout)
    assert {k: done[k] for k in ("selected", "released", "still_quarantined", "unchanged", "errors")} == {
        "selected": 2, "released": 1, "still_quarantined": 1, "unchanged": 1, "errors": 0,
    }

    refused = operator.run("reprocess", "--state", "geregistreerd", ok=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("kcc-mail: reprocessing geregistreerd or afgewezen mails is refused")
    assert "--include-registered" in refused.stderr

    kapot = str(ids["kapot.eml"])
    released = operator.run("quarantine", "release", kapot, "--as", "anna@gemeente.nl")
    assert released.stdout.strip() == f"mail {kapot} released into the review queue (was unparseable)"
    wrong = operator.run("quarantine", "dismiss", kapot, "--reason", "spam", "--as", "anna@gemeente.nl", ok=False)
    assert wrong.returncode == 1 and "not in quarantine: it is in the review queue" in wrong.stderr
    registered = operator.run("register", kapot, "--follow-up", "none", "--as", "anna@gemeente.nl")
    assert registered.stdout.startswith(f"mail {kapot} registered as klantcontact")


def test_import_refuses_what_it_cannot_read_with_a_clear_line(operator: Operator) -> None:
    mailbox = operator.mailbox()
    operator.configure()
    write(operator.root / "notities.txt", b"Geen mail\n")

    missing = operator.run("import", "bestaat-niet", "--mailbox", mailbox, ok=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unknown = operator.run("import", "notities.txt", "--mailbox", "onbekend", ok=False)
    assert unknown.returncode == 2 and "no mailbox named 'onbekend'" in unknown.stderr
    not_mail = operator.run("import", "notities.txt", "--mailbox", mailbox, ok=False)
    assert not_mail.returncode == 1
    assert not_mail.stderr.startswith("kcc-mail: notities.txt is not an mbox")


def test_purge_deletes_old_dismissed_mails_and_says_what(operator: Operator, app: App) -> None:
    mailbox = operator.mailbox()
    operator.configure()
    write(operator.root / "oud" / "spam.eml", customer_mail("Oude spam"), LONG_AGO)
    write(operator.root / "oud" / "vraag.eml", customer_mail("Oude vraag"), LONG_AGO)
    operator.run("import", "oud", "--mailbox", mailbox)
    ids = ids_by_subject(app, mailbox)
    operator.run("dismiss", str(ids["Oude spam"]), "--reason", "spam", "--as", "anna@gemeente.nl")

    dry = operator.run("purge", "--older-than", "365", "--state", "afgewezen", "--dry-run")
    assert dry.stdout.startswith("would purge mails=1 attachments=0 blobs=1 bytes=")
    assert "dry run: nothing was deleted" in dry.stderr
    done = json.loads(operator.run("purge", "--older-than", "365", "--state", "afgewezen", "--json").stdout)
    assert (done["mails"], done["blobs"], done["mailIds"]) == (1, 1, [ids["Oude spam"]])
    assert ids_by_subject(app, mailbox) == {"Oude vraag": ids["Oude vraag"]}
    with app.uow() as uow:
        event = uow.session.scalars(select(AuditEvent).where(AuditEvent.action == "mail.opgeschoond")
                                    .order_by(AuditEvent.id.desc())).first()
        assert event is not None and event.details["mails"] == 1 and event.who == "kcc-mail purge"

    refused = operator.run("purge", "--older-than", "30", "--state", "te_beoordelen", ok=False)
    assert refused.returncode == 2
    assert "'te_beoordelen' is not one of 'afgewezen', 'quarantaine', 'geregistreerd'" in refused.stderr


def dump(app: App, mailbox: str) -> dict[str, Any]:
    with app.uow() as uow:
        mails = uow.session.scalars(select(InboundMail).where(InboundMail.mailbox == mailbox)).all()
        return {mail.raw_sha256: derived_of(mail) for mail in mails}


def released_events(app: App, mailbox: str) -> list[str]:
    with app.uow() as uow:
        ids = [str(i) for i in uow.session.scalars(select(InboundMail.id).where(InboundMail.mailbox == mailbox))]
        return list(uow.session.scalars(
            select(AuditEvent.object_id).where(AuditEvent.action == "mail.vrijgegeven", AuditEvent.object_id.in_(ids))
        ))


def test_reprocess_killed_in_the_middle_and_run_again_ends_as_one_run(operator: Operator, app: App) -> None:
    once, killed = operator.mailbox(), operator.mailbox()
    operator.configure(max_mail_bytes=100)  # every mail is "too large" when stored
    folder = operator.root / "veel"
    total = 400
    for n in range(total):
        write(folder / f"{n:04}.eml", customer_mail(f"Vraag {n}", body=f"Bericht nummer {n}.\r\n" * (n % 5 + 1)))
    operator.run("import", str(folder), "--mailbox", killed)
    operator.configure()  # the limit raised: reprocessing releases them all
    settings = analyse_settings(load_config(operator.root / "kcc-mail.toml"))
    import_path(app.uow, folder, once, replace(settings, max_mail_bytes=100))
    reprocess(app.uow, Selection(mailbox=once), settings)  # the reference: one run, not interrupted

    process = operator.popen("reprocess", "--mailbox", killed)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            progress = re.match(rf"reprocess: (\d+)/{total} ", line)
            if progress and int(progress.group(1)) >= 100:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        _reap_group(process.pid)
    assert process.returncode == -signal.SIGKILL
    partial = states(app, killed)
    assert 0 < partial.get("te_beoordelen", 0) < total, partial  # it really was killed in the middle

    rerun = operator.run("reprocess", "--mailbox", killed)
    assert rerun.stdout.strip() == (
        f"selected={partial['quarantaine']} reparsed={partial['quarantaine']} released={partial['quarantaine']} "
        "still_quarantined=0 unchanged=0 errors=0"
    )
    assert states(app, killed) == states(app, once) == {"te_beoordelen": total}
    assert dump(app, killed) == dump(app, once)
    events = released_events(app, killed)
    assert len(events) == len(set(events)) == total  # each mail released exactly once, with its audit event


def _reap_group(pgid: int) -> None:
    """The killed run's parser processes (its own session) must not outlive the test."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
