"""The export to Open Klant as an operator checks it: the records on the register's side, on SQLite and
PostgreSQL, against a test server that validates every request against the OpenAPI specification.

Faults are the ones that matter for "exactly once": an answer that never arrives after the register carried the
request out (a 500 after processing, a timeout, a connection cut mid-answer) must not leave two klantcontacten;
a register that is down leaves the job to retry; a refusal is shown with the register's own words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from support.mails import customer_mail, queue_mail
from support.registers import TOKEN, OpenKlantServer, open_klant

from kcc.bootstrap import App, build_app
from kcc.config import OpenKlantConfig
from kcc.records.actor import medewerker, parse_actor
from kcc.usecases import tasks as taken
from kcc.usecases.export import Exporter, retry_failed
from kcc.usecases.reply import Reply, reply
from kcc.usecases.review import HandOff, NoFollowUp, register
from store.export import ExportJob
from store.klantinteracties import Klantcontact
from store.types import utcnow

pytestmark = pytest.mark.specs  # the register test servers validate against ../shared/specs

ANNA = medewerker("anna@gemeente.nl")
CALL_BACK = HandOff("Terugbellen", (parse_actor("afdeling:Burgerzaken"),), toelichting="Bel 06-12345678")
ANSWER = Reply(variables=(("tekst", "Het oud papier gaat elke tweede dinsdag mee."),))
LATER = timedelta(hours=2)  # past every backoff


@dataclasses.dataclass
class Exporting:
    app: App
    server: OpenKlantServer
    exporter: Exporter

    def run(self, *, later: bool = False) -> Any:
        return self.exporter.run_once(now=utcnow() + LATER if later else None)

    def jobs(self, klantcontact_id: int | None) -> list[ExportJob]:
        with self.app.uow() as uow:
            return list(uow.session.scalars(select(ExportJob).where(ExportJob.klantcontact_id == klantcontact_id)
                                            .order_by(ExportJob.id)))

    def remote(self, klantcontact_id: int | None) -> dict[str, Any]:
        """The klantcontact in Open Klant, found by its referentienummer as KISS would find it."""
        with self.app.uow() as uow:
            number = uow.session.scalar(select(Klantcontact.referentienummer).where(Klantcontact.id == klantcontact_id))
        assert number is not None
        found = [k for k in self.server.all("klantcontacten") if k["referentienummer"] == "KM" + number[2:]]
        assert len(found) == 1, f"{len(found)} remote klantcontacten for {number}"
        return found[0]

    def under(self, resource: str, key: str, parent: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for o in self.server.all(resource) if (o.get(key) or {}).get("uuid") == parent["uuid"]]


@pytest.fixture
def exporting(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[Exporting]:
    """A fresh Open Klant, the export switched on to it, and the jobs of earlier tests in the module gone (they
    belong to the earlier tests' servers)."""
    monkeypatch.setenv("KCC_TEST_OPENKLANT_TOKEN", TOKEN)
    with open_klant() as server:
        openklant = OpenKlantConfig(enabled=True, url=server.url, token_env="KCC_TEST_OPENKLANT_TOKEN", timeout=2)
        exporting_app = build_app(dataclasses.replace(app.config, openklant=openklant), engine=app.engine)
        with app.uow() as uow:
            uow.session.execute(delete(ExportJob))
            uow.commit()
        yield Exporting(exporting_app, server, exporting_app.exporter())
        assert server.invalid == [], "every request kcc-mail sent must validate against the OpenAPI specification"


def test_a_reply_decision_arrives_in_open_klant_whole(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    answered = reply(app.uow(), app.config, queue_mail(app, customer_mail("Papier")), ANSWER, ANNA)
    summary = exporting.run()
    assert (summary.done, summary.retry, summary.failed) == (2, 0, 0)
    vraag, antwoord = exporting.remote(answered.klantcontact_id), exporting.remote(answered.antwoord_klantcontact_id)
    assert (vraag["onderwerp"], vraag["kanaal"], vraag["indicatieContactGelukt"]) == ("Papier", "e-mail", True)
    for contact, initiator in ((vraag, True), (antwoord, False)):
        (betrokkene,) = exporting.under("betrokkenen", "hadKlantcontact", contact)
        assert (betrokkene["rol"], betrokkene["initiator"], betrokkene["wasPartij"]) == ("klant", initiator, None)
        (adres,) = exporting.under("digitaleadressen", "verstrektDoorBetrokkene", betrokkene)
        assert (adres["soortDigitaalAdres"], adres["adres"]) == ("email", "karel@example.nl")
        assert len(exporting.under("actorklantcontacten", "klantcontact", contact)) == 2
    (onderwerp,) = server.all("onderwerpobjecten")
    links = (onderwerp["klantcontact"]["uuid"], onderwerp["wasKlantcontact"]["uuid"])
    assert links == (antwoord["uuid"], vraag["uuid"]), "our answer is about the customer's mail"
    assert onderwerp["onderwerpobjectidentificator"]["objectId"] == vraag["uuid"], "the remote uuid, not the local"
    assert sorted(a["soortActor"] for a in server.all("actoren")) == ["geautomatiseerde_actor", "medewerker"]
    assert [job.status for job in exporting.jobs(answered.klantcontact_id)] == ["done"]
    assert (server.posts("maak-klantcontact"), server.posts("betrokkenen"), server.posts("onderwerpobjecten")) == (
        2, 0, 0), "each klantcontact came with its betrokkene and onderwerpobject in one atomic call"
    again = exporting.run()
    assert (again.done, server.posts("maak-klantcontact")) == (0, 2), "nothing is sent twice"


def test_an_answer_waits_for_the_customers_klantcontact_and_never_arrives_without_its_onderwerpobject(
        exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    answered = reply(app.uow(), app.config, queue_mail(app, customer_mail("Wachten")), ANSWER, ANNA)
    server.fail("500", "POST", "maak-klantcontact")  # the customer's klantcontact does not get in this round
    first = exporting.run()
    assert (first.done, first.retry) == (0, 2)
    assert server.all("klantcontacten") == [], "our answer is not sent before what it answers"
    assert exporting.run(later=True).done == 2
    (onderwerp,) = server.all("onderwerpobjecten")
    assert onderwerp["klantcontact"]["uuid"] == exporting.remote(answered.antwoord_klantcontact_id)["uuid"]
    assert onderwerp["wasKlantcontact"]["uuid"] == exporting.remote(answered.klantcontact_id)["uuid"]


def test_several_klantcontacten_go_at_once_each_exactly_once(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    server.delay_seconds = 0.05  # a register that takes its time, as a real one over the network does
    answered = [reply(app.uow(), app.config, queue_mail(app, customer_mail(f"Vraag {n}")), ANSWER, ANNA)
                for n in range(4)]
    summary = exporting.run()
    assert (summary.done, summary.retry, summary.failed) == (8, 0, 0), "each answer after its question, in one round"
    assert server.most_in_flight > 1, "the klantcontacten went to the register side by side"
    for done in answered:
        (onderwerp,) = exporting.under("onderwerpobjecten", "klantcontact", exporting.remote(
            done.antwoord_klantcontact_id))
        assert onderwerp["wasKlantcontact"]["uuid"] == exporting.remote(done.klantcontact_id)["uuid"]
    assert len(server.all("klantcontacten")) == 8 and server.posts("actoren") == 2
    assert exporting.exporter.verify() == []


def test_a_task_follows_its_decisions_in_open_klant(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Terugbellen a.u.b.")), CALL_BACK,
                          ANNA)
    assert registered.interne_taak_id is not None
    exporting.run()
    contact = exporting.remote(registered.klantcontact_id)
    (taak,) = exporting.under("internetaken", "aanleidinggevendKlantcontact", contact)
    assert (taak["gevraagdeHandeling"], taak["status"], taak["toelichting"]) == (
        "Terugbellen", "te_verwerken", "Bel 06-12345678")
    (afdeling,) = [a for a in server.all("actoren") if a["soortActor"] == "organisatorische_eenheid"]
    assert taak["toegewezenAanActoren"][0]["uuid"] == afdeling["uuid"] and "toegewezenOp" in taak

    taken.complete(app.uow(), registered.interne_taak_id, ANNA)
    exporting.run()
    assert (taak["status"], taak["afgehandeldOp"] is not None) == ("verwerkt", True)
    taken.reopen(app.uow(), registered.interne_taak_id, ANNA)
    exporting.run()
    assert (taak["status"], taak["afgehandeldOp"]) == ("te_verwerken", None)

    taken.reroute(app.uow(), registered.interne_taak_id, [parse_actor("afdeling:KCC")], ANNA)
    exporting.run()
    original, nieuw = exporting.under("internetaken", "aanleidinggevendKlantcontact", contact)
    assert original["status"] == "verwerkt" and nieuw["status"] == "te_verwerken"
    assert nieuw["toelichting"] == f"Bel 06-12345678 [Vervangt interne taak {original['uuid']}]"
    assert len([a for a in server.all("actoren") if a["soortActor"] == "organisatorische_eenheid"]) == 2
    assert server.posts("actoren") == 4, "each actor (Anna, kcc-mail, two afdelingen) is created once"


@pytest.mark.parametrize("fault", ["500-after", "timeout-after", "cut-after"])
def test_an_answer_lost_after_the_register_created_it_leaves_no_duplicate(exporting: Exporting, fault: str) -> None:
    app, server = exporting.app, exporting.server
    server.hang_seconds = 3  # longer than the client's timeout of 2 s
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Eén keer")), NoFollowUp(), ANNA)
    server.fail(fault, "POST", "maak-klantcontact")
    first = exporting.run()
    assert (first.done, first.retry) == (0, 1)
    (job,) = exporting.jobs(registered.klantcontact_id)
    assert job.status == "retry" and job.last_error
    assert server.posts("maak-klantcontact") == 1 and len(server.all("klantcontacten")) == 1, "it did arrive"
    second = exporting.run(later=True)
    assert second.done == 1
    exporting.remote(registered.klantcontact_id)  # exactly one
    assert server.posts("maak-klantcontact") == 1, "found by its referentienummer, not posted again"
    assert len(exporting.under("betrokkenen", "hadKlantcontact", exporting.remote(registered.klantcontact_id))) == 1


def test_a_register_that_is_down_leaves_the_job_to_retry(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Later")), NoFollowUp(), ANNA)
    server.fail("500", times=1000)
    summary = exporting.run()
    assert (summary.done, summary.retry, summary.failed) == (0, 1, 0)
    (job,) = exporting.jobs(registered.klantcontact_id)
    assert (job.status, job.attempts) == ("retry", 1) and "500" in job.last_error
    assert job.next_attempt_at > utcnow(), "with backoff, not at once"
    assert server.all("klantcontacten") == []
    server.faults.clear()
    assert exporting.run(later=True).done == 1
    exporting.remote(registered.klantcontact_id)


def test_a_refusal_fails_visibly_until_the_operator_retries(exporting: Exporting, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    app = exporting.app
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Token")), NoFollowUp(), ANNA)
    monkeypatch.setenv("KCC_TEST_OPENKLANT_TOKEN", "a-wrong-token")
    summary = exporting.run(later=True)
    assert summary.failed == 1
    (job,) = exporting.jobs(registered.klantcontact_id)
    assert job.status == "failed" and "401" in job.last_error and "kcc-mail export retry" in job.last_error
    assert "a-wrong-token" not in job.last_error
    assert exporting.run(later=True).failed == 0, "a failed job waits for the operator"
    monkeypatch.setenv("KCC_TEST_OPENKLANT_TOKEN", TOKEN)
    assert retry_failed(app.uow()) == 1
    assert exporting.run().done == 1
    assert [j.status for j in exporting.jobs(registered.klantcontact_id)] == ["done"]


def test_an_address_open_klant_would_refuse_as_email_goes_as_overig(exporting: Exporting) -> None:
    app = exporting.app
    mail = customer_mail("Kort adres", sender="Bea <bea@localhost>")
    registered = register(app.uow(), app.config, queue_mail(app, mail), NoFollowUp(), ANNA)
    assert exporting.run().done == 1
    (betrokkene,) = exporting.under("betrokkenen", "hadKlantcontact", exporting.remote(registered.klantcontact_id))
    (adres,) = exporting.under("digitaleadressen", "verstrektDoorBetrokkene", betrokkene)
    assert (adres["soortDigitaalAdres"], adres["adres"]) == ("overig", "bea@localhost")


def test_an_actor_another_system_created_is_used_not_doubled(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    import httpx

    existing = httpx.post(f"{server.url}/actoren", headers={"Authorization": f"Token {TOKEN}"}, json={
        "naam": "Anna", "soortActor": "medewerker", "indicatieActief": True,
        "actoridentificator": {"objectId": "anna@gemeente.nl", "codeObjecttype": "mdw", "codeRegister": "kcc-mail",
                               "codeSoortObjectId": "email"}}).json()
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Actor")), NoFollowUp(), ANNA)
    assert exporting.run().done == 1
    medewerkers = [a for a in server.all("actoren") if a["soortActor"] == "medewerker"]
    assert [a["uuid"] for a in medewerkers] == [existing["uuid"]]
    links = exporting.under("actorklantcontacten", "klantcontact", exporting.remote(registered.klantcontact_id))
    assert existing["uuid"] in {link["actor"]["uuid"] for link in links}


@pytest.fixture
def with_documents(exporting: Exporting, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Exporting, Any]]:
    """The same, with a Documenten API test server for the mail's .eml and its attachments."""
    from support.registers import CLIENT_ID, INFORMATIEOBJECTTYPE, RSIN, SECRET, open_zaak

    from kcc.config import DocumentenConfig

    monkeypatch.setenv("KCC_TEST_DOCUMENTEN_SECRET", SECRET)
    with open_zaak() as drc:
        documenten = DocumentenConfig(url=drc.url, client_id=CLIENT_ID, secret_env="KCC_TEST_DOCUMENTEN_SECRET",
                                      bronorganisatie=RSIN, informatieobjecttype=INFORMATIEOBJECTTYPE, timeout=2)
        app = build_app(dataclasses.replace(exporting.app.config, documenten=documenten), engine=exporting.app.engine)
        yield dataclasses.replace(exporting, app=app, exporter=app.exporter()), drc
        assert drc.invalid == [], "every request to the Documenten API must validate against its specification"


def test_the_mail_and_its_attachment_become_documents_and_bijlagen(with_documents: tuple[Exporting, Any]) -> None:
    from support.mails import with_attachment

    exporting, drc = with_documents
    app = exporting.app
    raw = with_attachment("Zie de foto van de container.")
    registered = register(app.uow(), app.config, queue_mail(app, raw), NoFollowUp(), ANNA)
    drc.fail("500-after", "POST", "enkelvoudiginformatieobjecten")  # the first document's answer is lost
    assert exporting.run().retry == 1
    assert exporting.run(later=True).done == 1
    documents = drc.all("enkelvoudiginformatieobjecten")
    assert sorted(d["formaat"] for d in documents) == ["image/jpeg", "message/rfc822"], "each once, none twice"
    eml = next(d for d in documents if d["formaat"] == "message/rfc822")
    assert drc.contents[eml["url"]] == raw, "the whole mail, byte for byte"
    assert eml["integriteit"]["datum"] and eml["bronorganisatie"] == "002220647"
    contact = exporting.remote(registered.klantcontact_id)
    bijlagen = exporting.under("bijlagen", "wasBijlageVanKlantcontact", contact)
    named = sorted(b["bijlageidentificator"]["objectId"] for b in bijlagen)
    assert named == sorted(d["url"].rpartition("/")[2] for d in documents), "the bijlagen name the remote documents"


def test_verify_finds_what_changed_or_went_missing_in_the_register(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    answered = reply(app.uow(), app.config, queue_mail(app, customer_mail("Nagaan")), ANSWER, ANNA)
    exporting.run()
    assert exporting.exporter.verify() == [], "just exported: the register holds what kcc-mail holds"
    vraag = exporting.remote(answered.klantcontact_id)
    vraag["onderwerp"] = "Door iemand anders veranderd"
    antwoord = exporting.remote(answered.antwoord_klantcontact_id)
    (betrokkene,) = exporting.under("betrokkenen", "hadKlantcontact", antwoord)
    del server.objects["betrokkenen"][betrokkene["uuid"]]
    (vraag_betrokkene,) = exporting.under("betrokkenen", "hadKlantcontact", vraag)
    (adres,) = exporting.under("digitaleadressen", "verstrektDoorBetrokkene", vraag_betrokkene)
    adres["adres"] = "iemand.anders@example.nl"  # a field kcc-mail never changes after creation
    found = exporting.exporter.verify()
    assert len(found) == 3, found
    assert any("onderwerp is \"Door iemand anders veranderd\" in the register, \"Nagaan\" here" in f for f in found)
    assert any("betrokkene" in f and "cannot be read (404" in f for f in found)
    assert exporting.run(later=True).done == 0, "verify alone changes nothing"

    assert exporting.exporter.verify(repair=True) == found
    assert exporting.run().done == 2, "both klantcontacten queued for repair"
    assert exporting.exporter.verify() == [], "repaired: the register holds kcc-mail's records again"
    assert exporting.remote(answered.klantcontact_id)["onderwerp"] == "Nagaan"
    assert adres["adres"] == "karel@example.nl"
    assert len(exporting.under("betrokkenen", "hadKlantcontact", antwoord)) == 1, "made again, once"


def test_a_task_gone_from_the_register_is_made_again_when_it_changes(exporting: Exporting) -> None:
    app, server = exporting.app, exporting.server
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Hersteld")), CALL_BACK, ANNA)
    assert registered.interne_taak_id is not None
    exporting.run()
    contact = exporting.remote(registered.klantcontact_id)
    (taak,) = exporting.under("internetaken", "aanleidinggevendKlantcontact", contact)
    del server.objects["internetaken"][taak["uuid"]]  # Open Klant restored to a moment before the task
    taken.complete(app.uow(), registered.interne_taak_id, ANNA)
    assert exporting.run().done == 1
    (again,) = exporting.under("internetaken", "aanleidinggevendKlantcontact", contact)
    assert again["uuid"] != taak["uuid"] and again["status"] == "verwerkt"
    assert exporting.exporter.verify() == []


def test_check_reads_both_registers_with_their_credentials(with_documents: tuple[Exporting, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from kcc.usecases.check import check_registers

    exporting, drc = with_documents
    results = {r.part: r for r in check_registers(exporting.app)}
    assert results["openklant"].ok and "credentials accepted, 0 klantcontacten" in results["openklant"].detail
    assert results["documenten"].ok and "documents of bronorganisatie 002220647" in results["documenten"].detail
    monkeypatch.setenv("KCC_TEST_DOCUMENTEN_SECRET", "not-the-secret-at-all")
    refused = {r.part: r for r in check_registers(exporting.app)}["documenten"]
    assert not refused.ok and "refused with 401" in refused.detail and "documenten.client_id" in refused.detail
    assert "not-the-secret-at-all" not in refused.detail
    assert drc.all("enkelvoudiginformatieobjecten") == [] and exporting.server.all("klantcontacten") == []
