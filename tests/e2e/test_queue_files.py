"""A forwarded mail as the reviewer meets it: what the attached message holds is shown, and every file is saved."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from kcc_cli import kcc_mail, write_config

PDF = b"%PDF-1.4\n% een aanslag\n" + bytes(range(256))
INNER_INNER = (
    b"From: Gemeente Belastingen <belastingen@gemeente.nl>\r\nTo: karel@example.nl\r\n"
    b"Subject: Aanslag 2026\r\nMessage-ID: <aanslag@gemeente.nl>\r\n\r\nUw aanslag.\r\n"
)
INNER = (
    "From: Buurvrouw Els <els@example.nl>\r\nTo: karel@example.nl\r\nSubject: Fwd: de aanslag van mijn buurman\r\n"
    "Date: Fri, 20 Nov 2026 14:00:00 +0100\r\nMessage-ID: <els-1@example.nl>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=binnen\r\n\r\n"
    "--binnen\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie bijlage.\r\n"
    "--binnen\r\nContent-Type: application/pdf\r\n"
    "Content-Disposition: attachment; filename=\"../../aanslag\x1b[2J.pdf\"\r\n"
    f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(PDF).decode()}\r\n"
    "--binnen\r\nContent-Type: message/rfc822\r\n\r\n"
).encode() + INNER_INNER + b"--binnen--\r\n"
FORWARDED = (
    b"From: Karel van der Wittewiek <karel@example.nl>\r\nTo: info@gemeente.nl\r\n"
    b"Subject: Klopt deze aanslag?\r\nMessage-ID: <fwd-1@example.nl>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=buiten\r\n\r\n"
    b"--buiten\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHieronder de mail van mijn buurvrouw.\r\n"
    b"--buiten\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
) + INNER + b"\r\n--buiten--\r\n"


def run(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def workdir(tmp_path: Path, database_url: str) -> tuple[Path, int]:
    write_config(tmp_path, database_url)
    run(tmp_path, "init")
    (tmp_path / "mail" / "new" / "1.eml").write_bytes(f"X-Test: {tmp_path.name}\r\n".encode() + FORWARDED)
    run(tmp_path, "poll", "--once")
    mails = json.loads(run(tmp_path, "queue", "list", "--state", "all", "--json"))
    return tmp_path, max(int(mail["id"]) for mail in mails)


def test_show_lists_what_an_attached_message_holds(workdir: tuple[Path, int]) -> None:
    cwd, mail_id = workdir
    shown = run(cwd, "queue", "show", str(mail_id))
    lines = [line.rstrip() for line in shown.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("Attachment 1: bericht-1.eml (message/rfc822"))
    assert lines[first + 1:first + 5] == [
        "  From:    Buurvrouw Els <els@example.nl>",
        "  Subject: Fwd: de aanslag van mijn buurman",
        "  Date:    2026-11-20T13:00:00+00:00",
        f"  Attachment 1.1: aanslag[2J.pdf (application/pdf, {len(PDF)} bytes)",
    ]
    assert lines[first + 5].startswith("  Attachment 1.2: bericht-")
    assert lines[first + 6:first + 8] == ["    From:    Gemeente Belastingen <belastingen@gemeente.nl>",
                                          "    Subject: Aanslag 2026"]
    assert "\x1b" not in shown
    nested = json.loads(run(cwd, "queue", "show", str(mail_id), "--json"))["attachmentList"][0]
    assert nested["number"] == 1 and nested["message"]["subject"] == "Fwd: de aanslag van mijn buurman"
    assert nested["message"]["attachments"][1]["message"]["subject"] == "Aanslag 2026"


def test_the_original_mail_and_each_attachment_are_saved_byte_for_byte(workdir: tuple[Path, int]) -> None:
    cwd, mail_id = workdir
    said = run(cwd, "queue", "export", str(mail_id), "--out", "origineel.eml")
    assert said.startswith(f"mail {mail_id} written to origineel.eml")
    assert (cwd / "origineel.eml").read_bytes() == f"X-Test: {cwd.name}\r\n".encode() + FORWARDED
    assert stat.S_IMODE((cwd / "origineel.eml").stat().st_mode) == 0o600

    run(cwd, "queue", "attachment", str(mail_id), "1", "--out", "doorgestuurd.eml")
    saved = (cwd / "doorgestuurd.eml").read_bytes()
    assert saved.startswith(b"From: Buurvrouw Els") and b"Subject: Aanslag 2026" in saved
    said = run(cwd, "queue", "attachment", str(mail_id), "1.1", "--out", "aanslag.pdf")
    assert (cwd / "aanslag.pdf").read_bytes() == PDF, "an attachment inside the attached message"
    assert "\x1b" not in said and "aanslag[2J.pdf" in said
    assert not list(cwd.parent.glob("aanslag*")), "the name in the mail is never a path"
    run(cwd, "queue", "attachment", str(mail_id), "1.2", "--out", "aanslag.eml")
    assert (cwd / "aanslag.eml").read_bytes().startswith(b"From: Gemeente Belastingen")


def test_a_missing_attachment_or_an_existing_file_is_one_clear_line(workdir: tuple[Path, int]) -> None:
    cwd, mail_id = workdir
    for number, message in [
        ("2", f"mail {mail_id} has no attachment 2 (it has 1 to 1)"),
        ("1.3", f"attachment 1 of mail {mail_id} has no attachment 3 (it has 1 to 2)"),
        ("1.1.1", f"attachment 1.1 of mail {mail_id} is not a message, so 1.1.1 does not exist"),
        ("1.x", "'1.x' is not an attachment number"),
    ]:
        missing = kcc_mail("queue", "attachment", str(mail_id), number, "--out", "x.bin", cwd=cwd)
        assert missing.returncode != 0 and not (cwd / "x.bin").exists()
        (line,) = missing.stderr.strip().splitlines()
        assert message in line, line
    (cwd / "bestaat.eml").write_bytes(b"van de medewerker")
    again = kcc_mail("queue", "export", str(mail_id), "--out", "bestaat.eml", cwd=cwd)
    assert again.returncode != 0 and "exists already; choose another --out or add --force" in again.stderr
    assert (cwd / "bestaat.eml").read_bytes() == b"van de medewerker"
    run(cwd, "queue", "export", str(mail_id), "--out", "bestaat.eml", "--force")
    assert (cwd / "bestaat.eml").read_bytes().startswith(b"X-Test: ")
