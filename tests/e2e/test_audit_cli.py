"""The audit trail and retention as a functioneel beheerder uses them: `kcc-mail audit` and `purge`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kcc_cli import kcc_mail, write_config
from support.mails import customer_mail


def run(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> tuple[Path, int, int]:
    """Two mails: one registered by Anna, one dismissed by Bert (once per database; the purge test comes last)."""
    tmp_path = tmp_path_factory.mktemp("audit")
    write_config(tmp_path, database_url)
    run(tmp_path, "init")
    for n, subject in enumerate(("Vraag over parkeren", "Reclame"), 1):
        (tmp_path / "mail" / "new" / f"{n}.eml").write_bytes(customer_mail(subject))
    run(tmp_path, "poll", "--once")
    mails = {m["subject"]: m["id"] for m in json.loads(run(tmp_path, "queue", "list", "--json"))}
    registered, dismissed = mails["Vraag over parkeren"], mails["Reclame"]
    run(tmp_path, "register", str(registered), "--follow-up", "none", "--as", "anna@gemeente.nl")
    run(tmp_path, "dismiss", str(dismissed), "--reason", "spam", "--as", "bert@gemeente.nl")
    return tmp_path, registered, dismissed


def test_audit_answers_who_decided_what_about_a_mail(decided: tuple[Path, int, int]) -> None:
    cwd, registered, dismissed = decided
    lines = run(cwd, "audit", "--mail", str(registered)).splitlines()
    assert lines[0].split() == ["MOMENT", "(UTC)", "WIE", "ACTIE", "OBJECT", "DETAILS"]
    (row,) = lines[1:]
    assert "medewerker:anna@gemeente.nl" in row and "mail.geregistreerd" in row and f"inbound_mail:{registered}" in row

    events = json.loads(run(cwd, "audit", "--who", "medewerker:BERT@gemeente.nl", "--json"))
    assert [(e["action"], e["objectId"], e["details"]["reden"]) for e in events] == [
        ("mail.afgewezen", str(dismissed), "spam")
    ]
    today = datetime.now(UTC).date()
    family = json.loads(run(cwd, "audit", "--action", "mail.", "--since", str(today), "--until", str(today),
                            "--json"))
    assert {e["objectId"] for e in family} >= {str(registered), str(dismissed)}
    yesterday = str(today - timedelta(days=1))
    assert json.loads(run(cwd, "audit", "--until", yesterday, "--mail", str(registered), "--json")) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--object", "mail:1"], "write it as TYPE:ID, with TYPE one of inbound_mail, interne_taak"),
    (["--since", "gisteren"], "'gisteren' is not a date; write it as 2026-11-30"),
    (["--since", "2026-12-03", "--until", "2026-12-01"], "--since is after --until, so no event can match"),
])
def test_a_filter_that_cannot_work_is_one_clear_line(
    decided: tuple[Path, int, int], args: list[str], message: str
) -> None:
    result = kcc_mail("audit", *args, cwd=decided[0])
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_purge_geregistreerd_deletes_the_closed_dossier_and_accounts_for_it(decided: tuple[Path, int, int]) -> None:
    cwd, registered, _ = decided
    contact = json.loads(run(cwd, "queue", "show", str(registered), "--json"))["klantcontactId"]
    said = run(cwd, "purge", "--state", "geregistreerd", "--older-than", "0", "--dry-run")
    assert said.startswith("would purge klantcontacten=1 mails=1 attachments=0 blobs=1 "
                           "bytes="), said
    assert json.loads(run(cwd, "queue", "show", str(registered), "--json"))["state"] == "geregistreerd"
    result = json.loads(run(cwd, "purge", "--state", "geregistreerd", "--older-than", "0", "--as", "fb@gemeente.nl",
                            "--json"))
    assert (result["klantcontacten"], result["mailIds"]) == (1, [registered])
    gone = kcc_mail("contacts", "show", str(contact), cwd=cwd)
    assert gone.returncode == 1 and "no klantcontact" in gone.stderr
    (event,) = json.loads(run(cwd, "audit", "--action", "mail.opgeschoond", "--who", "fb@gemeente.nl", "--json"))
    assert event["details"]["mailIds"] == [registered] and len(event["details"]["referentienummers"]) == 1
    assert run(cwd, "verify").startswith("ok: every klantcontact has its mail and follow-up")
