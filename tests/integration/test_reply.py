"""The reply decision (C1199 variant A) on SQLite and PostgreSQL: two klantcontacten and an outbox row, or nothing."""

from __future__ import annotations

import dataclasses
import email
import threading
import time
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from support.dbfaults import MESSAGE, refuse_inserts
from support.mails import customer_mail, queue_mail, with_attachment

from kcc.bootstrap import App, build_app
from kcc.records.actor import medewerker
from kcc.usecases.contacts import show_contact
from kcc.usecases.reply import Reply, ReplyRefused, reply
from kcc.usecases.review import DecisionError, dismiss
from kcc.usecases.review_queue import show_mail
from kcc.usecases.verify import verify
from store.audit import AuditEvent
from store.blobs import get_blob
from store.klantinteracties import Betrokkene, Bijlage, Klantcontact, Onderwerpobject
from store.outbox import OutboxMessage
from store.types import utcnow

ANNA = medewerker("anna@gemeente.nl")
TEKST = Reply(variables=(("tekst", "Het oud papier wordt elke tweede dinsdag van de maand opgehaald."),))


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def outbox(app: App, outbox_id: int) -> OutboxMessage:
    with app.uow() as uow:
        row = uow.session.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


def sent_message(app: App, row: OutboxMessage) -> Message:
    with app.uow() as uow:
        return email.message_from_bytes(get_blob(uow.session, row.blob_sha256))


def test_an_answer_is_stored_with_both_klantcontacten_and_the_message_to_send(app: App) -> None:
    mail_id = queue_mail(app, with_attachment())  # Reply-To: karel.prive@example.nl
    result = reply(app.uow(), app.config, mail_id, TEKST, ANNA)
    assert result.outbox_id is not None and result.antwoord_klantcontact_id is not None

    incoming = show_contact(app.uow(), result.klantcontact_id)
    answer = show_contact(app.uow(), result.antwoord_klantcontact_id)
    assert incoming["hadBetrokkenen"][0]["initiator"] is True
    (klant,) = answer["hadBetrokkenen"]
    assert (klant["rol"], klant["initiator"]) == ("klant", False)
    assert klant["digitaleAdressen"][0]["adres"] == "karel.prive@example.nl"
    assert answer["onderwerp"] == "Re: Kapotte container"
    assert "tweede dinsdag" in answer["inhoud"]
    assert answer["indicatieContactGelukt"] is None  # not yet accepted by the SMTP server
    (link,) = answer["gingOverOnderwerpobjecten"]
    assert (link["klantcontact"], link["wasKlantcontact"]) == (
        {"uuid": answer["uuid"]}, {"uuid": incoming["uuid"]}
    )
    assert sorted(a["naam"] for a in answer["hadBetrokkenActoren"]) == ["anna@gemeente.nl", "kcc-mail (e-mailintake)"]

    row = outbox(app, result.outbox_id)
    assert (row.status, row.attempts, row.envelope_to) == ("pending", 0, ["karel.prive@example.nl"])
    assert row.envelope_from == app.config.smtp.from_address
    (bijlage,) = answer["omvatteBijlagen"]
    assert bijlage["informatieobject"]["integriteit"]["waarde"] == row.blob_sha256  # the exact bytes to send

    message = sent_message(app, row)
    original = show_mail(app.uow(), mail_id)
    assert message["Message-ID"] == row.message_id and row.message_id.endswith("@gemeente.example>")
    assert message["To"] == "karel.prive@example.nl"
    assert message["In-Reply-To"] == original["messageId"]
    assert original["messageId"] in message["References"]
    assert message["Auto-Submitted"] == "no"
    assert message["Subject"] == "Re: Kapotte container"
    plain = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    text = plain.get_payload(decode=True).decode(plain.get_content_charset() or "utf-8")
    assert text.startswith("Beste Karel van der Wittewiek,")
    assert incoming["referentienummer"] in text
    assert verify(app.uow()) == []


def test_an_auto_reply_is_only_answered_with_force(app: App) -> None:
    vacation = customer_mail(subject="Afwezig", extra_headers="Auto-Submitted: auto-replied\r\n")
    mail_id = queue_mail(app, vacation)
    assert "auto_reply" in show_mail(app.uow(), mail_id)["flags"]
    before = count(app, Klantcontact)
    with pytest.raises(DecisionError, match="flagged auto_reply.*add --force"):
        reply(app.uow(), app.config, mail_id, TEKST, ANNA)
    assert count(app, Klantcontact) == before
    assert show_mail(app.uow(), mail_id)["state"] == "te_beoordelen"

    forced = Reply(variables=TEKST.variables, force=True)
    result = reply(app.uow(), app.config, mail_id, forced, ANNA)
    assert outbox(app, result.outbox_id or 0).forced is True
    with app.uow() as uow:
        event = uow.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "mail.geregistreerd", AuditEvent.object_id == str(mail_id)
        ))
        assert event is not None and event.details["geforceerd"] is True


def test_a_template_problem_stores_nothing(app: App) -> None:
    mail_id = queue_mail(app, customer_mail())
    before = [count(app, m) for m in (Klantcontact, OutboxMessage)]
    with pytest.raises(ReplyRefused, match="tekst"):
        reply(app.uow(), app.config, mail_id, Reply(), ANNA)  # the employee's text is missing
    with pytest.raises(ReplyRefused, match="bestaatniet"):
        reply(app.uow(), app.config, mail_id, Reply(template="bestaatniet"), ANNA)
    assert [count(app, m) for m in (Klantcontact, OutboxMessage)] == before
    assert show_mail(app.uow(), mail_id)["state"] == "te_beoordelen"


@pytest.mark.parametrize(
    "table",
    ["klantcontact", "betrokkene", "digitaal_adres", "actor_klantcontact", "onderwerpobject", "informatieobject",
     "bijlage", "outbox_message", "audit_event"],
)
def test_a_failure_at_any_step_of_the_reply_stores_nothing(app: App, table: str) -> None:
    mail_id = queue_mail(app, customer_mail())
    counted = (Klantcontact, Betrokkene, Bijlage, Onderwerpobject, OutboxMessage, AuditEvent)
    before = [count(app, model) for model in counted]
    with refuse_inserts(app.engine, table), pytest.raises(Exception, match=MESSAGE):
        reply(app.uow(), app.config, mail_id, TEKST, ANNA)
    assert [count(app, model) for model in counted] == before
    assert show_mail(app.uow(), mail_id)["state"] == "te_beoordelen"


def test_verify_reports_an_answer_without_its_outbox_message(app: App) -> None:
    result = reply(app.uow(), app.config, queue_mail(app, customer_mail()), TEKST, ANNA)
    with app.uow() as uow:
        row = uow.session.get(OutboxMessage, result.outbox_id)
        uow.session.delete(row)
        uow.commit()
    problems = verify(app.uow())
    assert problems == [f"answer klantcontact {result.antwoord_klantcontact_id} has no outbox message: "
                        "it was never sent nor queued"]
    with app.uow() as uow:  # put it back, so the module's database stays whole
        uow.session.add(OutboxMessage(
            klantcontact_id=result.antwoord_klantcontact_id, message_id=f"<hersteld-{result.outbox_id}@x>",
            blob_sha256=row.blob_sha256, envelope_from="info@gemeente.example", envelope_to=["k@example.nl"],
            deliver_until=utcnow(),
        ))
        uow.commit()
    assert verify(app.uow()) == []


def test_a_template_that_never_ends_is_stopped_and_never_holds_the_mail_locked(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import replies.render_worker

    folder = tmp_path / "sjablonen"
    folder.mkdir()
    (folder / "eindeloos.toml").write_text("", encoding="utf-8")
    (folder / "eindeloos.txt.j2").write_text(
        "{% for i in 'x' * 100000 %}{% for j in 'y' * 100000 %}{% endfor %}{% endfor %}", encoding="utf-8"
    )
    monkeypatch.setattr(replies.render_worker._WORKER, "seconds", 3.0)
    configured = dataclasses.replace(app, config=dataclasses.replace(
        app.config, replies=dataclasses.replace(app.config.replies, templates_dir=str(folder))))
    looping = queue_mail(app, customer_mail("Een lus"))
    other = queue_mail(app, customer_mail("Een andere vraag"))
    outcome: list[BaseException] = []

    def answer() -> None:
        try:
            reply(configured.uow(), configured.config, looping, Reply(template="eindeloos"), ANNA)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=answer)
    thread.start()
    time.sleep(1.0)  # the template is rendering now
    dismiss(app.uow(), other, "spam", ANNA)  # the database is not held by the render: another decision goes on
    assert thread.is_alive(), "still rendering when the other decision was stored"
    thread.join(30)
    (refused,) = outcome
    assert isinstance(refused, ReplyRefused) and "took longer than 3 s to render and was stopped" in str(refused)
    assert show_mail(app.uow(), looping)["state"] == "te_beoordelen", "nothing was stored for the looping reply"


def test_the_quote_line_gives_the_moment_the_customer_wrote_not_when_we_fetched(app: App) -> None:
    written = customer_mail().replace(b"Date: Mon, 23 Nov 2026 09:15:00 +0100",
                                      b"Date: Sun, 22 Nov 2026 21:03:00 +0100")
    result = reply(app.uow(), app.config, queue_mail(app, written), TEKST, ANNA)
    assert result.outbox_id is not None
    message = sent_message(app, outbox(app, result.outbox_id))
    (text,) = [part.get_payload(decode=True) for part in message.walk() if part.get_content_type() == "text/plain"]
    assert b"Op 22 november 2026 om 21:03 schreef" in text


def test_the_number_reservation_commits_lazily_but_the_decision_durably(
    postgres_engine: Engine, tmp_path: Path
) -> None:
    """The reservation of a reply's two referentienummers may skip the wait for the disk (PostgreSQL; SQLite never
    waits at commit); the decision that uses them must not, nor any later transaction on the same connection."""
    from conftest import make_config
    from sqlalchemy import event

    app = build_app(make_config(postgres_engine.url.render_as_string(hide_password=False), tmp_path),
                    engine=postgres_engine)
    mail_id = queue_mail(app, customer_mail("Nummers"))
    settings: list[str] = []

    def before_commit(connection: Any) -> None:
        settings.append(connection.exec_driver_sql("SHOW synchronous_commit").scalar())

    event.listen(app.engine, "commit", before_commit)
    try:
        reply(app.uow(), app.config, mail_id, TEKST, ANNA)
    finally:
        event.remove(app.engine, "commit", before_commit)
    assert settings == ["off", "on"], "the reservation, then the decision"
    with app.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
