"""Review decisions and interne taken on SQLite and PostgreSQL: one transaction each, or nothing at all."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import func, select
from support.dbfaults import MESSAGE, refuse_inserts
from support.mails import RECEIVED, customer_mail, queue_mail, with_attachment

from kcc.bootstrap import App
from kcc.records.actor import ActorRef, medewerker, parse_actor
from kcc.usecases import tasks as taken
from kcc.usecases.contacts import ContactNotFound, show_contact
from kcc.usecases.review import DecisionError, HandOff, NoFollowUp, Registered, dismiss, register
from kcc.usecases.review_queue import list_mails, show_mail
from kcc.usecases.verify import verify
from store.audit import AuditEvent
from store.blobs import get_blob
from store.klantinteracties import Betrokkene, Bijlage, InterneTaak, Klantcontact
from store.mail import InboundMail

ANNA = medewerker("anna@gemeente.nl")
BURGERZAKEN = parse_actor("afdeling:Burgerzaken")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def mail_state(app: App, mail_id: int) -> str:
    return str(show_mail(app.uow(), mail_id)["state"])


def terugbellen(*actoren: ActorRef) -> HandOff:
    return HandOff("Terugbellen", actoren or (BURGERZAKEN,), "Meneer wil weten wanneer het papier wordt opgehaald.")


def test_a_mail_handed_off_becomes_klantcontact_betrokkene_bijlagen_and_task(app: App) -> None:
    mail_id = queue_mail(app, with_attachment())
    piet = parse_actor("medewerker:Piet@Gemeente.nl")
    result = register(app.uow(), app.config, mail_id, terugbellen(BURGERZAKEN, piet), ANNA, now=NOW)

    assert mail_state(app, mail_id) == "geregistreerd"
    assert show_mail(app.uow(), mail_id)["klantcontactId"] == result.klantcontact_id
    contact = show_contact(app.uow(), result.klantcontact_id)
    assert contact["kanaal"] == "e-mail" and contact["taal"] == "nld" and contact["vertrouwelijk"] is False
    assert contact["onderwerp"] == "Kapotte container"
    assert contact["inhoud"] == "Zie de foto."
    assert contact["indicatieContactGelukt"] is True
    assert contact["plaatsgevondenOp"] == RECEIVED.isoformat()
    assert contact["referentienummer"].isdigit() and len(contact["referentienummer"]) == 10

    (klant,) = contact["hadBetrokkenen"]
    assert (klant["rol"], klant["initiator"], klant["wasPartij"]) == ("klant", True, None)
    assert klant["contactnaam"] == {
        "voorletters": "K.", "voornaam": "Karel", "voorvoegselAchternaam": "van der", "achternaam": "Wittewiek",
    }
    assert [(a["soortDigitaalAdres"], a["adres"]) for a in klant["digitaleAdressen"]] == [
        ("email", "karel.prive@example.nl")  # Reply-To wins over From
    ]
    assert sorted((a["soortActor"], a["naam"]) for a in contact["hadBetrokkenActoren"]) == [
        ("geautomatiseerde_actor", "kcc-mail (e-mailintake)"), ("medewerker", "anna@gemeente.nl"),
    ]

    eml, foto = (b["informatieobject"] for b in contact["omvatteBijlagen"])
    stored = show_mail(app.uow(), mail_id)
    assert (eml["formaat"], eml["titel"]) == ("message/rfc822", "Kapotte container")
    assert eml["bestandsomvang"] == stored["size"]
    assert eml["integriteit"] == {"algoritme": "sha_256", "waarde": stored["sha256"]}
    assert (foto["bestandsnaam"], foto["formaat"]) == ("container.jpg", "image/jpeg")
    for bijlage in contact["omvatteBijlagen"]:
        identificator = bijlage["bijlageidentificator"]
        assert identificator["objectId"] == bijlage["informatieobject"]["uuid"]
        assert identificator["codeSoortObjectId"] == "uuid"
    with app.uow() as uow:  # the documents share the stored bytes: no copy
        assert get_blob(uow.session, eml["integriteit"]["waarde"]).startswith(b"From: Karel")

    taak = taken.show(app.uow(), result.interne_taak_id or 0)
    assert taak["gevraagdeHandeling"] == "Terugbellen"
    assert taak["toelichting"] == "Meneer wil weten wanneer het papier wordt opgehaald."
    assert (taak["status"], taak["afgehandeldOp"], taak["toegewezenOp"]) == ("te_verwerken", None, NOW.isoformat())
    assert sorted((a["soortActor"], a["naam"]) for a in taak["toegewezenAanActoren"]) == [
        ("medewerker", "piet@gemeente.nl"), ("organisatorische_eenheid", "Burgerzaken"),
    ]
    assert taak["aanleidinggevendKlantcontact"]["hadBetrokkenen"][0]["digitaleAdressen"][0]["adres"] == (
        "karel.prive@example.nl"
    )
    with app.uow() as uow:
        event = uow.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "mail.geregistreerd", AuditEvent.object_id == str(mail_id))
        )
        assert event is not None and event.who == "medewerker:anna@gemeente.nl"


def test_register_without_follow_up_and_the_bounded_fields(app: App) -> None:
    long_text = "Beste gemeente, " + "ik heb een hele lange vraag over de parkeervergunning " * 40
    mail_id = queue_mail(app, customer_mail(subject="", body=long_text, sender="info@bakkerij.nl"))
    result = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    contact = show_contact(app.uow(), result.klantcontact_id)
    assert contact["onderwerp"] == "(geen onderwerp)"
    assert len(contact["inhoud"]) <= 1000
    assert contact["inhoud"].endswith("[ingekort; de volledige mail staat in de bijlage]")
    kept = contact["inhoud"].split(" … ")[0]
    assert long_text.startswith(kept) and long_text[len(kept)] == " "  # cut between two words
    assert contact["leiddeTotInterneTaken"] == []
    assert result.interne_taak_id is None


def test_an_organisation_goes_to_organisatienaam(app: App) -> None:
    mail_id = queue_mail(app, customer_mail(sender='"Bakkerij De Graaf B.V." <bestel@degraaf.nl>'))
    result = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    (klant,) = show_contact(app.uow(), result.klantcontact_id)["hadBetrokkenen"]
    assert klant["organisatienaam"] == "Bakkerij De Graaf B.V."
    assert klant["contactnaam"]["achternaam"] == ""


def test_a_mail_is_decided_once(app: App) -> None:
    mail_id = queue_mail(app, customer_mail())
    register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    with pytest.raises(DecisionError, match=rf"mail {mail_id} is geregistreerd by anna@gemeente.nl"):
        register(app.uow(), app.config, mail_id, terugbellen(), medewerker("bob@gemeente.nl"))
    with pytest.raises(DecisionError, match="geregistreerd"):
        dismiss(app.uow(), mail_id, "spam", ANNA)
    with pytest.raises(DecisionError, match="no stored mail with id 999999"):
        register(app.uow(), app.config, 999999, NoFollowUp(), ANNA)


def test_dismiss_records_the_reason_and_creates_no_klantcontact(app: App) -> None:
    mail_id = queue_mail(app, customer_mail(subject="Gratis horloges"))
    before = count(app, Klantcontact)
    dismiss(app.uow(), mail_id, "spam", ANNA)
    mail = show_mail(app.uow(), mail_id)
    assert (mail["state"], mail["dismissReason"], mail["klantcontactId"]) == ("afgewezen", "spam", None)
    assert count(app, Klantcontact) == before
    with pytest.raises(DecisionError, match="unknown reason 'vervelend'"):
        dismiss(app.uow(), queue_mail(app, customer_mail()), "vervelend", ANNA)


@pytest.mark.parametrize(
    "table",
    ["klantcontact", "betrokkene", "digitaal_adres", "actor", "actor_klantcontact", "informatieobject", "bijlage",
     "interne_taak", "interne_taak_actor", "audit_event"],
)
def test_a_failure_at_any_step_of_register_stores_nothing(app: App, table: str) -> None:
    mail_id = queue_mail(app, with_attachment())
    new_colleague = parse_actor(f"medewerker:nieuw-{table}@gemeente.nl")  # so that an actor is inserted too
    counted = (Klantcontact, Betrokkene, Bijlage, InterneTaak, AuditEvent)
    before = [count(app, model) for model in counted]
    with refuse_inserts(app.engine, table), pytest.raises(Exception, match=MESSAGE):
        register(app.uow(), app.config, mail_id, terugbellen(new_colleague), ANNA)
    assert [count(app, model) for model in counted] == before
    assert mail_state(app, mail_id) == "te_beoordelen"
    assert register(app.uow(), app.config, mail_id, terugbellen(new_colleague), ANNA).klantcontact_id


def test_complete_and_reopen_follow_the_standard(app: App) -> None:
    result = register(app.uow(), app.config, queue_mail(app, customer_mail()), terugbellen(), ANNA)
    taak_id = result.interne_taak_id or 0
    taken.complete(app.uow(), taak_id, medewerker("piet@gemeente.nl"), now=NOW)
    assert (taken.show(app.uow(), taak_id)["status"], taken.show(app.uow(), taak_id)["afgehandeldOp"]) == (
        "verwerkt", NOW.isoformat()
    )
    with pytest.raises(taken.TaakError, match="already verwerkt"):
        taken.complete(app.uow(), taak_id, ANNA)
    taken.reopen(app.uow(), taak_id, ANNA)
    assert (taken.show(app.uow(), taak_id)["status"], taken.show(app.uow(), taak_id)["afgehandeldOp"]) == (
        "te_verwerken", None
    )


def test_reroute_hands_the_task_on_and_closes_the_original_atomically(app: App) -> None:
    result = register(app.uow(), app.config, queue_mail(app, customer_mail()), terugbellen(), ANNA)
    original = result.interne_taak_id or 0
    kcc = parse_actor("afdeling:KCC")
    with refuse_inserts(app.engine, "interne_taak"), pytest.raises(Exception, match=MESSAGE):
        taken.reroute(app.uow(), original, [kcc], medewerker("piet@gemeente.nl"))
    assert taken.show(app.uow(), original)["status"] == "te_verwerken"

    new_id = taken.reroute(
        app.uow(), original, [kcc], medewerker("piet@gemeente.nl"), gevraagde_handeling=taken.OPNIEUW_ROUTEREN,
        toelichting="Beste collega, ik kan deze vraag helaas niet beantwoorden.", now=NOW,
    )
    old, new = taken.show(app.uow(), original), taken.show(app.uow(), new_id)
    assert (old["status"], old["afgehandeldOp"]) == ("verwerkt", NOW.isoformat())
    assert new["gevraagdeHandeling"] == "Opnieuw routeren" and new["status"] == "te_verwerken"
    assert new["vervangtInterneTaak"]["id"] == original
    assert new["aanleidinggevendKlantcontact"]["uuid"] == old["aanleidinggevendKlantcontact"]["uuid"]
    assert [a["naam"] for a in new["toegewezenAanActoren"]] == ["KCC"]
    with pytest.raises(taken.TaakError, match="only a task te_verwerken can be rerouted"):
        taken.reroute(app.uow(), original, [kcc], ANNA)


def test_reroute_keeps_the_handeling_and_toelichting_unless_they_are_changed(app: App) -> None:
    result = register(app.uow(), app.config, queue_mail(app, customer_mail()), terugbellen(), ANNA)
    original = taken.show(app.uow(), result.interne_taak_id or 0)
    moved = taken.reroute(app.uow(), original["id"], [parse_actor("afdeling:Wonen")], ANNA)
    new = taken.show(app.uow(), moved)
    assert (new["gevraagdeHandeling"], new["toelichting"]) == ("Terugbellen", original["toelichting"])
    assert "wanneer het papier" in new["toelichting"], "the callback details travel with the task"


def test_search_finds_open_tasks_by_actor_oldest_first(app: App) -> None:
    vergunningen = parse_actor("afdeling:Vergunningen")
    ids = [
        register(app.uow(), app.config, queue_mail(app, customer_mail()), terugbellen(vergunningen), ANNA,
                 now=datetime(2026, 11, day, tzinfo=UTC)).interne_taak_id
        for day in (20, 18, 19)
    ]
    found = [t["id"] for t in taken.search(app.uow(), assigned=vergunningen)]
    assert found == [ids[1], ids[2], ids[0]]
    taken.complete(app.uow(), ids[1] or 0, ANNA)
    assert [t["id"] for t in taken.search(app.uow(), assigned=vergunningen)] == [ids[2], ids[0]]
    assert ids[1] in [t["id"] for t in taken.search(app.uow(), status="verwerkt", assigned=vergunningen)]


def test_a_follow_up_mail_is_linked_to_the_earlier_klantcontact(app: App) -> None:
    first = queue_mail(app, customer_mail(message_id="<eerste@example.nl>"))
    earlier = register(app.uow(), app.config, first, NoFollowUp(), ANNA)
    follow_up = customer_mail(
        subject="Re: Vraag over de afvalkalender",
        extra_headers="In-Reply-To: <eerste@example.nl>\r\nReferences: <eerste@example.nl>\r\n",
    )
    later = register(app.uow(), app.config, queue_mail(app, follow_up), NoFollowUp(), ANNA)
    (link,) = show_contact(app.uow(), later.klantcontact_id)["gingOverOnderwerpobjecten"]
    assert link["wasKlantcontact"] == {"uuid": earlier.klantcontact_uuid}
    assert link["onderwerpobjectidentificator"]["objectId"] == earlier.klantcontact_uuid


def test_two_employees_deciding_at_once_one_wins(app: App) -> None:
    mail_id = queue_mail(app, customer_mail())
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def decide(who: str) -> None:
        start.wait()
        try:
            outcomes.append(register(app.uow(), app.config, mail_id, terugbellen(), medewerker(who)))
        except DecisionError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=decide, args=(w,)) for w in ("anna@gemeente.nl", "bob@gemeente.nl")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(type(o).__name__ for o in outcomes) == ["DecisionError", "Registered"]
    assert "is geregistreerd by" in str(next(o for o in outcomes if isinstance(o, DecisionError)))
    with app.uow() as uow:
        assert uow.session.scalar(
            select(func.count()).select_from(InterneTaak).join(
                InboundMail, InboundMail.klantcontact_id == InterneTaak.aanleidinggevend_klantcontact_id
            ).where(InboundMail.id == mail_id)
        ) == 1
    assert isinstance(next(o for o in outcomes if not isinstance(o, DecisionError)), Registered)


def test_zz_after_all_scenarios_nothing_is_orphaned(app: App) -> None:
    """Runs last in this module: every decision above left whole records behind."""
    assert count(app, Klantcontact) > 10
    assert verify(app.uow()) == []


def test_a_klantcontact_is_found_by_the_number_the_customer_quotes_its_uuid_or_its_id(app: App) -> None:
    results = [register(app.uow(), app.config, queue_mail(app, customer_mail(f"Vraag {n}")), NoFollowUp(), ANNA)
               for n in range(3)]
    last = results[-1]
    by_number = show_contact(app.uow(), last.referentienummer)
    assert by_number["id"] == last.klantcontact_id, "0000000042 is a referentienummer, not id 42"
    assert show_contact(app.uow(), last.klantcontact_uuid)["id"] == last.klantcontact_id
    assert show_contact(app.uow(), str(last.klantcontact_id))["referentienummer"] == last.referentienummer
    with pytest.raises(ContactNotFound, match="no klantcontact with referentienummer or id 99999999999"):
        show_contact(app.uow(), "99999999999")


def test_a_task_is_found_by_the_uuid_tasks_list_prints(app: App) -> None:
    result = register(app.uow(), app.config, queue_mail(app, customer_mail()), terugbellen(), ANNA)
    listed = next(t for t in taken.search(app.uow(), status=None) if t["id"] == result.interne_taak_id)
    assert taken.show(app.uow(), listed["uuid"])["id"] == result.interne_taak_id
    taken.complete(app.uow(), listed["uuid"], ANNA)
    assert taken.show(app.uow(), str(result.interne_taak_id))["status"] == "verwerkt"


def test_lists_come_in_pages_that_say_how_many_there_are(app: App) -> None:
    mailbox = f"paging{uuid4().hex[:6]}"
    for n in range(5):
        queue_mail(app, customer_mail(f"Pagina {n}"), mailbox)
    first = list_mails(app.uow(), mailbox=mailbox, limit=2)
    assert ([m["subject"] for m in first], first.total) == (["Pagina 0", "Pagina 1"], 5)
    assert first.note("mails") == "2 of 5 mails shown; --offset 2 shows the next"
    last = list_mails(app.uow(), mailbox=mailbox, limit=2, offset=4)
    assert [m["subject"] for m in last] == ["Pagina 4"] and last.note("mails") == "1 of 5 mails shown (from number 5)"
    assert list_mails(app.uow(), mailbox=mailbox, limit=None).note("mails") == "5 mails"


def test_an_address_longer_than_the_standard_allows_is_left_out_and_noted(app: App) -> None:
    long_address = "klant." + "x" * 80 + "@example.nl"
    mail_id = queue_mail(app, customer_mail(extra_headers=f"Reply-To: {long_address}\r\n"))
    result = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    contact = show_contact(app.uow(), result.klantcontact_uuid)
    assert [b["digitaleAdressen"] for b in contact["hadBetrokkenen"]] == [[]]
    with app.uow() as uow:
        event = uow.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "mail.geregistreerd", AuditEvent.object_id == str(mail_id))).one()
    assert event.details["digitaalAdres"].startswith("weggelaten: 97 tekens")
