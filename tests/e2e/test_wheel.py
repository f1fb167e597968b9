"""A built wheel works on its own: installed in a fresh virtual environment outside the checkout, on the defaults."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.mails import customer_mail

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KCC_", "PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kcc-mail command of a fresh virtual environment that has only the wheel (and its dependencies)."""
    dist = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("store", "ingest", "replies", "kcc", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source, cwd=dist)
    (wheel,) = dist.glob("kcc_mail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "replies/builtin_templates/antwoord.txt.j2" in names, "the reply templates are package data"
    assert "store/migrations/versions/0001_initial_schema.py" in names, "so are the migrations"
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv, cwd=venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=venv)
    return venv / "bin" / "kcc-mail"


def test_the_wheel_runs_init_templates_poll_reply_and_relay_on_the_defaults(
    installed: Path, tmp_path: Path
) -> None:
    work = tmp_path / "kcc"
    work.mkdir()
    assert "schema created" in run(installed, "init", cwd=work).stdout
    listed = run(installed, "templates", "list", cwd=work).stdout
    assert "antwoord" in listed and "ontvangstbevestiging" in listed

    (work / "var" / "mail" / "info" / "new" / "1.eml").write_bytes(customer_mail("Vraag over de wheel"))
    assert run(installed, "poll", "--once", cwd=work).stdout.strip() == "fetched=1 stored=1 quarantined=0 duplicates=0"
    answer = work / "antwoord.txt"
    answer.write_text("Het papier wordt woensdag opgehaald.", encoding="utf-8")
    replied = run(installed, "reply", "1", "--text-file", answer, "--as", "anna@gemeente.nl", cwd=work).stdout
    assert "queued as outbox message" in replied
    assert run(installed, "relay", "--once", cwd=work).stdout.strip() == "sent=1 retry=0 failed=0 uncertain=0"
    (sent,) = (work / "var" / "outgoing").glob("*.eml")
    text = sent.read_text(encoding="utf-8")
    assert "Subject: Re: Vraag over de wheel" in text and "woensdag opgehaald" in text
