"""The database itself refuses what the Klantinteracties standard forbids, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from store.audit import AuditEvent, AuditIsAppendOnly
from store.blobs import get_blob, put_blob, sha256_hex
from store.engine import make_session_factory
from store.klantinteracties import InterneTaak, Klantcontact
from store.mail import Blob, InboundMail
from store.schema import SchemaOutOfDate, current_revision, head_revision, require_current, upgrade
from store.uow import UnitOfWork

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.fixture
def uow(engine: Engine) -> UnitOfWork:
    return UnitOfWork(make_session_factory(engine))


def klantcontact(nummer: str, **fields: object) -> Klantcontact:
    values: dict[str, object] = {
        "referentienummer": nummer, "kanaal": "e-mail", "onderwerp": "Vraag over afval", "inhoud": "Wanneer?",
        "taal": "nld", "vertrouwelijk": False, "plaatsgevonden_op": NOW, "indicatie_contact_gelukt": True,
    }
    values.update(fields)
    return Klantcontact(**values)


def inbound(session: Session, raw: bytes, uid: int, **fields: object) -> InboundMail:
    digest = put_blob(session, raw)
    values: dict[str, object] = {
        "mailbox": "info", "uidvalidity": 7, "uid": uid, "raw_sha256": digest, "size": len(raw),
        "received_at": NOW,
    }
    values.update(fields)
    return InboundMail(**values)


def commit_fails(uow: UnitOfWork, *objects: object) -> str:
    """Commit and expect the database to refuse; returns its message."""
    with uow, pytest.raises((IntegrityError, DataError)) as caught:
        uow.session.add_all(objects)
        uow.commit()
    return str(caught.value.orig)


def test_interne_taak_status_outside_the_standard_is_refused(uow: UnitOfWork) -> None:
    with uow:
        contact = klantcontact("1000000001")
        uow.session.add(contact)
        uow.commit()
    taak = InterneTaak(
        aanleidinggevend_klantcontact_id=contact.id, gevraagde_handeling="Terugbellen", status="gedaan",
        toegewezen_op=NOW,
    )
    assert "status" in commit_fails(uow, taak)


def test_afgehandeld_op_follows_the_status(uow: UnitOfWork) -> None:
    with uow:
        contact = klantcontact("1000000002")
        uow.session.add(contact)
        uow.session.flush()
        taak = InterneTaak(
            aanleidinggevend_klantcontact_id=contact.id, gevraagde_handeling="Terugbellen", toegewezen_op=NOW
        )
        uow.session.add(taak)
        uow.commit()
    verwerkt_zonder_datum = InterneTaak(
        aanleidinggevend_klantcontact_id=contact.id, gevraagde_handeling="Terugbellen", status="verwerkt",
        toegewezen_op=NOW,
    )
    assert "afgehandeld_op_volgt_status" in commit_fails(uow, verwerkt_zonder_datum)
    with uow:
        stored = uow.session.get(InterneTaak, taak.id)
        assert stored is not None
        stored.set_status("verwerkt", NOW + timedelta(hours=1))
        uow.commit()
        assert stored.afgehandeld_op == NOW + timedelta(hours=1)
        stored.set_status("te_verwerken", NOW + timedelta(hours=2))
        uow.commit()
        assert stored.afgehandeld_op is None


def test_inhoud_over_1000_characters_is_refused(uow: UnitOfWork) -> None:
    refusal = commit_fails(uow, klantcontact("1000000003", inhoud="x" * 1001))
    assert "inhoud" in refusal or "character varying(1000)" in refusal
    with uow:
        uow.session.add(klantcontact("1000000004", inhoud="x" * 1000))
        uow.commit()


def test_referentienummer_is_unique(uow: UnitOfWork) -> None:
    with uow:
        uow.session.add(klantcontact("1000000005"))
        uow.commit()
    commit_fails(uow, klantcontact("1000000005"))


def test_the_same_mailbox_uid_twice_is_refused(uow: UnitOfWork) -> None:
    with uow:
        uow.session.add(inbound(uow.session, b"Subject: een\r\n\r\neen\r\n", uid=1))
        uow.commit()
    with uow, pytest.raises(IntegrityError):
        uow.session.add(inbound(uow.session, b"Subject: twee\r\n\r\ntwee\r\n", uid=1))
        uow.commit()


def test_the_same_bytes_twice_in_one_mailbox_are_refused(uow: UnitOfWork) -> None:
    raw = b"Subject: dubbel\r\n\r\nzelfde bytes\r\n"
    with uow:
        uow.session.add(inbound(uow.session, raw, uid=10))
        uow.commit()
    with uow, pytest.raises(IntegrityError):
        uow.session.add(inbound(uow.session, raw, uid=11))
        uow.commit()
    with uow:  # another mailbox may hold the same mail
        uow.session.add(inbound(uow.session, raw, uid=10, mailbox="vergunningen"))
        uow.commit()


def test_a_quarantined_mail_needs_a_reason_and_a_registered_one_its_klantcontact(uow: UnitOfWork) -> None:
    with uow:
        mail = inbound(uow.session, b"Subject: q\r\n\r\nq\r\n", uid=20, state="quarantaine")
    assert "quarantaine_heeft_reden" in commit_fails(uow, mail)
    with uow:
        mail = inbound(uow.session, b"Subject: r\r\n\r\nr\r\n", uid=21, state="geregistreerd")
    assert "geregistreerd_heeft_klantcontact" in commit_fails(uow, mail)


def test_nul_bytes_never_reach_a_text_column(uow: UnitOfWork) -> None:
    with uow:
        mail = inbound(uow.session, b"Subject: nul\r\n\r\n\x00\r\n", uid=30, subject="a\x00b", text_body="x\x00y")
        uow.session.add(mail)
        uow.commit()
    with uow:
        stored = uow.session.get(InboundMail, mail.id)
        assert stored is not None
        assert (stored.subject, stored.text_body) == ("a\ufffdb", "x\ufffdy")
        assert get_blob(uow.session, stored.raw_sha256) == b"Subject: nul\r\n\r\n\x00\r\n"


def test_time_stamps_come_back_timezone_aware_in_utc(uow: UnitOfWork) -> None:
    amsterdam = timezone(timedelta(hours=1))
    with uow:
        contact = klantcontact("1000000006", plaatsgevonden_op=datetime(2026, 11, 23, 10, 30, tzinfo=amsterdam))
        uow.session.add(contact)
        uow.commit()
    with uow:
        stored = uow.session.get(Klantcontact, contact.id)
        assert stored is not None
        assert stored.plaatsgevonden_op == NOW
        assert stored.plaatsgevonden_op.utcoffset() == timedelta(0)
    with uow, pytest.raises(Exception, match="naive datetime"):
        uow.session.add(klantcontact("1000000007", plaatsgevonden_op=datetime(2026, 1, 1)))
        uow.commit()


def test_a_blob_is_stored_once_whoever_stores_it(uow: UnitOfWork) -> None:
    data = b"dezelfde bijlage" * 100
    with uow:
        put_blob(uow.session, data)
        put_blob(uow.session, data)
        uow.commit()
    with uow:
        put_blob(uow.session, data)
        uow.commit()
        count = uow.session.scalar(select(func.count()).select_from(Blob).where(Blob.sha256 == sha256_hex(data)))
    assert count == 1


def test_leaving_the_unit_of_work_without_commit_stores_nothing(uow: UnitOfWork) -> None:
    with uow:
        uow.session.add(klantcontact("1000000008"))
        uow.session.flush()
    with uow:
        assert uow.session.scalar(select(Klantcontact).where(Klantcontact.referentienummer == "1000000008")) is None


def test_audit_events_cannot_be_changed(uow: UnitOfWork) -> None:
    with uow:
        event = AuditEvent(who="medewerker:anna@gemeente.nl", action="test", object_type="x", object_id="1")
        uow.session.add(event)
        uow.commit()
    with uow, pytest.raises(AuditIsAppendOnly):
        stored = uow.session.get(AuditEvent, event.id)
        assert stored is not None
        stored.action = "gewijzigd"
        uow.commit()


def test_schema_check_names_the_fix(database_url: str, engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    require_current(engine)
    assert upgrade(engine) == (head_revision(), head_revision())  # a second init changes nothing


def test_an_empty_database_is_refused_with_the_command_to_run(tmp_path: object) -> None:
    from store.engine import make_engine

    empty = make_engine(f"sqlite:///{tmp_path}/leeg.db")
    with pytest.raises(SchemaOutOfDate, match="run `kcc-mail init`"):
        require_current(empty)
