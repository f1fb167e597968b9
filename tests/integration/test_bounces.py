"""A bounce of one of our replies: outbox bounced, klantcontact false with a task, the bounce dismissed."""

from __future__ import annotations

from sqlalchemy import select
from support.mails import customer_mail, queue_mail

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


def dsn_for(message_id: str, recipient: str) -> bytes:
    """A standard delivery status notification (RFC 3464), as Postfix sends one."""
    return (
        "From: MAILER-DAEMON@mx.example.nl (Mail Delivery System)\r\nTo: info@gemeente.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.nl>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="rapport"\r\n\r\n'
        "--rapport\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not "
        f"be delivered to one or more recipients.\r\n\r\n<{recipient}>: host said: 550 5.1.1 User unknown\r\n"
        "--rapport\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.nl\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        "--rapport\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Gemeente Voorbeeld <info@gemeente.example>\r\nTo: {recipient}\r\nSubject: Re: Vraag\r\n"
        f"Message-ID: {message_id}\r\n\r\n--rapport--\r\n"
    ).encode()


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
