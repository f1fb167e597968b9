"""A newcomer's first minutes: `kcc-mail --help`, `init` and `check`, on the defaults and the example file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from kcc_cli import kcc_mail

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = kcc_mail("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("init", "check"):
        assert f"  {command} " in result.stdout


def test_init_then_check_works_on_the_built_in_defaults(tmp_path: Path) -> None:
    init = kcc_mail("init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "schema created" in init.stdout
    assert (tmp_path / "var" / "kcc-mail.db").is_file()
    assert (tmp_path / "var" / "mail" / "info" / "new").is_dir()
    assert (tmp_path / "var" / "outgoing").is_dir()

    check = kcc_mail("check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   database: sqlite:///var/kcc-mail.db: connected, schema up to date" in check.stdout
    assert "ok   mailbox info: var/mail/info: connected, 0 mails in the folder" in check.stdout
    assert "ok   smtp: directory var/outgoing: writable" in check.stdout

    again = kcc_mail("init", cwd=tmp_path)
    assert "schema is up to date" in again.stdout


def test_the_deployment_notes_quote_what_init_prints(tmp_path: Path) -> None:
    said = kcc_mail("init", cwd=tmp_path).stdout.splitlines()[0]  # "database …: schema created at 0003"
    created = said[said.index("schema created at "):]
    assert f"`{created}`" in (EXAMPLE.parent / "docs" / "deployment.md").read_text(encoding="utf-8")


def test_templates_list_names_a_broken_template_with_its_error(tmp_path: Path) -> None:
    folder = tmp_path / "sjablonen"
    shutil.copytree(Path(__file__).resolve().parents[2] / "templates" / "replies", folder)
    (folder / "kapot.toml").write_text('description = "Een sjabloon met een fout"\nsubject = ""\nvariables = []\n')
    (folder / "kapot.txt.j2").write_text("Beste {{ naam }\n")
    (tmp_path / "kcc-mail.toml").write_text(f'[replies]\ntemplates_dir = "{folder}"\n')
    listed = kcc_mail("templates", "list", cwd=tmp_path)
    assert listed.returncode == 1
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["antwoord", "doorverwezen", "kapot", "ontvangstbevestiging"]
    (broken,) = [line for line in lines if line.startswith("kapot")]
    assert "BROKEN: " in broken and "kapot.txt.j2" in broken and "line 1" in broken
    assert "1 template(s) cannot be used until fixed" in listed.stderr
    (folder / "kapot.txt.j2").write_text("Beste {{ naam }}\n")
    assert kcc_mail("templates", "list", cwd=tmp_path).returncode == 0


def test_check_on_the_example_configuration_names_what_it_cannot_reach(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "kcc-mail.toml")
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    secrets = {"KCC_MAILBOX_INFO_PASSWORD": "imap-wachtwoord", "KCC_SMTP_PASSWORD": "smtp-wachtwoord"}
    check = kcc_mail("check", cwd=tmp_path, env=secrets)
    assert check.returncode == 1
    assert "configuration kcc-mail.toml: valid" in check.stdout
    assert "ok   database" in check.stdout
    assert "FAIL mailbox info:" in check.stdout and "imap.example.nl" in check.stdout
    assert "FAIL smtp: SMTP server smtp.example.nl:587 cannot be reached" in check.stdout
    assert "Traceback" not in check.stderr
    assert "wachtwoord" not in check.stdout + check.stderr


def test_a_command_on_a_missing_schema_says_to_run_init(tmp_path: Path) -> None:
    check = kcc_mail("check", cwd=tmp_path)
    assert check.returncode == 1
    assert "run `kcc-mail init`" in check.stdout


def test_a_broken_configuration_stops_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[storage]\nmax_mail_bytes = 'veel'\n")
    result = kcc_mail("--config", "broken.toml", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kcc-mail: broken.toml: storage.max_mail_bytes must be int, not str ('veel')"
    )


README_MAIL = (
    b"From: Karel <karel@example.nl>\r\nTo: info@gemeente.example\r\nSubject: Vraag\r\n"
    b"Message-ID: <readme-1@example.nl>\r\n\r\nWanneer wordt het papier opgehaald?\r\n"
)


def test_the_readme_try_out_on_the_defaults(tmp_path: Path) -> None:
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    (tmp_path / "var" / "mail" / "info" / "new" / "1.eml").write_bytes(README_MAIL)
    poll = kcc_mail("poll", "--once", cwd=tmp_path)
    assert poll.stdout.strip() == "fetched=1 stored=1 quarantined=0 duplicates=0"
    assert list((tmp_path / "var" / "mail" / "info" / "cur").iterdir())  # marked: moved to cur/
    assert "Vraag" in kcc_mail("queue", "list", cwd=tmp_path).stdout
    (tmp_path / "antwoord.txt").write_text("Elke tweede dinsdag.\n")
    reply = kcc_mail("reply", "1", "--text-file", "antwoord.txt", "--as", "anna@gemeente.nl", cwd=tmp_path)
    assert reply.returncode == 0, reply.stderr
    assert kcc_mail("relay", "--once", cwd=tmp_path).stdout.strip() == "sent=1 retry=0 failed=0 uncertain=0"
    (sent,) = (tmp_path / "var" / "outgoing").glob("*.eml")
    assert b"Elke tweede dinsdag." in sent.read_bytes()


def test_run_on_the_defaults_picks_up_mail_and_stops_on_sigterm(tmp_path: Path) -> None:
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    service = subprocess.Popen([sys.executable, "-m", "kcc", "run"], cwd=tmp_path, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (tmp_path / "var" / "mail" / "info" / "new" / "1.eml").write_bytes(README_MAIL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = kcc_mail("queue", "list", "--json", cwd=tmp_path)
            if listed.returncode == 0 and json.loads(listed.stdout):
                break
            time.sleep(0.3)
        assert [m["subject"] for m in json.loads(listed.stdout)] == ["Vraag"]
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    said = [line.partition(" INFO kcc.start ")[2] for line in stderr.splitlines() if " INFO kcc.start " in line]
    assert said[0].startswith("kcc-mail running (version ") and "database sqlite:///" in said[0], stderr
    assert said[1:] == [  # at the default log level, it still says once what it watches
        "intake: mailbox info from Maildir var/mail/info, as soon as a file arrives in new/",
        "replies: sent to the folder var/outgoing",
        "web screen: http://127.0.0.1:8000/ (development sign-in, this computer only)",
        "stop with Ctrl-C or SIGTERM: the mail in hand is finished first",
    ]
