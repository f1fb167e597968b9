"""End to end as a KCC employee works: a mail APPENDed to Dovecot, `poll --once`, `register`, `tasks show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kcc_cli import kcc_mail, write_config
from support.dovecot import ImapUser


@pytest.fixture
def workdir(tmp_path: Path, database_url: str, imap_user: ImapUser) -> Path:
    """A working directory with a kcc-mail.toml for this test's IMAP user and the module's database."""
    write_config(tmp_path, database_url, imap=imap_user)
    assert run(tmp_path, "init").returncode == 0
    return tmp_path


def run(cwd: Path, *args: str) -> Any:
    return kcc_mail(*args, cwd=cwd)


def ok_json(cwd: Path, *args: str) -> Any:
    result = run(cwd, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


CUSTOMER_MAIL = (
    b"From: Karel van der Wittewiek <karel@example.nl>\r\nTo: info@gemeente.nl\r\n"
    b"Subject: Graag terugbellen over mijn aanvraag\r\nMessage-ID: <terugbel-1@example.nl>\r\n"
    b"Date: Mon, 23 Nov 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Goedemorgen,\r\n\r\nKunt u mij terugbellen op 06-12345678 over mijn aanvraag?\r\n\r\nKarel\r\n"
)


def test_from_dovecot_to_an_interne_taak(workdir: Path, imap_user: ImapUser) -> None:
    imap_user.append(CUSTOMER_MAIL)
    poll = run(workdir, "poll", "--once")
    assert (poll.returncode, poll.stdout.strip()) == (0, "fetched=1 stored=1 quarantined=0 duplicates=0")

    (queued,) = ok_json(workdir, "queue", "list")
    assert queued["subject"] == "Graag terugbellen over mijn aanvraag"
    assert (queued["from"], queued["state"], queued["flags"]) == ("karel@example.nl", "te_beoordelen", [])

    register = run(
        workdir, "register", str(queued["id"]), "--follow-up", "task", "--handeling", "Terugbellen",
        "--toelichting", "Graag vandaag bellen.", "--assign", "afdeling:Vergunningen",
        "--as", "anna@gemeente.nl",
    )
    assert register.returncode == 0, register.stderr
    assert "registered as klantcontact" in register.stdout and "with interne taak" in register.stdout

    (taak,) = ok_json(workdir, "tasks", "list", "--assigned", "afdeling:Vergunningen")
    detail = ok_json(workdir, "tasks", "show", str(taak["id"]))
    assert (detail["gevraagdeHandeling"], detail["toelichting"], detail["status"]) == (
        "Terugbellen", "Graag vandaag bellen.", "te_verwerken"
    )
    assert [a["naam"] for a in detail["toegewezenAanActoren"]] == ["Vergunningen"]
    contact = detail["aanleidinggevendKlantcontact"]
    assert (contact["kanaal"], contact["onderwerp"]) == ("e-mail", "Graag terugbellen over mijn aanvraag")
    assert "06-12345678" in contact["inhoud"]
    assert contact["plaatsgevondenOp"] is not None and contact["indicatieContactGelukt"] is True
    (klant,) = contact["hadBetrokkenen"]
    assert klant["contactnaam"]["achternaam"] == "Wittewiek" and klant["initiator"] is True
    assert klant["digitaleAdressen"][0]["adres"] == "karel@example.nl"
    assert [b["informatieobject"]["formaat"] for b in contact["omvatteBijlagen"]] == ["message/rfc822"]

    again = run(workdir, "register", str(queued["id"]), "--follow-up", "none", "--as", "bob@gemeente.nl")
    assert again.returncode == 1 and "is geregistreerd by anna@gemeente.nl" in again.stderr

    complete = run(workdir, "tasks", "complete", str(taak["id"]), "--as", "piet@gemeente.nl")
    assert complete.returncode == 0
    assert ok_json(workdir, "tasks", "show", str(taak["id"]))["afgehandeldOp"] is not None

    verify = run(workdir, "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok")


def test_verify_finds_an_orphan_and_says_so(workdir: Path, database_url: str) -> None:
    from sqlalchemy import text

    from store.engine import make_engine

    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO klantcontact (uuid, referentienummer, kanaal, onderwerp, inhoud, taal, vertrouwelijk, "
            "plaatsgevonden_op, created_at) VALUES ('0f0e0d0c0b0a09080706050403020100', '9999999999', 'e-mail', "
            "'wees', '', 'nld', false, '2026-11-23 09:00:00+00:00', '2026-11-23 09:00:00+00:00')"
        ))
    engine.dispose()
    verify = run(workdir, "verify")
    assert verify.returncode == 1
    assert "has no betrokkene" in verify.stdout
