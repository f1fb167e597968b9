"""A mistake a user can make gives one line that says what to do, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from kcc_cli import kcc_mail, write_config
from support.mails import customer_mail


@pytest.fixture
def workdir(tmp_path: Path, database_url: str) -> Path:
    write_config(tmp_path, database_url)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    (tmp_path / "mail" / "new" / "1.eml").write_bytes(customer_mail(f"Fout {tmp_path.name}"))
    assert kcc_mail("poll", "--once", cwd=tmp_path).returncode == 0
    return tmp_path


def one_line_error(result: object, *words: str) -> None:
    stderr = result.stderr
    assert result.returncode != 0
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in stderr, stderr


def test_mistakes_give_one_clear_line(workdir: Path, tmp_path: Path) -> None:
    latin = workdir / "antwoord.txt"
    latin.write_bytes("Geachte heer, wij zijn er vóór u.".encode("latin-1"))
    one_line_error(kcc_mail("reply", "1", "--text-file", str(latin), "--as", "anna@gemeente.nl", cwd=workdir),
                   "is not UTF-8 text")
    one_line_error(kcc_mail("queue", "show", str(2**63), cwd=workdir), "is not in the range")
    one_line_error(kcc_mail("dismiss", "1", "--reason", "spam", "--as", "a" * 300, cwd=workdir), "at most 200")
    one_line_error(kcc_mail("register", "1", "--follow-up", "task", "--handeling", "Bellen", "--assign",
                            "afdeling:" + "B" * 300, "--as", "anna@gemeente.nl", cwd=workdir), "at most 200")
    one_line_error(kcc_mail("--config", str(workdir), "queue", "list", cwd=workdir), "is a directory")
    other = workdir / "latin.toml"
    other.write_bytes('[organisatie]\nnaam = "Súdwest-Fryslân"\n'.encode("latin-1"))
    one_line_error(kcc_mail("--config", str(other), "queue", "list", cwd=workdir), "is not UTF-8 text")
    one_line_error(kcc_mail("contacts", "show", "0000009999", cwd=workdir), "no klantcontact")
    one_line_error(kcc_mail("tasks", "show", "geen-taak", cwd=workdir), "neither the uuid nor the id")
