"""End to end as an operator runs the export: `kcc-mail export …` against the Open Klant test server, and a
`kcc-mail run` killed with SIGKILL while it exports, then started again: every klantcontact once in Open Klant."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kcc_cli import kcc_mail, start_kcc_mail, write_config
from sqlalchemy import delete
from support.registers import TOKEN, OpenKlantServer, open_klant

from store.engine import make_engine
from store.export import ExportJob

pytestmark = pytest.mark.specs  # the register test servers validate against ../shared/specs

ENV = {"KCC_OPENKLANT_TOKEN": TOKEN}


def mail(n: int) -> bytes:
    return (
        f"From: Klant {n} <klant{n}@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: Vraag {n}\r\n"
        f"Message-ID: <export-{n}-{os.getpid()}-{time.time_ns()}@example.nl>\r\n"
        "Date: Mon, 23 Nov 2026 09:15:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWanneer komt de vuilniswagen?\r\n"
    ).encode()


@pytest.fixture
def server() -> Any:
    with open_klant() as running:
        yield running
        assert running.invalid == [], "every request must validate against the OpenAPI specification"


@pytest.fixture
def workdir(tmp_path: Path, database_url: str, server: OpenKlantServer) -> Path:
    extra = (f'[openklant]\nenabled = true\nurl = "{server.url}"\ntoken_env = "KCC_OPENKLANT_TOKEN"\ntimeout = 1.0\n\n'
             '[export]\ninterval = 0.2\nlease_seconds = 5.0\n')
    write_config(tmp_path, database_url, extra=extra)
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "mail" / sub).mkdir(parents=True, exist_ok=True)
    assert kcc_mail("init", cwd=tmp_path).returncode == 0
    # jobs of earlier tests on the module's database belong to another test server: they go first
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(delete(ExportJob))
    engine.dispose()
    return tmp_path


def register_mails(workdir: Path, count: int) -> list[int]:
    for n in range(count):
        (workdir / "mail" / "new" / f"{time.time_ns()}.{n}.eml").write_bytes(mail(n))
    assert kcc_mail("poll", "--once", cwd=workdir).returncode == 0
    queued = json.loads(kcc_mail("queue", "list", "--json", cwd=workdir).stdout)
    for row in queued:
        done = kcc_mail("register", str(row["id"]), "--follow-up", "none", "--as", "anna@gemeente.nl", cwd=workdir)
        assert done.returncode == 0, done.stderr
    return [row["id"] for row in queued]


def status(workdir: Path) -> dict[str, Any]:
    result = kcc_mail("export", "status", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_check_reaches_open_klant_with_the_token_and_names_a_wrong_one(workdir: Path,
                                                                        server: OpenKlantServer) -> None:
    good = kcc_mail("check", cwd=workdir, env=ENV)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"openklant: {server.url}: connected, credentials accepted, 0 klantcontacten" in good.stdout
    wrong = kcc_mail("check", cwd=workdir, env={"KCC_OPENKLANT_TOKEN": "not-the-token"})
    assert wrong.returncode == 1
    line = next(line for line in wrong.stdout.splitlines() if "openklant" in line)
    assert "refused with 401" in line and "openklant.token_env" in line and "not-the-token" not in wrong.stdout
    assert [m for m, _ in server.requests if m != "GET"] == [], "a check writes nothing to the register"


def test_an_operator_exports_sees_a_refusal_and_retries(workdir: Path, server: OpenKlantServer) -> None:
    register_mails(workdir, 1)
    before = status(workdir)["jobs"]["done"]
    wrong = kcc_mail("export", "run", "--once", cwd=workdir, env={"KCC_OPENKLANT_TOKEN": "not-the-token"})
    assert (wrong.returncode, wrong.stdout.strip()) == (1, "exported=0 retry=0 failed=1 changes=0")
    assert "not-the-token" not in wrong.stdout + wrong.stderr
    failed = kcc_mail("export", "list", "--failed", cwd=workdir)
    assert "401" in failed.stdout and "kcc-mail export retry" in failed.stdout and "not-the-token" not in failed.stdout
    assert status(workdir)["jobs"]["failed"] == 1
    health = json.loads(kcc_mail("status", "--json", cwd=workdir).stdout)
    (check,) = [c for c in health["checks"] if c["name"] == "export failed"]
    assert (check["level"], health["export"]["counts"]["failed"]) == ("warning", 1), check
    assert "kcc-mail export retry" in check["message"]
    assert "1 failed jobs queued again" in kcc_mail("export", "retry", cwd=workdir).stdout
    again = kcc_mail("export", "--once", cwd=workdir, env=ENV)  # the spelling of issue 14, as `export run --once`
    assert again.returncode == 0 and again.stdout.startswith("exported=1 "), again.stderr
    assert kcc_mail("export", "--backfill", cwd=workdir).stdout.strip() == "0 klantcontacten queued for export"
    after = status(workdir)
    assert (after["enabled"], after["jobs"]["failed"], after["jobs"]["done"]) == (True, 0, before + 1)
    assert kcc_mail("export", "verify", cwd=workdir, env=ENV).returncode == 0
    (contact,) = server.all("klantcontacten")
    contact["onderwerp"] = "Veranderd in Open Klant"
    repair = kcc_mail("export", "verify", "--repair", cwd=workdir, env=ENV)
    assert repair.returncode == 1 and "Veranderd in Open Klant" in repair.stdout
    assert "queued (reden verify)" in repair.stderr
    assert kcc_mail("export", "run", "--once", cwd=workdir, env=ENV).stdout.startswith("exported=1 ")
    assert contact["onderwerp"] == "Vraag 0"
    assert kcc_mail("export", "verify", cwd=workdir, env=ENV).returncode == 0
    assert len(server.all("klantcontacten")) == 1


@pytest.mark.slow
def test_a_killed_exporter_leaves_every_klantcontact_once_in_open_klant(workdir: Path, server: OpenKlantServer
                                                                       ) -> None:
    register_mails(workdir, 6)
    server.delay_seconds = 0.05  # requests in flight when the kill comes
    for _round in range(3):
        service = start_kcc_mail("run", cwd=workdir, log=workdir / "run.log", env=ENV)
        time.sleep(random.uniform(0.8, 2.0))
        os.killpg(service.pid, signal.SIGKILL)
        service.wait(timeout=10)
    time.sleep(5.5)  # the dead exporter's lease runs out; the next round takes its jobs over
    server.delay_seconds = 0
    finish = kcc_mail("export", "run", "--once", cwd=workdir, env=ENV)
    assert finish.returncode == 0, finish.stderr
    jobs = status(workdir)["jobs"]
    assert (jobs["pending"], jobs["retry"], jobs["sending"], jobs["failed"]) == (0, 0, 0, 0)
    numbers = [k["referentienummer"] for k in server.all("klantcontacten")]
    assert len(numbers) == len(set(numbers)) == 6, "every klantcontact exactly once"
    for contact in server.all("klantcontacten"):
        betrokkenen = [b for b in server.all("betrokkenen") if b["hadKlantcontact"]["uuid"] == contact["uuid"]]
        links = [a for a in server.all("actorklantcontacten") if a["klantcontact"]["uuid"] == contact["uuid"]]
        assert (len(betrokkenen), len(links)) == (1, 2), contact["referentienummer"]
    assert len(server.all("actoren")) == 2, "Anna and kcc-mail, once each"
    assert len(server.all("digitaleadressen")) == 6
    verify = kcc_mail("export", "verify", cwd=workdir, env=ENV)
    assert verify.returncode == 0 and verify.stdout == "", verify.stdout + verify.stderr
