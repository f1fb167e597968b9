"""The quarantine use cases and the AVG purge, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from support.mails import RECEIVED, customer_mail, with_attachment
from support.mails import queue_mail as store

from ingest.parse import ParsedMail
from kcc.bootstrap import App
from kcc.records.actor import medewerker
from kcc.usecases.contacts import show_contact
from kcc.usecases.mail_files import raw_mail
from kcc.usecases.purge import PurgeError, blob_references, purge
from kcc.usecases.quarantine import (
    QuarantineError,
    dismiss_quarantined,
    list_quarantine,
    release,
    show_quarantined,
)
from kcc.usecases.review import DecisionError, MailNotFound, NoFollowUp, dismiss, register
from store.audit import AuditEvent
from store.mail import Blob, InboundAttachment, InboundMail

ANNA = medewerker("anna@gemeente.nl")
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
NOW = datetime(2021, 1, 1, tzinfo=UTC)  # purges here look back from 2021, so other tests' mails (2026) are safe


def failing_parser(raw: bytes, received_at: datetime) -> ParsedMail:
    raise KeyError("boundary")


def new_mailbox() -> str:
    return f"mb-{uuid.uuid4().hex[:8]}"


def with_unique_attachment(tag: str) -> bytes:
    payload = base64.b64encode(f"alleen in mail {tag} {uuid.uuid4()}".encode()).decode()
    return (
        f"From: karel@example.nl\r\nTo: info@gemeente.nl\r\nSubject: Bijlage {tag}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=grens\r\n\r\n"
        "--grens\r\nContent-Type: text/plain\r\n\r\nZie bijlage.\r\n"
        "--grens\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment; filename=b-{tag}.bin\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload}\r\n--grens--\r\n"
    ).encode()


def mail_row(app: App, mail_id: int) -> InboundMail | None:
    with app.uow() as uow:
        mail = uow.session.get(InboundMail, mail_id)
        if mail is not None:
            mail.attachments  # noqa: B018 - loaded while the session is open
        return mail


def digests(app: App, mail_id: int) -> tuple[str, list[str]]:
    mail = mail_row(app, mail_id)
    assert mail is not None
    return mail.raw_sha256, [a.blob_sha256 for a in mail.attachments]


def blob_exists(app: App, sha: str) -> bool:
    with app.uow() as uow:
        return uow.session.get(Blob, sha) is not None


def events(app: App, action: str) -> list[AuditEvent]:
    with app.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


# ------------------------------------------------------------------------------------------------- quarantine


def test_list_counts_per_reason_first_then_the_mails_oldest_first(app: App) -> None:
    mailbox = new_mailbox()
    bug_1 = store(app, customer_mail("Een"), mailbox, parser=failing_parser, received_at=RECEIVED + timedelta(1))
    bug_2 = store(app, customer_mail("Twee"), mailbox, parser=failing_parser)
    large = store(app, customer_mail("Groot"), mailbox, max_mail_bytes=100)
    junk = store(app, b"geen mail, geen kop\r\n", mailbox)
    store(app, customer_mail("Gewoon"), mailbox)

    found = list_quarantine(app.uow(), mailbox=mailbox)
    assert found["counts"] == [
        {"reason": "internal_error", "mails": 2}, {"reason": "too_large", "mails": 1},
        {"reason": "unparseable", "mails": 1},
    ]
    assert found["total"] == 4
    assert [m["id"] for m in found["mails"]] == [bug_2, large, junk, bug_1]
    assert found["mails"][0]["subject"] == "Twee" and "KeyError" in found["mails"][0]["error"]

    only = list_quarantine(app.uow(), mailbox=mailbox, reason="too_large")
    assert (only["total"], [m["id"] for m in only["mails"]]) == (1, [large])
    with pytest.raises(QuarantineError, match="unknown reason 'kapot'; choose one of unparseable"):
        list_quarantine(app.uow(), reason="kapot")


def test_show_gives_the_error_and_raw_headers_safe_for_a_terminal(app: App) -> None:
    raw = (
        b"From: karel@example.nl\r\nSubject: =?utf-8?q?caf=C3=A9?= \x1b[31mrood\r\nX-Latin1: caf\xe9\r\n\r\n"
        b"Geheime inhoud die niet in de kop hoort.\r\n"
    )
    mail_id = store(app, raw, new_mailbox(), parser=failing_parser)
    shown = show_quarantined(app.uow(), mail_id)
    assert (shown["state"], shown["reason"]) == ("quarantaine", "internal_error")
    assert "KeyError: 'boundary'" in shown["error"]
    assert shown["rawHeaders"] == (
        "From: karel@example.nl\nSubject: =?utf-8?q?caf=C3=A9?= \\x1b[31mrood\nX-Latin1: caf\\xe9"
    )
    with pytest.raises(MailNotFound, match="no stored mail with id 999999999; `kcc-mail quarantine list`"):
        show_quarantined(app.uow(), 999999999)


def test_export_gives_the_mail_byte_for_byte(app: App) -> None:
    raw = b"From: karel@example.nl\nSubject: kaal\n\nNUL \x00 en \xff bytes, geen CRLF\n"
    mail_id = store(app, raw, new_mailbox(), parser=failing_parser)
    assert raw_mail(app.uow(), mail_id) == raw


def test_a_released_mail_is_reviewed_as_it_is_and_registered_with_the_raw_mail_as_only_bijlage(app: App) -> None:
    mail_id = store(app, with_attachment(), new_mailbox(), parser=failing_parser)
    released = release(app.uow(), mail_id, ANNA)
    assert released == {"id": mail_id, "state": "te_beoordelen", "reason": "internal_error", "attachments": 0}
    mail = mail_row(app, mail_id)
    assert mail is not None
    assert (mail.state, mail.reason, mail.error, mail.subject) == ("te_beoordelen", None, "", "Kapotte container")
    (event,) = [e for e in events(app, "mail.vrijgegeven") if e.object_id == str(mail_id)]
    assert event.who == "medewerker:anna@gemeente.nl"
    assert event.details["reden"] == "internal_error" and "KeyError" in event.details["fout"]

    result = register(app.uow(), app.config, mail_id, NoFollowUp(), ANNA)
    contact = show_contact(app.uow(), result.klantcontact_id)
    assert [b["informatieobject"]["formaat"] for b in contact["omvatteBijlagen"]] == ["message/rfc822"]

    with pytest.raises(QuarantineError, match=f"mail {mail_id} is geregistreerd, not in quarantine"):
        release(app.uow(), mail_id, ANNA)
    with pytest.raises(DecisionError, match="no stored mail with id 999999999"):
        release(app.uow(), 999999999, ANNA)


def test_dismiss_from_quarantine_records_the_reason_and_refuses_mails_under_review(app: App) -> None:
    mailbox = new_mailbox()
    quarantined = store(app, customer_mail("Spam"), mailbox, parser=failing_parser)
    reviewing = store(app, customer_mail("Vraag"), mailbox)

    dismiss_quarantined(app.uow(), quarantined, "spam", ANNA)
    mail = mail_row(app, quarantined)
    assert mail is not None and (mail.state, mail.dismiss_reason) == ("afgewezen", "spam")
    assert any(e.object_id == str(quarantined) for e in events(app, "mail.afgewezen"))

    with pytest.raises(QuarantineError, match="is te_beoordelen, not in quarantine: .* use `kcc-mail dismiss`"):
        dismiss_quarantined(app.uow(), reviewing, "spam", ANNA)
    with pytest.raises(QuarantineError, match="is te_beoordelen, not in quarantine: it is in the review queue"):
        release(app.uow(), reviewing, ANNA)
    mail = mail_row(app, reviewing)
    assert mail is not None and mail.state == "te_beoordelen"


# ------------------------------------------------------------------------------------------------------ purge


def test_blob_references_cover_every_table_that_keeps_bytes() -> None:
    names = {f"{c.table.name}.{c.name}" for c in blob_references()}
    assert {
        "inbound_mail.raw_sha256", "inbound_attachment.blob_sha256", "informatieobject.blob_sha256",
        "outbox_message.blob_sha256",
    } <= names


def test_purge_deletes_old_dismissed_mails_and_only_the_blobs_nothing_else_uses(app: App) -> None:
    mailbox, other = new_mailbox(), new_mailbox()
    old = LONG_AGO
    unique = store(app, with_unique_attachment("a"), mailbox, received_at=old)
    shared_raw = customer_mail("Ook elders")
    raw_elsewhere = store(app, shared_raw, mailbox, received_at=old)
    store(app, shared_raw, other, received_at=old)  # the same bytes stored for another mailbox, still in review
    photo = store(app, with_attachment("Eigen tekst"), mailbox, received_at=old)  # the photo is also a bijlage:
    registered = store(app, with_attachment("Geregistreerd"), mailbox, received_at=old)
    recent = store(app, customer_mail("Recent"), mailbox, received_at=NOW - timedelta(days=5))
    quarantined = store(app, customer_mail("Kapot"), mailbox, received_at=old, parser=failing_parser)
    for mail_id in (unique, raw_elsewhere, photo, recent):
        dismiss(app.uow(), mail_id, "spam", ANNA)
    register(app.uow(), app.config, registered, NoFollowUp(), ANNA)
    unique_raw, (unique_attachment,) = digests(app, unique)
    photo_raw, (photo_blob,) = digests(app, photo)
    before = events(app, "mail.opgeschoond")

    dry = purge(app.uow(), state="afgewezen", older_than_days=30, now=NOW, dry_run=True)
    assert (dry.mails, dry.attachments, dry.blobs, dry.dry_run) == (3, 2, 3, True)
    assert mail_row(app, unique) is not None and blob_exists(app, unique_attachment)
    assert events(app, "mail.opgeschoond") == before

    done = purge(app.uow(), state="afgewezen", older_than_days=30, now=NOW, who="medewerker:anna@gemeente.nl")
    assert (done.mails, done.attachments, done.blobs, done.bytes) == (dry.mails, dry.attachments, dry.blobs, dry.bytes)
    assert sorted(done.mail_ids) == sorted([unique, raw_elsewhere, photo])
    assert [mail_row(app, i) is None for i in (unique, raw_elsewhere, photo, registered, recent, quarantined)] == [
        True, True, True, False, False, False,
    ]
    with app.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(InboundAttachment).where(
            InboundAttachment.inbound_mail_id.in_([unique, photo]))) == 0
    assert not blob_exists(app, unique_raw) and not blob_exists(app, unique_attachment)
    assert not blob_exists(app, photo_raw)
    assert blob_exists(app, photo_blob)  # the registered mail's bijlage still uses it
    assert blob_exists(app, digests(app, registered)[0])
    assert blob_exists(app, digests(app, quarantined)[0])

    (event,) = events(app, "mail.opgeschoond")[len(before):]
    assert event.who == "medewerker:anna@gemeente.nl"
    assert {k: event.details[k] for k in ("state", "olderThanDays", "mails", "attachments", "blobs")} == {
        "state": "afgewezen", "olderThanDays": 30, "mails": 3, "attachments": 2, "blobs": 3,
    }

    again = purge(app.uow(), state="afgewezen", older_than_days=30, now=NOW)
    assert (again.mails, again.blobs) == (0, 0)
    assert len(events(app, "mail.opgeschoond")) == len(before) + 2  # every purge is accounted for, even an empty one

    gone = purge(app.uow(), state="quarantaine", older_than_days=30, now=NOW)
    assert gone.mail_ids == (quarantined,) and mail_row(app, quarantined) is None


def test_purge_refuses_registered_mails_and_negative_ages(app: App) -> None:
    with pytest.raises(PurgeError, match="purging 'geregistreerd' mails is refused: only afgewezen and quarantaine"):
        purge(app.uow(), state="geregistreerd", older_than_days=30)
    with pytest.raises(PurgeError, match="--older-than must be 0 days or more"):
        purge(app.uow(), state="afgewezen", older_than_days=-1)
