"""Storing one received mail is all or nothing, on SQLite (plain INSERTs) and PostgreSQL (one statement; plain
INSERTs for a large mail)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text
from support.dbfaults import MESSAGE, refuse_inserts

from ingest.analysis import Analysis, ClassifyOptions, StoredMail, analyse, attachment_rows, parsed_fields
from ingest.sources.base import FetchedMail, MailRef
from kcc.usecases.intake import store_group, store_mail
from store.blobs import sha256_hex
from store.engine import make_session_factory
from store.inbound import NewBlob, insert_inbound_mail
from store.mail import Blob, InboundAttachment, InboundMail
from store.uow import UnitOfWork

RECEIVED = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
FORM = b"%PDF-1.4 aanvraagformulier " * 200


def with_attachments(subject: str, *, photo_twice: bool = False, form: bytes = FORM) -> bytes:
    """A customer mail with a photo (maybe twice) and a form whose file name carries a NUL."""
    import base64

    def part(name: str, content_type: str, data: bytes) -> str:
        return (
            f"--grens\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.encodebytes(data).decode()}\r\n"
        )

    photos = [part("container.jpg", "image/jpeg", PHOTO)] * (2 if photo_twice else 1)
    return (
        f"From: Karel <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\n"
        f"Message-ID: <{sha256_hex(subject.encode())[:12]}@example.nl>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=grens\r\n\r\n"
        f"--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie de bijlagen.\r\n"
        + "".join(photos) + part("aanvraag=?utf-8?q?=00?=.pdf", "application/pdf", form) + "--grens--\r\n"
    ).encode()


def store(engine: Engine, raw: bytes, uid: int) -> StoredMail | None:
    fetched = FetchedMail(ref=MailRef(uid=uid, key=str(uid), size=len(raw)), raw=raw, internaldate=RECEIVED)
    analysis = analyse(raw, RECEIVED, max_mail_bytes=10_000_000, options=ClassifyOptions())
    return store_mail(UnitOfWork(make_session_factory(engine)), "info", fetched, 7, analysis)


def blobs_present(engine: Engine, *digests: str) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(Blob.sha256).where(Blob.sha256.in_(digests))))


def test_a_mail_its_bytes_and_its_attachments_are_stored_together(engine: Engine) -> None:
    raw = with_attachments("Twee keer dezelfde foto", photo_twice=True)
    mail = store(engine, raw, uid=101)
    assert mail is not None and mail.state == "te_beoordelen"
    with engine.connect() as connection:
        rows = connection.execute(
            select(InboundAttachment.position, InboundAttachment.bestandsnaam, InboundAttachment.blob_sha256)
            .where(InboundAttachment.inbound_mail_id == mail.id).order_by(InboundAttachment.position)
        ).all()
        raw_back = connection.scalar(select(Blob.data).where(Blob.sha256 == sha256_hex(raw)))
        photo_back = connection.scalar(select(Blob.data).where(Blob.sha256 == sha256_hex(PHOTO)))
    assert [(r.position, r.bestandsnaam) for r in rows] == [
        (0, "container.jpg"), (1, "container.jpg"), (2, "aanvraag\ufffd.pdf")
    ]
    assert rows[0].blob_sha256 == rows[1].blob_sha256 == sha256_hex(PHOTO)
    assert raw_back == raw and photo_back == PHOTO


def test_a_refused_attachment_row_leaves_neither_the_mail_nor_its_bytes(engine: Engine) -> None:
    form = b"%PDF-1.4 alleen in deze mail " * 100
    raw = with_attachments("Geweigerde bijlage", form=form)
    analysis = analyse(raw, RECEIVED, max_mail_bytes=10_000_000, options=ClassifyOptions())
    assert analysis.parsed is not None and analysis.classification is not None
    blobs = [NewBlob(analysis.sha256, raw), *(NewBlob(a.sha256, a.data) for a in analysis.parsed.attachments)]
    values = {"uuid": uuid.uuid4(), "mailbox": "info", "uidvalidity": 1, "uid": 201, "source_key": "201",
              "raw_sha256": analysis.sha256, "stored_at": RECEIVED,
              "size": len(raw), "received_at": RECEIVED, "state": "te_beoordelen", "reason": None, "error": "",
              **parsed_fields(analysis.parsed, analysis.classification)}
    uow = UnitOfWork(make_session_factory(engine))
    with refuse_inserts(engine, "inbound_attachment"), pytest.raises(Exception, match=MESSAGE), uow:
        insert_inbound_mail(uow.session, blobs, values, attachment_rows(analysis.parsed))
        uow.commit()
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(InboundMail).where(InboundMail.uid == 201)) == 0
    assert blobs_present(engine, sha256_hex(raw), sha256_hex(form)) == set()
    stored = store(engine, raw, uid=201)  # the same mail, once the database accepts it
    assert stored is not None
    assert blobs_present(engine, sha256_hex(raw), sha256_hex(form)) == {sha256_hex(raw), sha256_hex(form)}


def test_a_mail_whose_attachment_rows_are_refused_is_kept_in_quarantine_without_them(engine: Engine) -> None:
    form = b"%PDF-1.4 geweigerd bij intake " * 100
    raw = with_attachments("Bijlage geweigerd bij intake", form=form)
    with refuse_inserts(engine, "inbound_attachment"):
        stored = store(engine, raw, uid=251)
    assert stored is not None and (stored.state, stored.reason) == ("quarantaine", "internal_error")
    with engine.connect() as connection:
        attachments = connection.scalar(
            select(func.count()).select_from(InboundAttachment).where(InboundAttachment.inbound_mail_id == stored.id)
        )
    assert attachments == 0, "no half-stored attachments"
    assert blobs_present(engine, sha256_hex(raw), sha256_hex(form)) == {sha256_hex(raw)}
    assert store(engine, raw, uid=251) is None, "stored once: fetching it again adds nothing"


def test_a_second_delivery_under_the_same_uid_writes_nothing(engine: Engine) -> None:
    first = with_attachments("Eerste levering")
    assert store(engine, first, uid=301) is not None
    form = b"%PDF-1.4 nooit opgeslagen " * 100
    other = with_attachments("Andere bytes onder dezelfde UID", form=form)
    assert store(engine, other, uid=301) is None
    assert store(engine, first, uid=302) is None  # the same bytes under a new UID: the sha256 key holds
    assert blobs_present(engine, sha256_hex(other), sha256_hex(form)) == set()


def test_postgresql_compresses_mail_bytes_with_lz4(postgres_engine: Engine) -> None:
    raw = with_attachments("Comprimeer mij") + b"Bijlage-tekst die zich goed laat inpakken.\r\n" * 500
    assert store(postgres_engine, raw, uid=401) is not None
    with postgres_engine.connect() as connection:
        method = connection.scalar(
            text("SELECT pg_column_compression(data) FROM blob WHERE sha256 = :sha"), {"sha": sha256_hex(raw)}
        )
    assert method == "lz4"


LARGE_FORM = random.Random(8).randbytes(7_000_000)
"""An attachment that makes the mail a large one: over store.inbound.ONE_STATEMENT_MAX_BYTES of blobs (plain
INSERTs on PostgreSQL too) and over SQLITE_IN_PLACE_MIN_BYTES (written into its row in place on SQLite)."""


def fetched_and_analysed(raw: bytes, uid: int) -> tuple[FetchedMail, Analysis]:
    fetched = FetchedMail(ref=MailRef(uid=uid, key=str(uid), size=len(raw)), raw=raw, internaldate=RECEIVED)
    return fetched, analyse(raw, RECEIVED, max_mail_bytes=20_000_000, options=ClassifyOptions())


def blob_data(engine: Engine, digest: str) -> bytes | None:
    with engine.connect() as connection:
        return connection.scalar(select(Blob.data).where(Blob.sha256 == digest))


def test_a_large_mail_and_its_large_attachment_are_stored_byte_for_byte(engine: Engine) -> None:
    raw = with_attachments("Een grote scan", form=LARGE_FORM)
    fetched, analysis = fetched_and_analysed(raw, uid=501)
    mail = store_mail(UnitOfWork(make_session_factory(engine)), "info", fetched, 7, analysis)
    assert mail is not None and mail.state == "te_beoordelen"
    assert blob_data(engine, sha256_hex(raw)) == raw
    assert blob_data(engine, sha256_hex(LARGE_FORM)) == LARGE_FORM
    with engine.connect() as connection:
        sizes = connection.execute(select(Blob.size).where(Blob.sha256.in_([sha256_hex(raw), sha256_hex(LARGE_FORM)])))
        assert sorted(sizes.scalars()) == sorted([len(LARGE_FORM), len(raw)])
    other_form = random.Random(9).randbytes(7_000_000)
    other = with_attachments("Andere grote scan onder dezelfde UID", form=other_form)
    fetched, analysis = fetched_and_analysed(other, uid=501)
    assert store_mail(UnitOfWork(make_session_factory(engine)), "info", fetched, 7, analysis) is None
    assert blobs_present(engine, sha256_hex(other), sha256_hex(other_form)) == set(), "nothing of a duplicate"


def test_a_large_duplicate_in_a_group_takes_back_only_its_own_bytes(engine: Engine) -> None:
    first = with_attachments("Grote scan, eerste keer", form=LARGE_FORM)
    fetched, analysis = fetched_and_analysed(first, uid=601)
    assert store_mail(UnitOfWork(make_session_factory(engine)), "info", fetched, 7, analysis) is not None
    new_form = random.Random(10).randbytes(7_000_000)
    new = with_attachments("Grote scan in de groep", form=new_form)
    duplicate_form = random.Random(11).randbytes(7_000_000)
    duplicate = with_attachments("Andere bytes onder UID 601", form=duplicate_form)
    stored = store_group(lambda: UnitOfWork(make_session_factory(engine)), "info",
                         [fetched_and_analysed(new, uid=602), fetched_and_analysed(duplicate, uid=601)], 7)
    assert stored[0] is not None and stored[1] is None
    assert blob_data(engine, sha256_hex(new_form)) == new_form
    assert blobs_present(engine, sha256_hex(duplicate), sha256_hex(duplicate_form)) == set()


def stored_subjects(engine: Engine, mail_ids: list[int | None]) -> list[str | None]:
    with engine.connect() as connection:
        subjects = dict(connection.execute(
            select(InboundMail.id, InboundMail.subject).where(InboundMail.id.in_([i for i in mail_ids if i]))
        ).all())
    return [None if mail_id is None else subjects[mail_id] for mail_id in mail_ids]


def test_a_group_stores_each_mail_with_its_attachments_and_the_same_mail_only_once(engine: Engine) -> None:
    """The same bytes twice in one group (two UIDs), and a UID of the group's own: one mail each, never two."""
    first, second = with_attachments("Groep, eerste"), with_attachments("Groep, tweede", photo_twice=True)
    group = [fetched_and_analysed(first, uid=701), fetched_and_analysed(second, uid=702),
             fetched_and_analysed(first, uid=703), fetched_and_analysed(with_attachments("Andere bytes"), uid=702)]
    stored = store_group(lambda: UnitOfWork(make_session_factory(engine)), "info", group, 7)
    assert stored_subjects(engine, [m.id if m else None for m in stored]) == [
        "Groep, eerste", "Groep, tweede", None, None]
    with engine.connect() as connection:
        positions = connection.execute(
            select(InboundAttachment.inbound_mail_id, func.count()).where(
                InboundAttachment.inbound_mail_id.in_([m.id for m in stored if m])
            ).group_by(InboundAttachment.inbound_mail_id)
        ).all()
    assert sorted(count for _, count in positions) == [2, 3], "each mail its own attachments"
    assert blob_data(engine, sha256_hex(second)) == second


def test_a_mail_stored_by_another_process_during_the_group_is_not_stored_twice(postgres_engine: Engine) -> None:
    """Another intake commits one of the group's mails right after the group's check for stored mails: the group
    is stored again one by one, and that mail counts as a duplicate; the other is stored."""
    from sqlalchemy import event

    raced, other = with_attachments("Gelijktijdig binnen"), with_attachments("Alleen in de groep")
    group = [fetched_and_analysed(raced, uid=801), fetched_and_analysed(other, uid=802)]
    interfered: list[bool] = []

    def store_it_elsewhere_first(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not interfered and statement.lstrip().upper().startswith("INSERT INTO BLOB "):
            interfered.append(True)
            assert store(postgres_engine, raced, uid=801) is not None

    event.listen(postgres_engine, "before_cursor_execute", store_it_elsewhere_first)
    try:
        stored = store_group(lambda: UnitOfWork(make_session_factory(postgres_engine)), "info", group, 7)
    finally:
        event.remove(postgres_engine, "before_cursor_execute", store_it_elsewhere_first)
    assert interfered
    assert stored[0] is None and stored[1] is not None
    with postgres_engine.connect() as connection:
        subjects = connection.scalars(
            select(InboundMail.subject).where(InboundMail.subject.in_(["Gelijktijdig binnen", "Alleen in de groep"]))
        ).all()
    assert sorted(subjects) == ["Alleen in de groep", "Gelijktijdig binnen"]
