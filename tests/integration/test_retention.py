"""Retention of registered mail, on SQLite and PostgreSQL: a closed dossier past its period goes whole, the
rest stays whole; and a bounced reply stops pointing at a purged bounce mail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from support.mails import customer_mail, dsn_for, queue_mail, with_attachment

from kcc.bootstrap import App
from kcc.records.actor import medewerker, parse_actor
from kcc.usecases import tasks as taken
from kcc.usecases.audit_log import AuditFilter, list_events
from kcc.usecases.bounces import process_bounces
from kcc.usecases.purge import PurgeError, purge
from kcc.usecases.reply import Reply, reply
from kcc.usecases.retention import HANDLED_REFERENCES, purge_registered
from kcc.usecases.review import HandOff, NoFollowUp, register
from kcc.usecases.verify import verify
from store.base import Base
from store.export import ExportJob
from store.klantinteracties import Informatieobject, InterneTaak, Klantcontact, Onderwerpobject
from store.mail import Blob, InboundMail
from store.outbox import OutboxMessage

ANNA = medewerker("anna@gemeente.nl")
NOW = datetime(2001, 1, 1, tzinfo=UTC)  # far before every other test's mail, so this purge touches only its own
OLD = NOW - timedelta(days=400)
RECENT = NOW - timedelta(days=10)
CALL_BACK = HandOff("Terugbellen", (parse_actor("afdeling:Burgerzaken"),))
ANSWER = Reply(variables=(("tekst", "Het oud papier gaat elke tweede dinsdag mee."),))


def exists(app: App, model: type[Any], row_id: int | None) -> bool:
    with app.uow() as uow:
        return row_id is not None and uow.session.get(model, row_id) is not None


def settle(app: App, outbox_id: int | None, status: str, at: datetime) -> None:
    """As if the relay had finished the reply at `at` (the klantcontact took place when it was sent)."""
    with app.uow() as uow:
        row = uow.session.get(OutboxMessage, outbox_id)
        assert row is not None
        row.status, row.sent_at = status, at if status == "sent" else None
        uow.session.execute(update(Klantcontact).where(Klantcontact.id == row.klantcontact_id)
                            .values(plaatsgevonden_op=at))
        uow.commit()


def answered(app: App, at: datetime, outcome: str = "sent") -> tuple[int, Any]:
    mail_id = queue_mail(app, with_attachment("Zie de foto van de container."), received_at=at)
    result = reply(app.uow(), app.config, mail_id, ANSWER, ANNA, now=at)
    settle(app, result.outbox_id, outcome, at)
    return mail_id, result


def test_only_closed_dossiers_past_their_period_are_deleted_and_whole(app: App) -> None:
    done_mail, done = answered(app, OLD)  # answered and sent long ago: due
    open_mail = queue_mail(app, customer_mail("Open taak"), received_at=OLD)
    open_task = register(app.uow(), app.config, open_mail, CALL_BACK, ANNA, now=OLD)
    closed_mail = queue_mail(app, customer_mail("Afgeronde taak"), received_at=OLD)
    closed_task = register(app.uow(), app.config, closed_mail, CALL_BACK, ANNA, now=OLD)
    assert closed_task.interne_taak_id is not None
    taken.complete(app.uow(), closed_task.interne_taak_id, ANNA, now=OLD)
    uncertain_mail, uncertain = answered(app, OLD, outcome="uncertain")  # an operator must still look at it
    recent_mail = queue_mail(app, customer_mail("Recent"), received_at=RECENT)
    register(app.uow(), app.config, recent_mail, NoFollowUp(), ANNA, now=RECENT)
    followed_mail = queue_mail(app, customer_mail("Eerste vraag", message_id="<eerste-2000@example.nl>"),
                               received_at=OLD)
    followed = register(app.uow(), app.config, followed_mail, NoFollowUp(), ANNA, now=OLD)
    again = customer_mail("Re: Eerste vraag", extra_headers="In-Reply-To: <eerste-2000@example.nl>\r\n")
    follow_up = queue_mail(app, again, received_at=RECENT)  # the customer wrote again: the earlier one is needed
    register(app.uow(), app.config, follow_up, NoFollowUp(), ANNA, now=RECENT)
    with app.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Onderwerpobject).where(
            Onderwerpobject.was_klantcontact_id == followed.klantcontact_id)) == 1
        raw = uow.session.get(InboundMail, done_mail)
        assert raw is not None
        done_blob = raw.raw_sha256
        reply_blob = uow.session.scalar(select(OutboxMessage.blob_sha256).where(OutboxMessage.id == done.outbox_id))

    # the export is off here: its jobs have nowhere to go and leave with their dossier
    dry = purge_registered(app.uow(), older_than_days=365, now=NOW, dry_run=True, keep_unexported=False)
    assert exists(app, InboundMail, done_mail) and exists(app, Klantcontact, done.klantcontact_id)
    result = purge_registered(app.uow(), older_than_days=365, now=NOW, who="medewerker:fb@gemeente.nl",
                              keep_unexported=False)
    assert (result.klantcontacten, result.mails, result.blobs) == (dry.klantcontacten, dry.mails, dry.blobs)
    assert sorted(result.mail_ids) == sorted([done_mail, closed_mail])
    assert result.klantcontacten == 3  # the mail and its answer; the mail with its finished task

    assert not exists(app, InboundMail, done_mail) and not exists(app, Klantcontact, done.klantcontact_id)
    assert not exists(app, Klantcontact, done.antwoord_klantcontact_id)
    assert not exists(app, OutboxMessage, done.outbox_id) and not exists(app, InterneTaak, closed_task.interne_taak_id)
    assert not exists(app, Blob, done_blob) and not exists(app, Blob, reply_blob)  # type: ignore[arg-type]
    for kept in (open_mail, uncertain_mail, recent_mail, followed_mail, follow_up):
        assert exists(app, InboundMail, kept)
    assert exists(app, InterneTaak, open_task.interne_taak_id) and exists(app, OutboxMessage, uncertain.outbox_id)
    assert verify(app.uow()) == [], "what is left is whole: no link to a deleted record"

    (event,) = list_events(app.uow(), AuditFilter(who="medewerker:fb@gemeente.nl", action="mail.opgeschoond"))
    details = event["details"]
    assert (details["state"], details["klantcontacten"], details["dossiers"]) == ("geregistreerd", 3, 2)
    assert sorted(details["mailIds"]) == sorted([done_mail, closed_mail]) and len(details["referentienummers"]) == 3
    assert "container" not in str(details), "the account names numbers, never a content"
    again = purge_registered(app.uow(), older_than_days=365, now=NOW)
    assert (again.klantcontacten, again.mails) == (0, 0)


def test_a_dossier_waits_for_its_export_to_reach_the_register(app: App) -> None:
    mail_id = queue_mail(app, customer_mail("Nog niet in Open Klant"), received_at=OLD)
    registered = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA, now=OLD)
    with app.uow() as uow:
        (job,) = uow.session.scalars(select(ExportJob).where(ExportJob.klantcontact_id == registered.klantcontact_id))
        assert (job.status, job.reden) == ("pending", "registreren"), "the decision wrote its export job"
    kept = purge_registered(app.uow(), older_than_days=365, now=NOW)
    assert mail_id not in kept.mail_ids and exists(app, Klantcontact, registered.klantcontact_id)
    with app.uow() as uow:
        uow.session.execute(update(ExportJob).where(ExportJob.klantcontact_id == registered.klantcontact_id)
                            .values(status="done"))
        uow.commit()
    gone = purge_registered(app.uow(), older_than_days=365, now=NOW)
    assert mail_id in gone.mail_ids and not exists(app, Klantcontact, registered.klantcontact_id)
    with app.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(ExportJob).where(
            ExportJob.klantcontact_id == registered.klantcontact_id)) == 0


def test_every_reference_to_a_dossier_row_is_handled() -> None:
    deleted = {"klantcontact", "inbound_mail", "interne_taak", "betrokkene", "informatieobject"}
    references = {
        (table.name, fk.parent.name)
        for table in Base.metadata.tables.values() for fk in table.foreign_keys if fk.column.table.name in deleted
    }
    assert references == HANDLED_REFERENCES, "a table refers to a row a purge deletes: handle it in retention.py"
    assert Informatieobject.__tablename__ in deleted


def test_a_bounced_reply_says_its_purged_bounce_mail_is_gone(app: App) -> None:
    mail_id = queue_mail(app, customer_mail(sender="Karel <karel@example.nl>"), received_at=OLD)
    result = reply(app.uow(), app.config, mail_id, ANSWER, ANNA, now=OLD)
    settle(app, result.outbox_id, "sent", OLD)
    with app.uow() as uow:
        message_id = uow.session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.id == result.outbox_id))
    bounce_id = queue_mail(app, dsn_for(str(message_id), "karel@example.nl"), received_at=OLD)
    assert process_bounces(app.uow) >= 1
    gone = purge(app.uow(), state="afgewezen", older_than_days=30, now=NOW)
    assert bounce_id in gone.mail_ids
    with app.uow() as uow:
        note = uow.session.scalar(select(OutboxMessage.last_smtp_reply).where(OutboxMessage.id == result.outbox_id))
    assert note == f"bounce (mail {bounce_id}, purged: received before 2000-12-02) for karel@example.nl"


def test_a_negative_period_is_refused(app: App) -> None:
    with pytest.raises(PurgeError, match="--older-than must be 0 days or more"):
        purge_registered(app.uow(), older_than_days=-1)
