"""A bounce of one of our replies: outbox bounced, klantcontact false with a task, the bounce dismissed."""

from __future__ import annotations

from sqlalchemy import select
from support.mails import customer_mail, dsn_for, queue_mail

from kcc.bootstrap import App
from kcc.records.actor import medewerker, parse_actor
from kcc.usecases import tasks as taken
from kcc.usecases.bounces import process_bounces
from kcc.usecases.contacts import show_contact
from kcc.usecases.reply import Reply, reply
from kcc.usecases.review_queue import show_mail
from kcc.usecases.verify import verify
from store.audit import AuditEvent
from store.outbox import OutboxMessage


def test_a_bounced_reply_turns_into_a_task_for_the_kcc(app: App) -> None:
    mail_id = queue_mail(app, customer_mail(sender="Karel <karel@example.nl>"))
    answer = Reply(variables=(("tekst", "Hierbij het antwoord."),))
    result = reply(app.uow(), app.config, mail_id, answer, medewerker("anna@gemeente.nl"))
    with app.uow() as uow:
        outbox = uow.session.get(OutboxMessage, result.outbox_id)
        assert outbox is not None
        outbox.status = "sent"
        uow.commit()
        message_id = outbox.message_id

    bounce_id = queue_mail(app, dsn_for(message_id, "karel@example.nl"))
    assert "bounce" in show_mail(app.uow(), bounce_id)["flags"]
    assert process_bounces(app.uow) == 1

    bounce = show_mail(app.uow(), bounce_id)
    assert (bounce["state"], bounce["dismissReason"]) == ("afgewezen", "bounce")
    with app.uow() as uow:
        row = uow.session.get(OutboxMessage, result.outbox_id)
        assert row is not None and row.status == "bounced"
        event = uow.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "mail.afgewezen", AuditEvent.object_id == str(bounce_id)
        ))
        assert event is not None and event.details["outbox"] == result.outbox_id
    reply_contact = show_contact(app.uow(), result.antwoord_klantcontact_id or 0)
    assert reply_contact["indicatieContactGelukt"] is False
    (task,) = taken.search(app.uow(), assigned=parse_actor("afdeling:KCC"))
    assert task["gevraagdeHandeling"] == "Antwoord niet afgeleverd"
    assert task["aanleidinggevendKlantcontact"]["uuid"] == reply_contact["uuid"]
    assert process_bounces(app.uow) == 0  # handled once
    assert verify(app.uow()) == []


def test_a_bounce_of_someone_elses_mail_stays_for_review(app: App) -> None:
    bounce_id = queue_mail(app, dsn_for("<niet-van-ons@elders.nl>", "iemand@example.nl"))
    assert process_bounces(app.uow) == 0
    assert show_mail(app.uow(), bounce_id)["state"] == "te_beoordelen"
