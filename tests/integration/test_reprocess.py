"""Reprocessing stored mails on SQLite and PostgreSQL: the stored bytes parsed again, one transaction per mail."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from support.mails import RECEIVED, customer_mail, with_attachment
from support.mails import queue_mail as store

from ingest.analysis import AnalyseSettings, ClassifyOptions, default_parser, fill_parsed_fields
from ingest.classify import classify
from ingest.parse import ParsedMail, parse_mail
from ingest.reevaluate import DERIVED_FIELDS, derived_of
from kcc.bootstrap import App
from kcc.records.actor import medewerker
from kcc.usecases.contacts import show_contact
from kcc.usecases.reprocess import Outcome, ReprocessRefused, ReprocessSummary, Selection, reprocess
from kcc.usecases.review import NoFollowUp, dismiss, register
from store.audit import AuditEvent
from store.blobs import get_blob
from store.mail import InboundMail

ANNA = medewerker("anna@gemeente.nl")
BUG_TRIGGER = b"X-Trigger-Parser-Bug: ja\r\n"


# ------------------------------------------------------------------ parsers (module level: the pool pickles them)


def buggy_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    """The parser with a bug for some mails: a KeyError from deep inside, as a real bug would raise."""
    if BUG_TRIGGER in raw:
        raise KeyError("boundary")
    return default_parser(raw, received_at)


def sloppy_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    """An older parser that lost attachments and shouted the subject."""
    parsed = parse_mail(raw, received_at=received_at)
    return replace(parsed, subject=parsed.subject.upper(), attachments=())


def broken_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    """A parser regression: nothing parses any more."""
    raise ValueError("regression")


# ---------------------------------------------------------------------------------------------------- helpers


def new_mailbox() -> str:
    return f"mb-{uuid.uuid4().hex[:8]}"


def settings(app: App, parser: Any = default_parser, **options: Any) -> AnalyseSettings:
    return AnalyseSettings(app.config.storage.max_mail_bytes, ClassifyOptions(**options), parser)


def run(app: App, selection: Selection, parser: Any = default_parser, **kwargs: Any) -> ReprocessSummary:
    return reprocess(app.uow, selection, settings(app, parser), **kwargs)


def load(app: App, mail_id: int) -> InboundMail:
    with app.uow() as uow:
        mail = uow.session.get(InboundMail, mail_id)
        assert mail is not None
        mail.attachments  # noqa: B018 - loaded while the session is open
        return mail


def counts(summary: ReprocessSummary) -> str:
    return summary.line()


def audit_actions(app: App, mail_id: int) -> list[str]:
    with app.uow() as uow:
        return list(uow.session.scalars(
            select(AuditEvent.action).where(AuditEvent.object_id == str(mail_id)).order_by(AuditEvent.id)
        ))


# ------------------------------------------------------------------------------------------------------ tests


def test_fill_parsed_fields_sets_exactly_the_fields_reprocessing_compares() -> None:
    parsed = parse_mail(with_attachment(), received_at=RECEIVED)
    mail = InboundMail()
    fill_parsed_fields(mail, parsed, classify(parsed))
    assert {name for name in vars(mail) if not name.startswith("_")} == set(DERIVED_FIELDS)


def test_a_mail_quarantined_by_a_parser_bug_is_released_once_the_parser_works_and_can_be_registered(app: App) -> None:
    mailbox = new_mailbox()
    raw = with_attachment().replace(b"Subject:", BUG_TRIGGER + b"Subject:", 1)
    mail_id = store(app, raw, mailbox, parser=buggy_parser)
    stored = load(app, mail_id)
    assert (stored.state, stored.reason) == ("quarantaine", "internal_error")
    assert "KeyError" in stored.error and stored.subject == "Kapotte container"  # the headers, for the reviewer

    still = run(app, Selection(mailbox=mailbox), buggy_parser)
    assert counts(still) == "selected=1 reparsed=1 released=0 still_quarantined=1 unchanged=1 errors=0"

    fixed = run(app, Selection(mailbox=mailbox))
    assert counts(fixed) == "selected=1 reparsed=1 released=1 still_quarantined=0 unchanged=0 errors=0"
    released = load(app, mail_id)
    assert (released.state, released.reason, released.error) == ("te_beoordelen", None, "")
    assert released.text_body == "Zie de foto." and released.reply_to == ["karel.prive@example.nl"]
    ((foto),) = released.attachments
    assert (foto.bestandsnaam, foto.formaat, foto.position) == ("container.jpg", "image/jpeg", 0)
    with app.uow() as uow:
        assert get_blob(uow.session, foto.blob_sha256).startswith(b"\xff\xd8\xff")
    assert audit_actions(app, mail_id) == ["mail.vrijgegeven"]

    result = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    contact = show_contact(app.uow(), result.klantcontact_id)
    assert contact["onderwerp"] == "Kapotte container"
    assert [b["informatieobject"]["bestandsnaam"] for b in contact["omvatteBijlagen"]] == [
        f"mail-{mail_id}.eml", "container.jpg",
    ]

    again = run(app, Selection(states=None, mailbox=mailbox))
    assert (again.selected, again.decided_left_out) == (0, 1)


def test_the_process_pool_gives_the_same_result_as_one_process(app: App) -> None:
    one, pooled = new_mailbox(), new_mailbox()
    raws = [customer_mail(f"Vraag {n}", extra_headers=BUG_TRIGGER.decode()) for n in range(40)]
    raws += [with_attachment(f"Foto {n}", f"foto-{n}.jpg") for n in range(20)]
    for raw in raws:
        store(app, raw, one, parser=buggy_parser)
        store(app, raw, pooled, parser=buggy_parser)

    # The injected parser travels to the workers too: still buggy there, so nothing changes yet.
    still = run(app, Selection(mailbox=pooled), buggy_parser, workers=2, pool_threshold=0)
    assert counts(still) == "selected=40 reparsed=40 released=0 still_quarantined=40 unchanged=40 errors=0"

    single = run(app, Selection(mailbox=one), workers=1)
    parallel = run(app, Selection(mailbox=pooled), workers=2, pool_threshold=0)
    assert counts(single) == counts(parallel) == (
        "selected=40 reparsed=40 released=40 still_quarantined=0 unchanged=0 errors=0"
    )
    assert snapshot(app, one) == snapshot(app, pooled)
    assert counts(run(app, Selection(states=None, mailbox=pooled), workers=2, pool_threshold=0)) == (
        "selected=60 reparsed=60 released=0 still_quarantined=0 unchanged=60 errors=0"
    )


def snapshot(app: App, mailbox: str) -> dict[str, Any]:
    """What reprocessing decides, per mail (by its bytes), for comparing two mailboxes holding the same mails."""
    with app.uow() as uow:
        mails = uow.session.scalars(select(InboundMail).where(InboundMail.mailbox == mailbox)).all()
        return {mail.raw_sha256: derived_of(mail) for mail in mails}


def test_a_mail_under_review_gets_fresh_fields_attachments_and_flags(app: App) -> None:
    mailbox = new_mailbox()
    mail_id = store(app, with_attachment(), mailbox, parser=sloppy_parser)
    before = load(app, mail_id)
    assert (before.subject, before.attachments, before.flags) == ("KAPOTTE CONTAINER", [], [])

    summary = reprocess(
        app.uow, Selection(states=("te_beoordelen",), mailbox=mailbox),
        settings(app, own_addresses=frozenset({"karel@example.nl"})),
    )
    assert counts(summary) == "selected=1 reparsed=1 released=0 still_quarantined=0 unchanged=0 errors=0"
    after = load(app, mail_id)
    assert after.state == "te_beoordelen" and after.subject == "Kapotte container"
    assert [a.bestandsnaam for a in after.attachments] == ["container.jpg"]
    assert after.flags == ["own_loop"]
    assert audit_actions(app, mail_id) == []  # a refresh is not a decision

    again = reprocess(
        app.uow, Selection(states=("te_beoordelen",), mailbox=mailbox),
        settings(app, own_addresses=frozenset({"karel@example.nl"})),
    )
    assert counts(again) == "selected=1 reparsed=1 released=0 still_quarantined=0 unchanged=1 errors=0"


def test_a_mail_under_review_that_no_longer_parses_keeps_its_state_and_fields(app: App) -> None:
    mailbox = new_mailbox()
    mail_id = store(app, customer_mail("Paspoort"), mailbox)
    before = derived_of(load(app, mail_id))

    summary = run(app, Selection(states=("te_beoordelen",), mailbox=mailbox), broken_parser)
    assert counts(summary) == "selected=1 reparsed=0 released=0 still_quarantined=0 unchanged=0 errors=1"
    ((failed_id, error),) = summary.failures
    assert failed_id == mail_id
    assert "no longer parses" in error and "keeps its state" in error and "quarantine export" in error
    assert derived_of(load(app, mail_id)) == before


def test_registered_and_dismissed_mails_are_records_refused_unless_included(app: App) -> None:
    mailbox = new_mailbox()
    registered_id = store(app, with_attachment(), mailbox, parser=sloppy_parser)
    dismissed_id = store(app, customer_mail("Nieuwsbrief"), mailbox)
    result = register(app.uow(), app.config, registered_id, NoFollowUp(), ANNA)
    dismiss(app.uow(), dismissed_id, "spam", ANNA)
    contact_before = show_contact(app.uow(), result.klantcontact_id)

    with pytest.raises(ReprocessRefused, match="--include-registered"):
        run(app, Selection(states=None, ids=(registered_id,)))
    with pytest.raises(ReprocessRefused, match="--include-registered"):
        run(app, Selection(states=("afgewezen",), mailbox=mailbox))
    assert run(app, Selection(states=None, mailbox=mailbox)).decided_left_out == 2

    summary = run(app, Selection(states=None, mailbox=mailbox, include_decided=True))
    assert counts(summary) == "selected=2 reparsed=2 released=0 still_quarantined=0 unchanged=1 errors=0"
    mail = load(app, registered_id)
    assert (mail.state, mail.klantcontact_id) == ("geregistreerd", result.klantcontact_id)
    assert mail.subject == "Kapotte container" and [a.bestandsnaam for a in mail.attachments] == ["container.jpg"]
    assert show_contact(app.uow(), result.klantcontact_id) == contact_before  # the record is untouched
    assert audit_actions(app, registered_id)[-1] == "mail.herverwerkt"
    assert load(app, dismissed_id).state == "afgewezen"


def test_a_dry_run_counts_what_a_real_run_does_and_changes_nothing(app: App) -> None:
    mailbox = new_mailbox()
    ids = [store(app, customer_mail(f"Vraag {n}", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)
           for n in range(3)]
    before = snapshot(app, mailbox)

    dry = run(app, Selection(mailbox=mailbox), dry_run=True)
    assert counts(dry) == "selected=3 reparsed=3 released=3 still_quarantined=0 unchanged=0 errors=0"
    assert [(o.mail_id, o.before, o.after) for o in dry.changes] == [(i, "quarantaine", "te_beoordelen") for i in ids]
    assert "state" in dry.changes[0].changes and "text_body" in dry.changes[0].changes
    assert snapshot(app, mailbox) == before
    assert all(audit_actions(app, i) == [] for i in ids)

    assert counts(run(app, Selection(mailbox=mailbox))) == counts(dry)


def test_the_selection_by_reason_time_mailbox_and_id(app: App) -> None:
    mailbox, other = new_mailbox(), new_mailbox()
    day = timedelta(days=1)
    bug = store(app, customer_mail("a", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)
    big = store(app, customer_mail("b"), mailbox, max_mail_bytes=100, received_at=RECEIVED + day)
    late = store(app, customer_mail("c"), mailbox, max_mail_bytes=100, received_at=RECEIVED + 3 * day)
    store(app, customer_mail("d"), other, max_mail_bytes=100)
    review = store(app, customer_mail("e"), mailbox)

    def selected(**filters: Any) -> int:
        return run(app, Selection(mailbox=mailbox, **filters), dry_run=True).selected

    assert selected() == 3
    assert selected(reason="too_large") == 2
    assert selected(reason="internal_error") == 1
    assert selected(since=RECEIVED + day) == 2
    assert selected(until=RECEIVED + day) == 1
    assert selected(since=RECEIVED + day, until=RECEIVED + 2 * day) == 1
    assert selected(states=None, ids=(review, late)) == 2
    assert selected(ids=(big,)) == 1
    assert selected(states=None) == 4
    assert selected(states=("te_beoordelen",)) == 1

    with pytest.raises(ReprocessRefused, match="no stored mail with id 999999999"):
        run(app, Selection(ids=(bug, 999999999)))
    with pytest.raises(ReprocessRefused, match="--since must be before --until"):
        run(app, Selection(since=RECEIVED, until=RECEIVED - day))


def test_a_raised_size_limit_releases_the_mails_that_were_too_large(app: App) -> None:
    mailbox = new_mailbox()
    mail_id = store(app, customer_mail("Groot"), mailbox, max_mail_bytes=100)
    assert load(app, mail_id).reason == "too_large"
    summary = run(app, Selection(mailbox=mailbox, reason="too_large"))
    assert summary.released == 1
    with app.uow() as uow:
        assert uow.session.scalar(
            select(func.count()).select_from(InboundMail).where(InboundMail.mailbox == mailbox,
                                                                InboundMail.state == "quarantaine")
        ) == 0
    assert load(app, mail_id).sent_at == datetime(2026, 11, 23, 8, 15, tzinfo=UTC)


def test_a_mail_decided_or_released_while_reprocessing_is_decided_anew_not_overwritten(app: App) -> None:
    from kcc.usecases.quarantine import dismiss_quarantined, release

    mailbox = new_mailbox()
    first = store(app, customer_mail("Een", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)
    dismissed = store(app, customer_mail("Twee", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)
    released = store(app, customer_mail("Drie", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)

    def meanwhile(outcome: Outcome, summary: ReprocessSummary) -> None:
        """All three were read (one chunk) before the first is written: an employee acts on the others now."""
        if outcome.mail_id == first:
            dismiss_quarantined(app.uow(), dismissed, "spam", ANNA)
            release(app.uow(), released, ANNA)

    summary = reprocess(app.uow, Selection(mailbox=mailbox), settings(app), progress=meanwhile)
    assert counts(summary) == "selected=3 reparsed=3 released=1 still_quarantined=0 unchanged=1 errors=0"
    assert load(app, dismissed).state == "afgewezen"  # the decision stands
    refreshed = load(app, released)
    assert refreshed.state == "te_beoordelen" and "Wanneer wordt het papier opgehaald?" in refreshed.text_body
    assert audit_actions(app, released) == ["mail.vrijgegeven"]  # the employee's, not a second one
    assert load(app, first).state == "te_beoordelen"


def test_a_mail_released_as_it_was_is_not_reported_when_it_still_does_not_parse(app: App) -> None:
    from kcc.usecases.quarantine import release

    mailbox = new_mailbox()
    mail_id = store(app, customer_mail("Kapot", extra_headers=BUG_TRIGGER.decode()), mailbox, parser=buggy_parser)
    release(app.uow(), mail_id, ANNA)
    summary = run(app, Selection(states=None, mailbox=mailbox), buggy_parser)
    assert counts(summary) == "selected=1 reparsed=1 released=0 still_quarantined=0 unchanged=1 errors=0"
