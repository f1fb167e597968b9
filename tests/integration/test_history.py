"""The history beside a mail: earlier mails of the same sender (however the address is capitalised) and of the
same conversation (a mail that answers our reply), each with its klantcontact and our answer; nothing else."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from support.mails import customer_mail, queue_mail

from kcc.bootstrap import App
from kcc.records.actor import medewerker
from kcc.usecases.history import history
from kcc.usecases.reply import Reply, reply
from store.outbox import OutboxMessage

_n = itertools.count(1)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_the_history_shows_the_same_sender_and_the_same_conversation_and_nothing_else(app: App) -> None:
    n = next(_n)
    karel = f"karel{n}@example.nl"
    first = queue_mail(app, customer_mail(f"Afval {n}", sender=f"Karel <{karel}>"), received_at=T0)
    answered = reply(app.uow(), app.config, first, Reply(variables=(("tekst", "Elke woensdag."),)),
                     medewerker("anna@gemeente.nl"))
    with app.uow() as uow:
        ours = uow.session.scalars(select(OutboxMessage.message_id)
                                   .where(OutboxMessage.klantcontact_id.is_not(None))
                                   .order_by(OutboxMessage.id.desc())).first()
    assert ours
    again = queue_mail(app, customer_mail(f"Nog een vraag {n}", sender=f"KAREL <{karel.upper()}>"),
                       received_at=T0 + timedelta(days=1))
    partner = queue_mail(app, customer_mail(f"Re: Afval {n}", sender=f"Partner <partner{n}@example.nl>",
                                            extra_headers=f"In-Reply-To: {ours}\r\n"),
                         received_at=T0 + timedelta(days=2))
    queue_mail(app, customer_mail(f"Ander onderwerp {n}", sender=f"Iemand <iemand{n}@example.nl>"),
               received_at=T0 + timedelta(days=3))

    by_sender = history(app.uow(), again)
    assert [(h["subject"], h["waarom"]) for h in by_sender] == [(f"Afval {n}", "zelfde afzender")]
    assert by_sender[0]["klantcontact"]["referentienummer"] == answered.referentienummer
    assert by_sender[0]["antwoord"]["onderwerp"] == f"Re: Afval {n}"

    in_thread = history(app.uow(), partner)
    assert [(h["subject"], h["waarom"]) for h in in_thread] == [(f"Afval {n}", "zelfde gesprek")]
    assert [h["subject"] for h in history(app.uow(), first)] == [f"Re: Afval {n}", f"Nog een vraag {n}"]
