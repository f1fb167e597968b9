"""The outbox relay against a real aiosmtpd server, on SQLite and PostgreSQL: sent once, or visibly uncertain.

Decided here (see replies/relay.py): a reply accepted for at least one recipient is `sent`; recipients refused at the
same time are reported to the KCC in an interne taak, and the klantcontact stays gelukt.
"""

from __future__ import annotations

import dataclasses
import logging
import smtplib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from support.dbfaults import MESSAGE, refuse_inserts
from support.dovecot import ImapUser
from support.mails import customer_mail, queue_mail
from support.netproxy import running_proxy
from support.outbox import CUSTOMER, SENDER, QueuedReply, queue_replies, queue_reply
from support.smtpfaults import FaultySmtpServer, running_faulty_server
from support.smtpserver import SmtpTestServer

from kcc.bootstrap import App, smtp_settings
from kcc.config import RepliesConfig, SmtpConfig
from kcc.records.actor import medewerker
from kcc.records.reply_outcome import GEVRAAGDE_HANDELING
from kcc.service import relay_once as relay_once_for_app
from kcc.usecases.contacts import show_contact
from kcc.usecases.outbox import Outbox, OutboxError, claim, finish, finish_accepted, mark_sent, resend
from kcc.usecases.reply import Reply, reply
from replies.delivery import RelaySettings, RelaySummary, backoff
from replies.relay import relay_once
from replies.smtp import Delivery, send_message
from replies.transport import DirectoryTransport, SmtpTransport, TransportError, eml_name
from store.audit import AuditEvent
from store.blobs import get_blob
from store.outbox import OutboxMessage
from store.types import utcnow

SETTINGS = RelaySettings(lease_seconds=60)
ANNA = "medewerker:anna@gemeente.nl"


@pytest.fixture
def server() -> Iterator[FaultySmtpServer]:
    with running_faulty_server() as smtp:
        yield smtp


@pytest.fixture
def smtp_app(app: App, server: SmtpTestServer) -> Iterator[App]:
    """The application sending to the test server, on a database whose outbox is empty."""
    with app.uow() as uow:
        uow.session.execute(delete(OutboxMessage))
        uow.commit()
    smtp = SmtpConfig(kind="smtp", host=server.host, port=server.port, security="none", timeout=5,
                      from_address=SENDER)
    yield dataclasses.replace(app, config=dataclasses.replace(app.config, smtp=smtp))


def relay(app: App, at: datetime | None = None, **kwargs: Any) -> RelaySummary:
    clock: Callable[[], datetime] = (lambda: at) if at is not None else utcnow
    return relay_once(Outbox(app.uow, SETTINGS), app.transport(), settings=SETTINGS, clock=clock, **kwargs)


def outbox(app: App, queued: QueuedReply) -> OutboxMessage:
    with app.uow() as uow:
        row = uow.session.get(OutboxMessage, queued.outbox_id)
        assert row is not None
        return row


def contact(app: App, queued: QueuedReply) -> dict[str, Any]:
    return show_contact(app.uow(), queued.klantcontact_id)


def audit_actions(app: App, queued: QueuedReply) -> list[str]:
    """The audit trail of this reply (matched by Message-ID too: SQLite reuses the ids of deleted rows)."""
    with app.uow() as uow:
        events = uow.session.scalars(
            select(AuditEvent).where(AuditEvent.object_type == "outbox_message",
                                     AuditEvent.object_id == str(queued.outbox_id)).order_by(AuditEvent.id)
        )
        return [e.action for e in events if e.details.get("messageId") == queued.message_id]


def our_log(caplog: pytest.LogCaptureFixture) -> str:
    """What kcc-mail itself logged (the test server's own log names addresses, as a mail server's does)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("replies", "kcc", "store", "ingest")))


def the_task(app: App, queued: QueuedReply) -> dict[str, Any]:
    taken: list[dict[str, Any]] = contact(app, queued)["leiddeTotInterneTaken"]
    (taak,) = taken
    assert taak["gevraagdeHandeling"] == GEVRAAGDE_HANDELING == "Antwoord niet afgeleverd"
    assert taak["status"] == "te_verwerken"
    assert [(a["soortActor"], a["naam"]) for a in taak["toegewezenAanActoren"]] == [
        ("organisatorische_eenheid", "KCC")
    ]
    assert len(taak["toelichting"]) <= 1000
    return taak


def test_accepted_reply_is_sent_byte_for_byte_and_the_klantcontact_took_place(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    before = utcnow()

    summary = relay(smtp_app)

    after = utcnow()
    assert summary.line() == "sent=1 retry=0 failed=0 uncertain=0"
    (got,) = server.messages
    with smtp_app.uow() as uow:
        stored = get_blob(uow.session, outbox(smtp_app, queued).blob_sha256)
    assert got.data == stored == queued.data
    assert (got.mail_from, got.rcpt_tos) == (SENDER, (CUSTOMER,))
    row = outbox(smtp_app, queued)
    assert (row.status, row.attempts, row.lease_token) == ("sent", 1, "")
    assert row.last_smtp_reply.startswith("250")
    assert row.sent_at is not None and before <= row.sent_at <= after
    assert abs((row.sent_at - got.received_at).total_seconds()) < 1
    kc = contact(smtp_app, queued)
    assert kc["indicatieContactGelukt"] is True
    assert kc["plaatsgevondenOp"] == row.sent_at.isoformat()
    assert kc["leiddeTotInterneTaken"] == []
    assert relay(smtp_app).total == 0, "a sent reply is never sent again"
    assert len(server.messages) == 1


@pytest.mark.parametrize("answer", ["451 4.3.0 try again later", "421 4.3.2 service shutting down"])
def test_a_temporary_refusal_is_retried_after_the_backoff_and_then_sent(
    smtp_app: App, server: FaultySmtpServer, answer: str
) -> None:
    queued = queue_reply(smtp_app.uow())
    server.script(data=[answer])
    t0 = utcnow()

    assert relay(smtp_app, t0).line() == "sent=0 retry=1 failed=0 uncertain=0"
    row = outbox(smtp_app, queued)
    assert (row.status, row.attempts, row.last_smtp_reply) == ("retry", 1, answer)
    assert t0 + timedelta(seconds=50) < row.next_attempt_at < t0 + timedelta(seconds=70), "1 min ± jitter"
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is None
    assert server.messages == []

    assert relay(smtp_app, t0 + timedelta(seconds=30)).total == 0, "not due yet"
    assert relay(smtp_app, row.next_attempt_at + timedelta(seconds=1)).sent == 1

    row = outbox(smtp_app, queued)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [m.data for m in server.messages] == [queued.data]
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is True


def test_after_a_421_the_next_message_of_the_batch_goes_over_a_new_connection(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    first, second = queue_replies(smtp_app.uow(), 2)
    server.script(data=["421 4.3.2 closing connection"])

    assert relay(smtp_app).line() == "sent=1 retry=1 failed=0 uncertain=0"
    assert outbox(smtp_app, first).status == "retry"
    assert outbox(smtp_app, second).status == "sent"
    assert [m.data for m in server.messages] == [second.data]


def test_a_claim_stays_under_its_byte_budget_but_always_takes_one(smtp_app: App) -> None:
    queued = queue_replies(smtp_app.uow(), 3)
    size = len(queued[0].data)
    now = utcnow()

    assert [c.outbox_id for c in claim(smtp_app.uow(), now=now, lease_seconds=60, limit=10, max_bytes=1)] == [
        queued[0].outbox_id
    ]
    taken = claim(smtp_app.uow(), now=now, lease_seconds=60, limit=10, max_bytes=2 * size)
    assert [c.outbox_id for c in taken] == [queued[1].outbox_id, queued[2].outbox_id]
    assert [c.data for c in taken] == [queued[1].data, queued[2].data]
    assert claim(smtp_app.uow(), now=now, lease_seconds=60, limit=10) == []


def test_backoff_doubles_per_attempt_and_is_capped() -> None:
    settings = RelaySettings(jitter=0.0)
    assert [backoff(n, settings).total_seconds() for n in (1, 2, 3, 7, 8, 20)] == [60, 120, 240, 3600, 3600, 3600]


@pytest.mark.parametrize("script", [
    {"rcpt": {CUSTOMER: "550 5.1.1 no such user here"}},
    {"data": ["554 5.7.1 message refused as spam"]},
])
def test_a_permanent_refusal_fails_and_the_kcc_gets_a_task_with_the_reply(
    smtp_app: App, server: FaultySmtpServer, script: dict[str, Any]
) -> None:
    queued = queue_reply(smtp_app.uow())
    server.script(**script)

    assert relay(smtp_app).line() == "sent=0 retry=0 failed=1 uncertain=0"

    row = outbox(smtp_app, queued)
    reply = "550 5.1.1 no such user here" if "rcpt" in script else "554 5.7.1 message refused as spam"
    assert (row.status, row.last_smtp_reply, row.sent_at) == ("failed", reply, None)
    assert server.messages == []
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is False
    taak = the_task(smtp_app, queued)
    assert reply in taak["toelichting"] and CUSTOMER in taak["toelichting"]
    assert queued.message_id in taak["toelichting"]
    assert f"kcc-mail outbox resend {queued.outbox_id}" in taak["toelichting"]
    assert relay(smtp_app, utcnow() + timedelta(days=5)).total == 0, "a failed reply is never retried by itself"


def test_a_connection_dropped_after_the_end_of_data_is_uncertain_and_never_resent(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    server.script(drop_on_data=1)  # the server got the whole message, then the connection died: did it arrive?

    assert relay(smtp_app).line() == "sent=0 retry=0 failed=0 uncertain=1"
    row = outbox(smtp_app, queued)
    assert row.status == "uncertain" and "may or may not have the message" in row.last_smtp_reply
    assert f"kcc-mail outbox resend {queued.outbox_id}" in row.last_smtp_reply
    assert server.dropped == 1
    assert relay(smtp_app, utcnow() + timedelta(days=1)).total == 0, "never resent without an operator"
    assert contact(smtp_app, queued)["leiddeTotInterneTaken"] == [], "not undelivered: unknown"

    resend(smtp_app.uow(), queued.outbox_id, ANNA)
    assert relay(smtp_app).sent == 1
    assert [m.data for m in server.messages] == [queued.data]


def test_no_answer_to_the_end_of_data_within_the_wait_is_uncertain_and_sent_once(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    impatient = dataclasses.replace(smtp_app.config.smtp, data_timeout=1.0)
    app = dataclasses.replace(smtp_app, config=dataclasses.replace(smtp_app.config, smtp=impatient))
    server.hold_data()  # the server has the message and answers only after the client stopped waiting
    try:
        assert relay(app).line() == "sent=0 retry=0 failed=0 uncertain=1"
    finally:
        server.release()
    row = outbox(app, queued)
    assert row.status == "uncertain" and "no answer within 1 s" in row.last_smtp_reply
    assert relay(app, utcnow() + timedelta(days=1)).total == 0, "the customer has it: it is not sent again"
    assert server.message_ids() == [queued.message_id]

    mark_sent(app.uow(), queued.outbox_id, ANNA)
    assert contact(app, queued)["indicatieContactGelukt"] is True


def test_the_default_wait_for_the_end_of_data_is_ten_minutes_apart_from_the_command_timeout() -> None:
    smtp = SmtpConfig()
    assert (smtp.data_timeout, smtp.timeout) == (600.0, 60.0)


def test_a_connection_lost_before_the_end_of_data_is_retried_and_arrives_once(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    with running_proxy(server.port) as proxy:
        through_proxy = dataclasses.replace(smtp_app.config.smtp, port=proxy.port)
        app = dataclasses.replace(smtp_app, config=dataclasses.replace(smtp_app.config, smtp=through_proxy))
        proxy.cut_at(b"data\r\n", "upstream")  # the server never sees DATA: the message cannot have arrived
        t0 = utcnow()
        assert relay(app, t0).line() == "sent=0 retry=1 failed=0 uncertain=0"
        row = outbox(app, queued)
        assert row.status == "retry" and "before the end of the message was sent" in row.last_smtp_reply
        assert server.messages == []

        assert relay(app, row.next_attempt_at).sent == 1
    assert [m.data for m in server.messages] == [queued.data]


def test_one_recipient_accepted_and_one_refused_is_sent_with_a_task_for_the_refused_one(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow(), to=(CUSTOMER, "partner@example.nl"))
    server.script(rcpt={"partner@example.nl": "550 5.1.1 mailbox unavailable"})

    assert relay(smtp_app).line() == "sent=1 retry=0 failed=0 uncertain=0"

    (got,) = server.messages
    assert got.rcpt_tos == (CUSTOMER,)
    row = outbox(smtp_app, queued)
    assert row.status == "sent"
    assert "partner@example.nl: 550 5.1.1 mailbox unavailable" in row.last_smtp_reply
    assert f"{CUSTOMER}: 250" in row.last_smtp_reply
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is True, "the reply did reach the customer"
    toelichting = the_task(smtp_app, queued)["toelichting"]
    assert "niet aan alle geadresseerden" in toelichting
    assert "partner@example.nl: 550 5.1.1 mailbox unavailable" in toelichting


def test_retries_stop_at_the_delivery_deadline(smtp_app: App, server: FaultySmtpServer) -> None:
    t0 = utcnow()
    queued = queue_reply(smtp_app.uow(), now=t0, deliver_until=t0 + timedelta(seconds=30))
    server.script(data=["451 4.3.0 try again later", "452 4.3.1 still full"])

    assert relay(smtp_app, t0).retry == 1
    row = outbox(smtp_app, queued)
    assert row.next_attempt_at == row.deliver_until, "the last try is at the deadline, not after it"

    assert relay(smtp_app, row.deliver_until + timedelta(seconds=1)).line() == "sent=0 retry=0 failed=1 uncertain=0"
    row = outbox(smtp_app, queued)
    assert (row.status, row.attempts) == ("failed", 2)
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is False
    toelichting = the_task(smtp_app, queued)["toelichting"]
    assert "452 4.3.1 still full" in toelichting and "delivery deadline" in toelichting


def test_a_reply_queued_past_its_deadline_gets_one_try_then_fails(smtp_app: App, server: FaultySmtpServer) -> None:
    t0 = utcnow()
    late = queue_reply(smtp_app.uow(), now=t0 - timedelta(days=4), deliver_until=t0 - timedelta(days=1))
    server.script(data=["451 4.3.0 try again later"])

    assert relay(smtp_app, t0).failed == 1
    assert outbox(smtp_app, late).status == "failed"
    the_task(smtp_app, late)


def test_a_lease_that_expired_while_sending_becomes_uncertain_and_is_not_resent(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    t0 = utcnow()
    (taken,) = claim(smtp_app.uow(), now=t0, lease_seconds=60, limit=10)  # a relay that then died
    assert outbox(smtp_app, queued).status == "sending"

    assert relay(smtp_app, t0 + timedelta(seconds=30)).total == 0, "the lease still runs: hands off"
    assert relay(smtp_app, t0 + timedelta(seconds=61)).line() == "sent=0 retry=0 failed=0 uncertain=1"
    row = outbox(smtp_app, queued)
    assert row.status == "uncertain"
    assert f"kcc-mail outbox resend {queued.outbox_id}" in row.last_smtp_reply
    assert relay(smtp_app, t0 + timedelta(days=1)).total == 0, "never resent without an operator"
    assert server.messages == []
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is None

    assert finish(smtp_app.uow(), taken, Delivery.same_for_all([CUSTOMER], 451, "later"),
                  now=t0) is None, "a late temporary outcome changes nothing"
    assert outbox(smtp_app, queued).status == "uncertain"


def test_a_late_acceptance_settles_an_uncertain_reply_as_sent(smtp_app: App, server: FaultySmtpServer) -> None:
    queued = queue_reply(smtp_app.uow())
    t0 = utcnow()
    (taken,) = claim(smtp_app.uow(), now=t0, lease_seconds=60, limit=10)
    assert relay(smtp_app, t0 + timedelta(seconds=61)).uncertain == 1

    accepted = Delivery.same_for_all([CUSTOMER], 250, "OK", accepted_at=t0 + timedelta(seconds=70))
    assert finish(smtp_app.uow(), taken, accepted, now=t0) == "sent"
    assert outbox(smtp_app, queued).status == "sent"
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is True


def test_accepted_messages_are_recorded_together_but_only_where_the_lease_is_still_ours(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    first, second = queue_replies(smtp_app.uow(), 2)
    t0 = utcnow()
    claims = claim(smtp_app.uow(), now=t0, lease_seconds=60, limit=10)
    assert relay(smtp_app, t0 + timedelta(seconds=61)).uncertain == 2
    resend(smtp_app.uow(), first.outbox_id, ANNA)  # the operator took this one over meanwhile

    accepted = Delivery.same_for_all([CUSTOMER], 250, "OK", accepted_at=t0 + timedelta(seconds=62))
    statuses = finish_accepted(smtp_app.uow(), [(c, accepted) for c in claims], now=t0)

    assert statuses == [None, "sent"]
    assert (outbox(smtp_app, first).status, outbox(smtp_app, second).status) == ("pending", "sent")
    assert contact(smtp_app, first)["indicatieContactGelukt"] is None
    assert contact(smtp_app, second)["plaatsgevondenOp"] == (t0 + timedelta(seconds=62)).isoformat()


class StopAfterFirst:
    """A transport that asks the relay to stop once it has sent one message (as SIGTERM would)."""

    def __init__(self, inner: DirectoryTransport, stop: threading.Event) -> None:
        self.inner, self.stop = inner, stop

    def open(self) -> None:
        self.inner.open()

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> Delivery:
        self.stop.set()
        return self.inner.send(envelope_from, recipients, data)

    def close(self) -> None:
        self.inner.close()


def test_a_stopping_relay_finishes_the_message_in_hand_and_gives_the_rest_back(app: App, tmp_path: Path) -> None:
    with app.uow() as uow:
        uow.session.execute(delete(OutboxMessage))
        uow.commit()
    queued = queue_replies(app.uow(), 3)
    stop = threading.Event()

    summary = relay_once(Outbox(app.uow, SETTINGS), StopAfterFirst(DirectoryTransport(tmp_path / "out"), stop),
                         stop=stop)

    assert summary.line() == "sent=1 retry=0 failed=0 uncertain=0"
    assert [(outbox(app, q).status, outbox(app, q).attempts) for q in queued] == [
        ("sent", 1), ("pending", 0), ("pending", 0)
    ]
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1


def make_uncertain(app: App, queued: QueuedReply, server: SmtpTestServer) -> None:
    """A relay claims the reply, hands it to the server, and dies before it can record that."""
    t0 = utcnow()
    (taken,) = claim(app.uow(), now=t0, lease_seconds=60, limit=10)
    transport = app.transport()
    transport.open()
    assert transport.send(taken.envelope_from, taken.envelope_to, taken.data).accepted
    transport.close()
    assert relay(app, t0 + timedelta(seconds=61)).uncertain == 1


def test_resend_sends_the_same_bytes_with_the_same_message_id(smtp_app: App, server: FaultySmtpServer) -> None:
    queued = queue_reply(smtp_app.uow())
    make_uncertain(smtp_app, queued, server)

    row = resend(smtp_app.uow(), queued.outbox_id, ANNA)
    assert (row["status"], row["messageId"]) == ("pending", queued.message_id)
    assert relay(smtp_app).line() == "sent=1 retry=0 failed=0 uncertain=0"

    first, second = server.messages
    assert first.data == second.data == queued.data
    assert server.message_ids() == [queued.message_id] * 2
    assert outbox(smtp_app, queued).status == "sent"
    assert audit_actions(smtp_app, queued) == ["outbox.opnieuw_versturen"]
    with pytest.raises(OutboxError, match="only an uncertain, failed or bounced reply can be resent"):
        resend(smtp_app.uow(), queued.outbox_id, ANNA)


def test_resend_of_a_failed_reply_gives_it_a_fresh_deadline(smtp_app: App, server: FaultySmtpServer) -> None:
    t0 = utcnow()
    queued = queue_reply(smtp_app.uow(), now=t0 - timedelta(days=4), deliver_until=t0 - timedelta(days=1))
    server.script(rcpt={CUSTOMER: "550 5.1.1 no such user"})
    assert relay(smtp_app).failed == 1
    server.reset()

    resend(smtp_app.uow(), queued.outbox_id, ANNA, deliver_for=timedelta(hours=72))
    assert outbox(smtp_app, queued).deliver_until > t0 + timedelta(hours=71)
    assert relay(smtp_app).sent == 1
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is True
    assert [m.data for m in server.messages] == [queued.data]


def test_mark_sent_settles_an_uncertain_reply(smtp_app: App, server: FaultySmtpServer) -> None:
    queued = queue_reply(smtp_app.uow())
    with pytest.raises(OutboxError, match="only an uncertain reply can be marked sent"):
        mark_sent(smtp_app.uow(), queued.outbox_id, ANNA)
    make_uncertain(smtp_app, queued, server)

    row = mark_sent(smtp_app.uow(), queued.outbox_id, ANNA)

    assert row["status"] == "sent" and row["lastSmtpReply"].startswith(f"marked sent by {ANNA} at ")
    assert contact(smtp_app, queued)["indicatieContactGelukt"] is True
    assert contact(smtp_app, queued)["plaatsgevondenOp"] == row["sentAt"]
    assert audit_actions(smtp_app, queued) == ["outbox.als_verzonden_gemarkeerd"]
    assert relay(smtp_app).total == 0
    assert len(server.messages) == 1
    with pytest.raises(OutboxError, match="no outbox message with id 999999"):
        mark_sent(smtp_app.uow(), 999999, ANNA)


def test_an_unreachable_server_means_retry(smtp_app: App, server: FaultySmtpServer) -> None:
    queued = queue_reply(smtp_app.uow())
    server.stop()

    assert relay(smtp_app).line() == "sent=0 retry=1 failed=0 uncertain=0"
    row = outbox(smtp_app, queued)
    assert row.status == "retry" and "cannot be reached" in row.last_smtp_reply


def test_a_failing_follow_up_still_records_the_failure(smtp_app: App, server: FaultySmtpServer) -> None:
    queued = queue_reply(smtp_app.uow())
    server.script(rcpt={CUSTOMER: "550 5.1.1 no such user"})

    with refuse_inserts(smtp_app.engine, "interne_taak"):  # the follow-up task cannot be written
        assert relay(smtp_app).failed == 1
    row = outbox(smtp_app, queued)
    assert row.status == "failed" and "follow-up not registered" in row.last_smtp_reply
    assert MESSAGE in row.last_smtp_reply


def test_a_reply_decided_by_an_employee_is_relayed_byte_for_byte(smtp_app: App, server: FaultySmtpServer) -> None:
    mail_id = queue_mail(smtp_app, customer_mail())
    decided = reply(smtp_app.uow(), smtp_app.config, mail_id,
                       Reply(template="antwoord", variables=(("tekst", "Het papier gaat woensdag mee."),)),
                       medewerker("anna@gemeente.nl"))
    assert decided.outbox_id is not None and decided.antwoord_klantcontact_id is not None

    assert relay(smtp_app).line() == "sent=1 retry=0 failed=0 uncertain=0"

    with smtp_app.uow() as uow:
        row = uow.session.get(OutboxMessage, decided.outbox_id)
        assert row is not None
        stored = get_blob(uow.session, row.blob_sha256)
    (got,) = server.messages
    assert got.data == stored and got.rcpt_tos == tuple(row.envelope_to)
    assert server.message_ids() == [row.message_id]
    antwoord = show_contact(smtp_app.uow(), decided.antwoord_klantcontact_id)
    assert antwoord["indicatieContactGelukt"] is True
    assert row.sent_at is not None and antwoord["plaatsgevondenOp"] == row.sent_at.isoformat()


def test_the_directory_transport_writes_each_reply_as_an_eml_file(app: App, tmp_path: Path) -> None:
    with app.uow() as uow:
        uow.session.execute(delete(OutboxMessage))
        uow.commit()
    queued = queue_reply(app.uow())

    assert relay(app).line() == "sent=1 retry=0 failed=0 uncertain=0"

    (written,) = (tmp_path / "outgoing").glob("*.eml")
    assert written.read_bytes() == queued.data
    assert written.name == eml_name(queued.data, utcnow())
    assert written.name.startswith("20261123T090000Z-antwoord-") and "@gemeente.example" in written.name
    row = outbox(app, queued)
    assert row.status == "sent" and row.last_smtp_reply == f"250 written to {written}"
    assert contact(app, queued)["indicatieContactGelukt"] is True

    again = DirectoryTransport(tmp_path / "outgoing")
    again.open()
    assert again.send(SENDER, [CUSTOMER], queued.data).accepted
    assert list((tmp_path / "outgoing").glob("*")) == [written], "the same Message-ID overwrites, atomically"


def test_the_smtp_transport_reconnects_once_when_the_server_dropped_the_idle_connection(
    server: FaultySmtpServer,
) -> None:
    transport = SmtpTransport(smtp_settings(SmtpConfig(kind="smtp", host=server.host, port=server.port,
                                                       security="none", timeout=5)))
    transport.open()
    assert transport.send(SENDER, [CUSTOMER], b"Subject: een\r\n\r\n1\r\n").accepted
    server.drop_connections()

    delivery = transport.send(SENDER, [CUSTOMER], b"Subject: twee\r\n\r\n2\r\n")

    transport.close()
    assert delivery.accepted and delivery.accepted_at is not None
    assert [m.data for m in server.messages] == [b"Subject: een\r\n\r\n1\r\n", b"Subject: twee\r\n\r\n2\r\n"]


@pytest.fixture
def secure_server(tmp_path: Path) -> Iterator[SmtpTestServer]:
    smtp = SmtpTestServer(auth=("kcc", "geheim"), starttls=True, cert_dir=tmp_path)
    smtp.start()
    yield smtp
    smtp.stop()


def test_starttls_with_a_verified_certificate_and_a_password_from_the_environment(
    secure_server: SmtpTestServer,
) -> None:
    config = SmtpConfig(kind="smtp", host="localhost", port=secure_server.port, security="starttls",
                        username="kcc", password_env="KCC_TEST_SMTP_PASSWORD", timeout=5)
    transport = SmtpTransport(smtp_settings(config, {"KCC_TEST_SMTP_PASSWORD": "geheim"}),
                              ssl_context=secure_server.ssl_context())
    transport.open()
    assert transport.send(SENDER, [CUSTOMER], b"Subject: veilig\r\n\r\nok\r\n").accepted
    transport.close()

    unverified = SmtpTransport(smtp_settings(config, {"KCC_TEST_SMTP_PASSWORD": "geheim"}))  # system CAs only
    with pytest.raises(TransportError, match="cannot be reached"):
        unverified.open()
    assert len(secure_server.messages) == 1


def test_xoauth2_with_a_token_from_the_environment() -> None:
    with running_faulty_server(xoauth2=("kcc@gemeente.example", "t0k3n")) as oauth_server:
        config = SmtpConfig(kind="smtp", host=oauth_server.host, port=oauth_server.port, security="none",
                            auth="xoauth2", username="kcc@gemeente.example", token_env="KCC_TEST_TOKEN", timeout=5)
        transport = SmtpTransport(smtp_settings(config, {"KCC_TEST_TOKEN": "t0k3n"}))
        transport.open()
        assert transport.send(SENDER, [CUSTOMER], b"Subject: oauth\r\n\r\nok\r\n").accepted
        transport.close()

        expired = SmtpTransport(smtp_settings(config, {"KCC_TEST_TOKEN": "verlopen"}))
        with pytest.raises(TransportError, match=r"refused the login of kcc@gemeente.example \(535\)"):
            expired.open()
        assert len(oauth_server.messages) == 1


def test_a_copy_of_each_sent_reply_goes_to_the_sent_folder(
    smtp_app: App, server: FaultySmtpServer, imap_user: ImapUser, caplog: pytest.LogCaptureFixture
) -> None:
    imap_user.server.create_folder(imap_user.name, "Sent")
    config = dataclasses.replace(
        smtp_app.config, mailboxes=(imap_user.mailbox_config(name="info"),),
        replies=RepliesConfig(sent_folder="Sent"),
    )
    queued = queue_reply(smtp_app.uow())

    assert relay_once_for_app(dataclasses.replace(smtp_app, config=config)).sent == 1

    client = imap_user.client()
    client.select_folder("Sent", readonly=True)
    (uid,) = client.search(["ALL"])
    fetched = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])[uid]
    client.logout()
    assert fetched[b"BODY[]"] == queued.data
    assert b"\\Seen" in fetched[b"FLAGS"]

    missing = dataclasses.replace(config, replies=RepliesConfig(sent_folder="Bestaat niet"))
    other = queue_reply(smtp_app.uow())
    with caplog.at_level(logging.WARNING):
        assert relay_once_for_app(dataclasses.replace(smtp_app, config=missing)).sent == 1
    assert outbox(smtp_app, other).status == "sent", "a failed copy never fails the send"
    assert f"outbox {other.outbox_id}: sent, but the copy to folder 'Bestaat niet'" in our_log(caplog)
    assert CUSTOMER not in our_log(caplog)


def test_logs_carry_ids_and_codes_never_addresses(
    smtp_app: App, server: FaultySmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue_replies(smtp_app.uow(), 3)
    server.script(rcpt={CUSTOMER: "550 5.1.1 <burger@example.nl>: no such user"}, data=[])
    with caplog.at_level(logging.INFO):
        assert relay(smtp_app).failed == 3
    ours = our_log(caplog)
    assert "outbox" in ours and "550" in ours
    assert CUSTOMER not in ours and "Wittewiek" not in ours


def test_smtplib_sees_our_bytes_unchanged_with_a_leading_dot(server: FaultySmtpServer) -> None:
    """Dot-stuffing is the transport's business: the server receives exactly the stored bytes."""
    data = b"Subject: punt\r\n\r\n.begint met een punt\r\n..twee punten\r\n"
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        assert send_message(client, SENDER, [CUSTOMER], data).accepted
    assert [m.data for m in server.messages] == [data]


def test_a_resent_reply_that_fails_again_updates_the_kccs_task_instead_of_adding_one(
    smtp_app: App, server: FaultySmtpServer
) -> None:
    queued = queue_reply(smtp_app.uow())
    server.script(data=["554 5.7.1 refused as spam"])
    assert relay(smtp_app).failed == 1
    resend(smtp_app.uow(), queued.outbox_id, ANNA)
    server.script(data=["550 5.1.1 mailbox gone"])
    assert relay(smtp_app).failed == 1
    taak = the_task(smtp_app, queued)  # exactly one
    assert "550 5.1.1 mailbox gone" in taak["toelichting"]
