"""Large documents into the Documenten API as an operator checks them: byte for byte in the register, once.

A document over documenten.inline_max_bytes goes through Open Zaak's bestandsdelen upload (here with parts of
64 KiB, so a few hundred KiB make several parts). What matters for "exactly once": a part or an unlock whose
answer is lost, or a create whose answer never came (as after a crash before the outcome was recorded), ends
in the next round with one remote document holding exactly the local bytes; a lock kcc-mail cannot know is
taken back by force, or, when the register refuses that, the job fails and says what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from support.mails import queue_mail
from support.registers import (
    CLIENT_ID,
    INFORMATIEOBJECTTYPE,
    RSIN,
    SECRET,
    TOKEN,
    OpenKlantServer,
    OpenZaakServer,
    open_klant,
    open_zaak,
)

from kcc.bootstrap import App, build_app, export_settings
from kcc.config import DocumentenConfig, OpenKlantConfig
from kcc.records.actor import medewerker
from kcc.usecases.export import Exporter, retry_failed
from kcc.usecases.export_documents import BlobWindow
from kcc.usecases.export_sync import DossierSync, JobClaim
from kcc.usecases.review import NoFollowUp, register
from store.export import ExportJob
from store.klantinteracties import Bijlage, Informatieobject
from store.types import utcnow

pytestmark = pytest.mark.specs  # the register test servers validate against ../shared/specs

ANNA = medewerker("anna@gemeente.nl")
LATER = timedelta(hours=2)  # past every backoff
PART = 64 * 1024
INLINE_MAX = 100 * 1024
PHOTO = os.urandom(5 * PART - 1234)  # five bestandsdelen, the last one short


def large_mail(attachment: bytes = PHOTO, subject: str = "Foto's van de container") -> bytes:
    """A customer's mail with one large attachment; the .eml itself is larger still."""
    import base64

    encoded = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (
        "From: Karel van der Wittewiek <karel@example.nl>\r\nTo: info@gemeente.nl\r\n"
        f"Subject: {subject}\r\nMessage-ID: <groot-{uuid.uuid4().hex}@example.nl>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=grens\r\n\r\n"
        "--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie de foto's.\r\n"
        "--grens\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"container.jpg\"\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--grens--\r\n"
    ).encode()


@dataclasses.dataclass
class Registers:
    app: App
    openklant: OpenKlantServer
    drc: OpenZaakServer
    exporter: Exporter

    def run(self, *, later: bool = False) -> Any:
        return self.exporter.run_once(now=utcnow() + LATER if later else None)

    def job(self, klantcontact_id: int | None) -> ExportJob:
        with self.app.uow() as uow:
            (job,) = uow.session.scalars(select(ExportJob).where(ExportJob.klantcontact_id == klantcontact_id))
            return job

    def documents(self) -> list[dict[str, Any]]:
        return self.drc.all("enkelvoudiginformatieobjecten")

    def local(self, klantcontact_id: int | None) -> list[dict[str, Any]]:
        """The klantcontact's documents here: identificatie (the local uuid), size and sha256."""
        with self.app.uow() as uow:
            return [{"identificatie": str(d.uuid), "bestandsomvang": d.bestandsomvang,
                     "sha256": d.integriteit_waarde, "formaat": d.formaat}
                    for d in uow.session.scalars(select(Informatieobject).join(
                        Bijlage, Bijlage.informatieobject_id == Informatieobject.id)
                        .where(Bijlage.klantcontact_id == klantcontact_id))]

    def assert_whole_once(self, klantcontact_id: int | None, raw: bytes) -> None:
        """Each local document exactly once in the register, unlocked, byte for byte, with its size and sha256."""
        local = self.local(klantcontact_id)
        remote = {d["identificatie"]: d for d in self.documents()}
        assert len(self.documents()) == len(local) == len(remote), "one remote document per local one"
        downloads = self.drc.downloads()
        for document in local:
            there = remote[document["identificatie"]]
            data = downloads[document["identificatie"]]
            assert (there["locked"], there["bestandsdelen"]) == (False, [])
            assert there["bestandsomvang"] == document["bestandsomvang"] == len(data)
            assert there["integriteit"]["waarde"] == document["sha256"] == hashlib.sha256(data).hexdigest()
        by_formaat = {d["formaat"]: downloads[d["identificatie"]] for d in local}
        assert by_formaat["message/rfc822"] == raw and by_formaat["image/jpeg"] == PHOTO


@pytest.fixture
def registers(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registers]:
    """Open Klant and Open Zaak (parts of 64 KiB), the export switched on to both, documents over 100 KiB in
    parts, and the jobs of earlier tests in the module gone (they belong to the earlier tests' servers)."""
    monkeypatch.setenv("KCC_TEST_OPENKLANT_TOKEN", TOKEN)
    monkeypatch.setenv("KCC_TEST_DOCUMENTEN_SECRET", SECRET)
    with open_klant() as openklant, open_zaak() as drc:
        drc.part_size = PART
        config = dataclasses.replace(
            app.config,
            openklant=OpenKlantConfig(enabled=True, url=openklant.url, token_env="KCC_TEST_OPENKLANT_TOKEN", timeout=2),
            documenten=DocumentenConfig(url=drc.url, client_id=CLIENT_ID, secret_env="KCC_TEST_DOCUMENTEN_SECRET",
                                        bronorganisatie=RSIN, informatieobjecttype=INFORMATIEOBJECTTYPE, timeout=2,
                                        inline_max_bytes=INLINE_MAX))
        exporting = build_app(config, engine=app.engine)
        with app.uow() as uow:
            uow.session.execute(delete(ExportJob))
            uow.commit()
        yield Registers(exporting, openklant, drc, exporting.exporter())
        assert openklant.invalid == [] and drc.invalid == [], "every request must validate against its specification"


def registered(registers: Registers, raw: bytes) -> int | None:
    app = registers.app
    return register(app.uow(), app.config, queue_mail(app, raw), NoFollowUp(), ANNA).klantcontact_id


def puts(drc: OpenZaakServer) -> int:
    return sum(1 for method, resource in drc.requests if (method, resource) == ("PUT", "bestandsdelen"))


def test_a_large_attachment_arrives_byte_for_byte_through_bestandsdelen(registers: Registers) -> None:
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    summary = registers.run()
    assert (summary.done, summary.retry, summary.failed) == (1, 0, 0)
    registers.assert_whole_once(klantcontact_id, raw)
    parts = -(-len(PHOTO) // PART) + -(-len(raw) // PART)
    assert puts(registers.drc) == parts, "every part once, none twice"
    assert registers.drc.posts("enkelvoudiginformatieobjecten") == 2
    assert registers.exporter.verify() == [], "the register holds what kcc-mail holds"
    assert registers.run().done == 0 and puts(registers.drc) == parts, "nothing is sent again"


def test_a_small_document_still_goes_inline(registers: Registers) -> None:
    small = os.urandom(1000)
    raw = large_mail(small, "Klein")
    registered(registers, raw)
    assert registers.run().done == 1
    assert puts(registers.drc) == 0, "no bestandsdelen"
    assert ("POST", "enkelvoudiginformatieobjecten/unlock") not in registers.drc.requests
    assert sorted(registers.drc.downloads().values(), key=len) == [small, raw]


@pytest.mark.parametrize("fault", ["500", "500-after", "timeout-after", "cut-after"])
@pytest.mark.parametrize("where", [("PUT", "bestandsdelen"), ("POST", "enkelvoudiginformatieobjecten/unlock")])
def test_a_part_or_an_unlock_that_fails_is_finished_next_round_on_the_same_document(
        registers: Registers, fault: str, where: tuple[str, str]) -> None:
    drc = registers.drc
    drc.hang_seconds = 3  # longer than the client's timeout of 2 s
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    drc.fail(fault, *where)
    first = registers.run()
    assert (first.done, first.retry, first.failed) == (0, 1, 0)
    job = registers.job(klantcontact_id)
    assert job.status == "retry" and job.last_error
    assert registers.run(later=True).done == 1
    registers.assert_whole_once(klantcontact_id, raw)
    assert drc.posts("enkelvoudiginformatieobjecten") == 2, "resumed, never created again"
    assert registers.exporter.verify() == []


def test_a_create_whose_answer_never_came_is_resumed_without_a_duplicate(registers: Registers) -> None:
    """As after a crash between the register's answer and recording it: only the register knows the document."""
    drc = registers.drc
    drc.hang_seconds = 3
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    drc.fail("timeout-after", "POST", "enkelvoudiginformatieobjecten")
    assert registers.run().retry == 1
    (left,) = registers.documents()
    assert left["locked"] and not any(p["voltooid"] for p in left["bestandsdelen"]), "created, nothing uploaded"
    assert registers.run(later=True).done == 1
    registers.assert_whole_once(klantcontact_id, raw)
    assert drc.posts("enkelvoudiginformatieobjecten") == 2


def test_a_lock_the_register_does_not_show_is_taken_back_by_force(registers: Registers) -> None:
    drc = registers.drc
    drc.hang_seconds, drc.lock_in_bestandsdelen, drc.geforceerd_unlock = 3, False, True
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    drc.fail("500-after", "PUT", "bestandsdelen")  # the first part arrived, its answer did not
    assert registers.run().retry == 1
    assert registers.run(later=True).done == 1
    registers.assert_whole_once(klantcontact_id, raw)
    assert drc.posts("enkelvoudiginformatieobjecten") == 2
    assert sorted(d["versie"] for d in registers.documents()) == [1, 2], "unlocked, locked, given its size anew"


def test_a_refused_forced_unlock_fails_visibly_until_the_operator_grants_the_scope(registers: Registers) -> None:
    drc = registers.drc
    drc.hang_seconds, drc.lock_in_bestandsdelen = 3, False
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    drc.fail("timeout-after", "POST", "enkelvoudiginformatieobjecten")
    assert registers.run().retry == 1
    assert registers.run(later=True).failed == 1
    job = registers.job(klantcontact_id)
    assert job.status == "failed" and "documenten.geforceerd-unlock" in job.last_error
    assert "kcc-mail export retry" in job.last_error and SECRET not in job.last_error
    assert len(registers.documents()) == 1, "still the one document, never a second"
    drc.geforceerd_unlock = True  # the operator gives kcc-mail's client the scope in Open Zaak
    assert retry_failed(registers.app.uow()) == 1
    assert registers.run().done == 1
    registers.assert_whole_once(klantcontact_id, raw)


def test_verify_reports_an_unfinished_upload_and_a_locked_document(registers: Registers) -> None:
    app, drc = registers.app, registers.drc
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    assert klantcontact_id is not None
    drc.fail("500", "PUT", "bestandsdelen", times=1000)
    assert registers.run().retry == 1
    sync = DossierSync(app.uow, app.klantinteracties(), JobClaim(klantcontact_id, (), "", 0), prefix="KM",
                       lease_seconds=300, documenten=app.documenten(), documents=export_settings(app.config).documents,
                       verify=True)
    sync.run()
    unfinished = [line for line in sync.differences if "upload unfinished" in line]
    assert len(unfinished) == 1, sync.differences  # the first document stopped at its first part
    assert "locked, 0 of" in unfinished[0]

    drc.faults.clear()
    assert registers.run(later=True).done == 1
    assert registers.exporter.verify() == []
    import httpx

    from kcc.registers.documenten import zgw_token
    (document, _) = registers.documents()
    httpx.post(f"{document['url']}/lock", json={}, headers={"Authorization": f"Bearer {zgw_token(CLIENT_ID, SECRET)}"})
    found = registers.exporter.verify()
    assert len(found) == 1 and "locked in the register" in found[0], found


def test_a_part_is_read_from_the_database_a_window_at_a_time(registers: Registers) -> None:
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    (photo,) = [d for d in registers.local(klantcontact_id) if d["formaat"] == "image/jpeg"]
    with registers.app.uow() as uow:
        sha = uow.session.scalar(select(Informatieobject.blob_sha256).where(
            Informatieobject.uuid == uuid.UUID(photo["identificatie"])))
    assert sha is not None
    window = BlobWindow(registers.app.uow, sha, PART, 2 * PART + 5, window=1000)
    assert window.seek(0, os.SEEK_END) == 2 * PART + 5 and window.seek(0) == 0
    assert window.read() == PHOTO[PART:3 * PART + 5]


def zgw(method: str, url: str, **kwargs: Any) -> Any:
    """A request as another client of the Documenten API makes it (an operator's tool, Open Zaak's admin)."""
    import httpx

    from kcc.registers.documenten import zgw_token

    return httpx.request(method, url, headers={"Authorization": f"Bearer {zgw_token(CLIENT_ID, SECRET)}"}, **kwargs)


def test_an_upload_an_operator_unlocked_halfway_is_given_its_parts_anew(registers: Registers) -> None:
    drc = registers.drc
    drc.hang_seconds = 3
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    drc.fail("500-after", "PUT", "bestandsdelen")  # one part arrived, then the answer was lost
    assert registers.run().retry == 1
    (stuck,) = registers.documents()
    drc.geforceerd_unlock = True  # the operator's own client may unlock by force; kcc-mail's may not
    assert zgw("POST", f"{stuck['url']}/unlock", json={}).status_code == 204
    drc.geforceerd_unlock = False
    assert (stuck["locked"], stuck["inhoud"], stuck["bestandsomvang"], stuck["bestandsdelen"]) == (
        False, None, None, []), "Open Zaak drops the parts of an unfinished upload it unlocks by force"
    assert registers.run(later=True).done == 1
    registers.assert_whole_once(klantcontact_id, raw)
    assert stuck["versie"] == 2, "the same document, locked again and given its bestandsomvang anew"


def test_the_test_server_refuses_what_open_zaak_refuses(registers: Registers) -> None:
    """The flow's checks, so the export tests above are tried against a register as strict as the real one."""
    drc = registers.drc
    body = {"bronorganisatie": RSIN, "creatiedatum": "2026-12-01", "titel": "groot.bin", "auteur": "kcc-mail",
            "taal": "nld", "bestandsnaam": "groot.bin", "bestandsomvang": PART + 10,
            "informatieobjecttype": INFORMATIEOBJECTTYPE}
    created = zgw("POST", f"{drc.url}/enkelvoudiginformatieobjecten", json=body).json()
    first, last = created["bestandsdelen"]
    assert (created["locked"], first["omvang"], last["omvang"], created["inhoud"]) == (True, PART, 10, None)
    lock = created["lock"]
    data = os.urandom(PART + 10)

    def put(part: dict[str, Any], content: bytes, with_lock: str) -> Any:
        return zgw("PUT", part["url"], files={"inhoud": ("groot.bin", content)}, data={"lock": with_lock})

    def unlock(with_lock: str) -> Any:
        return zgw("POST", f"{created['url']}/unlock", json={"lock": with_lock})

    assert put(first, data[:PART], "a-wrong-lock").json()["invalidParams"][0]["code"] == "incorrect-lock-id"
    assert put(first, data[:PART - 1], lock).json()["invalidParams"][0]["code"] == "file-size"
    assert unlock(lock).json()["invalidParams"][0]["code"] == "file-size", "nothing uploaded yet"
    assert put(first, data[:PART], lock).json()["voltooid"] is True
    assert unlock(lock).json()["invalidParams"][0]["code"] == "incomplete-upload"
    assert put(last, data[PART:], lock).status_code == 200
    assert unlock("a-wrong-lock").status_code == 400
    assert unlock(lock).status_code == 204
    document = zgw("GET", created["url"]).json()
    assert (document["locked"], document["bestandsdelen"]) == (False, [])
    assert zgw("GET", created["url"]).json()["inhoud"] and drc.contents[created["url"]] == data
    assert drc.invalid == []


def test_verify_repair_finishes_a_document_a_restored_register_has_unfinished(registers: Registers) -> None:
    drc = registers.drc
    raw = large_mail()
    klantcontact_id = registered(registers, raw)
    assert registers.run().done == 1
    photo = next(d for d in registers.documents() if d["formaat"] == "image/jpeg")
    key = photo["url"].rpartition("/")[2]
    with drc.lock:  # Open Zaak restored from a backup taken while the photo's upload was under way
        del drc.contents[photo["url"]]
        drc.locks[key] = "lock-from-the-backup"
        drc._hand_out_parts(key, photo["bestandsomvang"])
        drc._show(key)
    found = registers.exporter.verify(repair=True)
    assert len(found) == 1 and "upload unfinished in the register (locked, 0 of 5" in found[0], found
    assert registers.run().done == 1
    registers.assert_whole_once(klantcontact_id, raw)
    assert registers.exporter.verify() == []
