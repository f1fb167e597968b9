"""What a mail or a user wrote is shown, never obeyed: on a terminal, in a file path, in a file kcc-mail writes."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from kcc_cli import kcc_mail, write_config

# OSC 52 writes the clipboard, CSI 2J clears the screen, OSC 0 sets the window title: all from one subject.
ESCAPES = "\x1b]52;c;aGFjaw==\x07\x1b[2J\x1b]0;pwned\x07"
SUBJECT = "=?utf-8?b?" + base64.b64encode(f"Vraag {ESCAPES} over afval".encode()).decode() + "?="
NAME = "=?utf-8?b?" + base64.b64encode(f"Karel{ESCAPES}".encode()).decode() + "?="
HOSTILE = (
    f"From: {NAME} <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: {SUBJECT}\r\n"
    "Message-ID: <escape-1@example.nl>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    f"Beste KCC,{ESCAPES}\r\nbel mij terug.\r\n"
).encode()


def run(cwd: Path, *args: str) -> str:
    result = kcc_mail(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def run_json(cwd: Path, *args: str) -> Any:
    """A --json command's output: the JSON is on stdout, the count note on stderr."""
    result = kcc_mail(*args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def workdir(tmp_path: Path, database_url: str) -> Path:
    write_config(tmp_path, database_url)
    run(tmp_path, "init")
    (tmp_path / "mail" / "new" / "1.eml").write_bytes(f"X-Test: {tmp_path.name}\r\n".encode() + HOSTILE)
    run(tmp_path, "poll", "--once")
    return tmp_path


def the_mail(workdir: Path) -> dict[str, object]:
    """This test's mail (the module's database holds the other tests' mails too)."""
    mails = run_json(workdir, "queue", "list", "--state", "all")
    return max(mails, key=lambda mail: int(mail["id"]))


def test_control_characters_from_a_mail_never_reach_the_terminal(workdir: Path) -> None:
    mail = the_mail(workdir)
    outputs = [run(workdir, "queue", "list"), run(workdir, "queue", "show", str(mail["id"]))]
    registered = run(workdir, "register", str(mail["id"]), "--follow-up", "task", "--handeling", "Terugbellen",
                     "--assign", "afdeling:Burgerzaken", "--as", "anna@gemeente.nl")
    contact = run_json(workdir, "contacts", "list")[0]
    taak = max(run_json(workdir, "tasks", "list"), key=lambda t: int(t["id"]))
    outputs += [registered, run(workdir, "contacts", "list"), run(workdir, "contacts", "show", str(contact["id"])),
                run(workdir, "tasks", "list"), run(workdir, "tasks", "show", str(taak["id"]))]
    for output in outputs:
        assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b]52;c;aGFjaw==\\x07" in outputs[1], "the escapes are shown, visibly"
    assert "Vraag" in outputs[1] and "over afval" in outputs[1]


def test_an_export_replaces_a_planted_symlink_and_is_private(workdir: Path) -> None:
    mail = the_mail(workdir)
    victim = workdir / "slachtoffer.txt"
    victim.write_text("niet overschrijven", encoding="utf-8")
    out = workdir / "export.eml"
    out.symlink_to(victim)
    run(workdir, "quarantine", "export", str(mail["id"]), "--out", str(out), "--force")
    assert victim.read_text(encoding="utf-8") == "niet overschrijven", "the link was not followed"
    assert not out.is_symlink() and out.read_bytes().startswith(b"X-Test: ")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(workdir.glob(".kcc-*")), "no half-written file left"


def test_files_kcc_mail_creates_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        write_config(tmp_path, f"sqlite:///{tmp_path / 'var' / 'kcc-mail.db'}")
        run(tmp_path, "init")
        (tmp_path / "mail" / "new" / "1.eml").write_bytes(HOSTILE)
        run(tmp_path, "poll", "--once")
        run(tmp_path, "reply", "1", "--template", "ontvangstbevestiging", "--force", "--as", "anna@gemeente.nl")
        run(tmp_path, "relay", "--once")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "var" / "kcc-mail.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    (sent,) = (tmp_path / "outgoing").glob("*.eml")
    assert stat.S_IMODE(sent.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "outgoing").stat().st_mode) == 0o700
