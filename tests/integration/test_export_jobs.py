"""Every decision that creates or changes Klantinteracties records writes its export job in the same transaction,
on SQLite and PostgreSQL: what an operator relies on when the register must show what kcc-mail decided."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from support.mails import customer_mail, dsn_for, queue_mail

from kcc.bootstrap import App
from kcc.records.actor import medewerker, parse_actor
from kcc.service import relay_once
from kcc.usecases import tasks as taken
from kcc.usecases.bounces import process_bounces
from kcc.usecases.reply import Reply, reply
from kcc.usecases.review import DecisionError, HandOff, NoFollowUp, register
from store.export import ExportJob
from store.outbox import OutboxMessage

ANNA = medewerker("anna@gemeente.nl")
CALL_BACK = HandOff("Terugbellen", (parse_actor("afdeling:Burgerzaken"),))
ANSWER = Reply(variables=(("tekst", "Het oud papier gaat elke tweede dinsdag mee."),))


def jobs(app: App, klantcontact_id: int | None) -> list[str]:
    with app.uow() as uow:
        return list(uow.session.scalars(
            select(ExportJob.reden).where(ExportJob.klantcontact_id == klantcontact_id).order_by(ExportJob.id)))


def test_registering_writes_one_job(app: App) -> None:
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Alleen registreren")),
                          NoFollowUp(), ANNA)
    assert jobs(app, registered.klantcontact_id) == ["registreren"]


def test_a_refused_decision_writes_no_job(app: App) -> None:
    mail_id = queue_mail(app, customer_mail("Twee keer"))
    register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    with app.uow() as uow:
        before = len(uow.session.scalars(select(ExportJob.id)).all())
    with pytest.raises(DecisionError):
        register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    with app.uow() as uow:
        assert len(uow.session.scalars(select(ExportJob.id)).all()) == before


def test_task_decisions_write_a_job_each(app: App) -> None:
    registered = register(app.uow(), app.config, queue_mail(app, customer_mail("Bel mij terug")), CALL_BACK, ANNA)
    assert registered.interne_taak_id is not None
    taken.complete(app.uow(), registered.interne_taak_id, ANNA)
    taken.reopen(app.uow(), registered.interne_taak_id, ANNA)
    taken.reroute(app.uow(), registered.interne_taak_id, [parse_actor("afdeling:KCC")], ANNA)
    assert jobs(app, registered.klantcontact_id) == [
        "registreren", "taak_verwerkt", "taak_heropend", "taak_gerouteerd"]


def test_a_reply_its_delivery_and_its_bounce_write_jobs_for_both_klantcontacten(app: App) -> None:
    mail_id = queue_mail(app, customer_mail("Vraag", sender="Karel <karel@example.nl>"))
    answered = reply(app.uow(), app.config, mail_id, ANSWER, ANNA)
    assert jobs(app, answered.klantcontact_id) == ["registreren"]
    assert jobs(app, answered.antwoord_klantcontact_id) == ["registreren"]
    relay_once(app)
    assert jobs(app, answered.antwoord_klantcontact_id) == ["registreren", "antwoord_afgeleverd"]
    with app.uow() as uow:
        message_id = uow.session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.id == answered.outbox_id))
    queue_mail(app, dsn_for(str(message_id), "karel@example.nl"))
    assert process_bounces(app.uow) >= 1
    assert jobs(app, answered.antwoord_klantcontact_id) == [
        "registreren", "antwoord_afgeleverd", "antwoord_niet_afgeleverd"]
