"""The werkvoorraad as the KCC employee narrows it down, on SQLite (FTS5) and PostgreSQL (text search).

Each test stores its mails in a mailbox of its own and filters on it, so the module's shared database never
mixes them.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from support.mails import customer_mail, queue_mail

import kcc.usecases.werkvoorraad as werkvoorraad_module
from kcc.bootstrap import App
from kcc.records.actor import medewerker
from kcc.usecases.review import NoFollowUp, register
from kcc.usecases.werkvoorraad import BadFilter, WerkvoorraadFilter, werkvoorraad

_boxes = itertools.count(1)
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
def box() -> str:
    return f"werk{next(_boxes)}"


def subjects(app: App, where: WerkvoorraadFilter, **kwargs: int) -> list[str]:
    return [m["subject"] for m in werkvoorraad(app.uow(), where, **kwargs).mails]  # type: ignore[arg-type]


def test_search_finds_sender_subject_and_body_words_and_nothing_else(app: App, box: str) -> None:
    queue_mail(app, customer_mail("Afvalkalender", "Wanneer komt de papiercontainer?",
                                  sender="Karel de Boer <karel@example.nl>"), box, received_at=T0)
    queue_mail(app, customer_mail("Parkeervergunning", "Mijn vergunning verloopt morgen.",
                                  sender="Fatima El Amrani <fatima@voorbeeld.nl>"), box,
               received_at=T0 + timedelta(minutes=1))

    def found(zoek: str) -> list[str]:
        return subjects(app, WerkvoorraadFilter(mailbox=box, zoek=zoek))

    assert found("afvalkalender") == ["Afvalkalender"]
    assert found("papiercontainer") == ["Afvalkalender"]
    assert found("vergunning") == ["Parkeervergunning"]
    assert found("fatima@voorbeeld.nl") == ["Parkeervergunning"]
    assert found("voorbeeld.nl") == ["Parkeervergunning"], "a domain finds its senders"
    assert found("Karel Boer") == ["Afvalkalender"], "every word must match"
    assert found("karel vergunning") == []
    assert found("bestemmingsplan") == []
    assert found("") == ["Afvalkalender", "Parkeervergunning"]


@pytest.mark.parametrize("typed", ['"', "papier* OR 1=1 --", "NEAR(a b)", "col:umn", "'; DROP TABLE x; --", "^-+"])
def test_what_someone_types_is_words_never_query_syntax(app: App, box: str, typed: str) -> None:
    queue_mail(app, customer_mail("Afvalkalender", "Wanneer komt de papiercontainer?"), box, received_at=T0)
    result = werkvoorraad(app.uow(), WerkvoorraadFilter(mailbox=box, zoek=typed))
    assert result.mails.total in (0, 1)


def test_a_referentienummer_finds_the_mail_registered_under_it(app: App, box: str) -> None:
    mail_id = queue_mail(app, customer_mail("Kapotte lantaarnpaal", "De lamp brandt niet."), box, received_at=T0)
    registered = register(app.uow(), app.config, mail_id, NoFollowUp(), medewerker("anna@gemeente.nl"))
    where = WerkvoorraadFilter(state="geregistreerd", mailbox=box, zoek=registered.referentienummer)
    assert subjects(app, where) == ["Kapotte lantaarnpaal"]
    assert subjects(app, WerkvoorraadFilter(mailbox=box, zoek=registered.referentienummer)) == [], \
        "a registered mail is not waiting"


def test_flags_and_follow_ups_narrow_the_list(app: App, box: str) -> None:
    first = customer_mail("Vraag", "Eerste vraag.", message_id="<eerste-werk@example.nl>")
    first_id = queue_mail(app, first, box, received_at=T0)
    register(app.uow(), app.config, first_id, NoFollowUp(), medewerker("anna@gemeente.nl"))
    queue_mail(app, customer_mail("Re: Vraag", "Nog een vraag.",
                                  extra_headers="In-Reply-To: <eerste-werk@example.nl>\r\n"), box,
               received_at=T0 + timedelta(minutes=1))
    queue_mail(app, customer_mail("Afwezig", "Ik ben er niet.", extra_headers="Auto-Submitted: auto-replied\r\n"),
               box, received_at=T0 + timedelta(minutes=2))
    queue_mail(app, customer_mail("Gewoon", "Een vraag."), box, received_at=T0 + timedelta(minutes=3))

    assert subjects(app, WerkvoorraadFilter(mailbox=box, flag="auto_reply")) == ["Afwezig"]
    assert subjects(app, WerkvoorraadFilter(mailbox=box, flag="vervolg")) == ["Re: Vraag"]
    assert subjects(app, WerkvoorraadFilter(mailbox=box)) == ["Re: Vraag", "Afwezig", "Gewoon"]
    counts = werkvoorraad(app.uow(), WerkvoorraadFilter(mailbox=box)).counts
    assert (counts["te_beoordelen"], counts["quarantaine"]) == (3, 0)
    assert (counts["geregistreerd"], counts["afgewezen"]) == (None, None), "the archive is not counted"
    archive = werkvoorraad(app.uow(), WerkvoorraadFilter(state="geregistreerd", mailbox=box)).mails
    assert ([m["subject"] for m in archive], archive.total) == (["Vraag"], 1)


def test_dates_are_the_kcc_s_days_not_utc(app: App, box: str) -> None:
    amsterdam = ZoneInfo("Europe/Amsterdam")
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 00:30 on 1 December in Amsterdam
    queue_mail(app, customer_mail("Na middernacht"), box, received_at=late)
    queue_mail(app, customer_mail("Avond"), box, received_at=late - timedelta(hours=2))  # 22:30 on 30 November

    def on(day: date) -> list[str]:
        return subjects(app, WerkvoorraadFilter(mailbox=box, van=day, tot=day, zone=amsterdam))

    assert on(date(2026, 12, 1)) == ["Na middernacht"]
    assert on(date(2026, 11, 30)) == ["Avond"]


def test_pages_hold_the_oldest_first_and_say_how_many_there_are(app: App, box: str) -> None:
    for minute, subject in enumerate(["Een", "Twee", "Drie"]):
        queue_mail(app, customer_mail(subject), box, received_at=T0 + timedelta(minutes=minute))
    where = WerkvoorraadFilter(mailbox=box)
    first = werkvoorraad(app.uow(), where, page=1, page_size=2).mails
    second = werkvoorraad(app.uow(), where, page=2, page_size=2).mails
    assert ([m["subject"] for m in first], first.total) == (["Een", "Twee"], 3)
    assert ([m["subject"] for m in second], second.total) == (["Drie"], 3)


@pytest.mark.parametrize(("where", "says"), [
    (WerkvoorraadFilter(state="weg"), "unknown state 'weg'"),
    (WerkvoorraadFilter(flag="belangrijk"), "unknown flag 'belangrijk'"),
    (WerkvoorraadFilter(van=date(2026, 12, 2), tot=date(2026, 12, 1)), "the start date is after the end date"),
])
def test_a_filter_that_names_nothing_is_refused_with_what_to_do(app: App, where: WerkvoorraadFilter,
                                                                 says: str) -> None:
    with pytest.raises(BadFilter, match=says):
        werkvoorraad(app.uow(), where)


def test_a_search_that_matches_very_many_says_more_than_and_still_pages(
    app: App, box: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(werkvoorraad_module, "SEARCH_COUNT_LIMIT", 2)
    for minute in range(4):
        queue_mail(app, customer_mail(f"Container {minute}"), box, received_at=T0 + timedelta(minutes=minute))
    found = werkvoorraad(app.uow(), WerkvoorraadFilter(mailbox=box, zoek="container"), page_size=3)
    assert found.more_than and found.mails.total == 3
    assert [m["subject"] for m in found.mails] == ["Container 0", "Container 1", "Container 2"]
    exact = werkvoorraad(app.uow(), WerkvoorraadFilter(mailbox=box))
    assert not exact.more_than and exact.mails.total == 4, "the list without a search is counted exactly"
