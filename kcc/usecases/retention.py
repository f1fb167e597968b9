"""Retention of registered mail: a dossier whose retention period has passed is deleted whole, or not at all.

A registered mail is a klantcontact with its betrokkene, bijlagen and documents, perhaps an answer (a second
klantcontact with its outbox message, linked by an onderwerpobject), tasks, and later mails of the same
customer that follow it up (linked the same way). Those links make a **dossier**: the klantcontacten connected
through onderwerpobjecten. Deleting part of a dossier would leave a link to nothing, so the unit is the dossier:

- it goes only when its newest klantcontact took place before the cutoff,
- and nothing in it is still open: no task te_verwerken, no reply waiting, being sent or uncertain, and no
  export job that has not reached the registers yet (while the export is switched on; when it is off, the jobs
  have nowhere to go and are deleted with their dossier).

Everything of it goes in one transaction (records, outbox message, stored mails and attachments, and the blobs
nothing else uses), with one audit event naming the referentienummers and mail ids, never a content. A dry
run does the same and rolls back, so its counts are exact. Actors (medewerkers, afdelingen) stay: they are not
part of one contact.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from kcc.usecases.purge import PURGE_ACTOR, PurgeError, PurgeResult, batches, delete_unreferenced
from store import audit
from store.export import UNFINISHED, ExportJob
from store.klantinteracties import (
    ActorKlantcontact,
    Betrokkene,
    Bijlage,
    DigitaalAdres,
    Informatieobject,
    InterneTaak,
    InterneTaakActor,
    Klantcontact,
    Onderwerpobject,
)
from store.mail import InboundAttachment, InboundMail
from store.outbox import OutboxMessage
from store.states import MailState, OutboxStatus, TaakStatus
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = ["HANDLED_REFERENCES", "OPEN_REPLY", "dossiers", "purge_registered"]

OPEN_REPLY = (OutboxStatus.PENDING, OutboxStatus.RETRY, OutboxStatus.SENDING, OutboxStatus.UNCERTAIN)
"""A reply in one of these states still needs the relay or an operator: its dossier is kept."""

HANDLED_REFERENCES = frozenset({
    ("actor_klantcontact", "klantcontact_id"), ("betrokkene", "klantcontact_id"), ("bijlage", "klantcontact_id"),
    ("bijlage", "informatieobject_id"), ("digitaal_adres", "betrokkene_id"), ("inbound_mail", "klantcontact_id"),
    ("inbound_attachment", "inbound_mail_id"), ("interne_taak", "aanleidinggevend_klantcontact_id"),
    ("interne_taak", "vervangt_taak_id"), ("interne_taak_actor", "interne_taak_id"),
    ("onderwerpobject", "klantcontact_id"), ("onderwerpobject", "was_klantcontact_id"),
    ("outbox_message", "klantcontact_id"),
    ("mail_claim", "inbound_mail_id"),  # ON DELETE CASCADE: the database removes a claim with its mail
    ("export_job", "klantcontact_id"),
})
"""Every foreign key to a row a dossier deletes; a test fails when a table is added that refers to one."""


def purge_registered(
    uow: UnitOfWork, *, older_than_days: int, who: str = PURGE_ACTOR, now: datetime | None = None,
    dry_run: bool = False, keep_unexported: bool = True,
) -> PurgeResult:
    """Delete every closed dossier whose newest klantcontact is more than `older_than_days` old.

    `keep_unexported` (the export is switched on) keeps a dossier whose export jobs are not done yet: the
    register must get the records before they are gone here.
    """
    if older_than_days < 0:
        raise PurgeError(f"--older-than must be 0 days or more, not {older_than_days}")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    with uow:
        session = uow.session
        candidates = {k for k in session.scalars(
            select(InboundMail.klantcontact_id).where(
                InboundMail.state == MailState.GEREGISTREERD, InboundMail.received_at < cutoff,
                InboundMail.klantcontact_id.is_not(None),
            )
        ) if k is not None}
        due = [d for d in dossiers(session, candidates) if _closed(session, d, cutoff, keep_unexported)]
        contacts = sorted(k for dossier in due for k in dossier)
        _lock(session, contacts)
        _unchain_tasks(session, contacts)
        referentienummers, mail_ids, attachments, candidates_blobs = _delete(session, contacts)
        blobs, size = delete_unreferenced(session, candidates_blobs)
        result = PurgeResult(
            MailState.GEREGISTREERD, older_than_days, cutoff, len(mail_ids), attachments, blobs, size, dry_run,
            tuple(mail_ids), klantcontacten=len(contacts),
        )
        if dry_run:
            uow.rollback()
            return result
        audit.record(
            session, who, "mail.opgeschoond", "inbound_mail", "purge:geregistreerd",
            **{k: v for k, v in result.as_json().items() if k != "dryRun"}, dossiers=len(due),
            referentienummers=referentienummers,
        )
        uow.commit()
        return result


def dossiers(session: Session, klantcontacten: Iterable[int]) -> list[frozenset[int]]:
    """The dossier of each given klantcontact: everything reachable through onderwerpobject links."""
    links: dict[int, set[int]] = {}
    for one, other in session.execute(
        select(Onderwerpobject.klantcontact_id, Onderwerpobject.was_klantcontact_id)
        .where(Onderwerpobject.klantcontact_id.is_not(None), Onderwerpobject.was_klantcontact_id.is_not(None))
    ):
        if one is None or other is None:
            continue
        links.setdefault(one, set()).add(other)
        links.setdefault(other, set()).add(one)
    seen: set[int] = set()
    found = []
    for start in sorted(klantcontacten):
        if start in seen:
            continue
        dossier, todo = {start}, [start]
        while todo:
            for neighbour in links.get(todo.pop(), ()):
                if neighbour not in dossier:
                    dossier.add(neighbour)
                    todo.append(neighbour)
        seen |= dossier
        found.append(frozenset(dossier))
    return found


def _closed(session: Session, dossier: frozenset[int], cutoff: datetime, keep_unexported: bool) -> bool:
    """Past its retention (its newest contact before the cutoff) and nothing in it waits for anyone."""
    ids = sorted(dossier)
    for batch in batches(ids):
        newest = session.scalars(select(Klantcontact.plaatsgevonden_op).where(Klantcontact.id.in_(batch))).all()
        if any(moment >= cutoff for moment in newest):
            return False
        if session.scalar(select(InterneTaak.id).where(
                InterneTaak.aanleidinggevend_klantcontact_id.in_(batch),
                InterneTaak.status == TaakStatus.TE_VERWERKEN).limit(1)) is not None:
            return False
        if session.scalar(select(OutboxMessage.id).where(
                OutboxMessage.klantcontact_id.in_(batch), OutboxMessage.status.in_(OPEN_REPLY)).limit(1)) is not None:
            return False
        if session.scalar(select(InboundMail.id).where(
                InboundMail.klantcontact_id.in_(batch), InboundMail.state != MailState.GEREGISTREERD)
                .limit(1)) is not None:
            return False
        if keep_unexported and session.scalar(select(ExportJob.id).where(
                ExportJob.klantcontact_id.in_(batch), ExportJob.status.in_(UNFINISHED)).limit(1)) is not None:
            return False
    return True


def _lock(session: Session, contacts: list[int]) -> None:
    """Hold the klantcontacten, so a decision that links to one of them waits for this purge (or it for that)."""
    for batch in batches(contacts):
        session.execute(select(Klantcontact.id).where(Klantcontact.id.in_(batch)).with_for_update())


def _unchain_tasks(session: Session, contacts: list[int]) -> None:
    """A rerouted task points at the one it replaced; cut those links first, so the tasks delete in any order."""
    for batch in batches(contacts):
        session.execute(update(InterneTaak).where(InterneTaak.aanleidinggevend_klantcontact_id.in_(batch))
                        .values(vervangt_taak_id=None))


def _delete(session: Session, contacts: list[int]) -> tuple[list[str], list[int], int, set[str]]:
    """Delete the dossiers' rows, children first; returns referentienummers, mail ids, attachments, blob hashes."""
    referentienummers: list[str] = []
    mail_ids: list[int] = []
    attachments = 0
    blobs: set[str] = set()
    for batch in batches(contacts):
        referentienummers += session.scalars(
            select(Klantcontact.referentienummer).where(Klantcontact.id.in_(batch)).order_by(Klantcontact.id)
        ).all()
        mails = session.execute(
            select(InboundMail.id, InboundMail.raw_sha256).where(InboundMail.klantcontact_id.in_(batch))
        ).all()
        mail_ids += [mail_id for mail_id, _ in mails]
        blobs |= {sha for _, sha in mails}
        rows = session.scalars(select(InboundAttachment.blob_sha256).where(
            InboundAttachment.inbound_mail_id.in_([mail_id for mail_id, _ in mails]))).all()
        attachments += len(rows)
        blobs |= set(rows)
        blobs |= set(session.scalars(select(OutboxMessage.blob_sha256).where(OutboxMessage.klantcontact_id.in_(batch))))
        documents = session.scalars(select(Bijlage.informatieobject_id).where(Bijlage.klantcontact_id.in_(batch))).all()
        taken = session.scalars(
            select(InterneTaak.id).where(InterneTaak.aanleidinggevend_klantcontact_id.in_(batch))).all()
        betrokkenen = session.scalars(select(Betrokkene.id).where(Betrokkene.klantcontact_id.in_(batch))).all()

        session.execute(delete(InboundAttachment).where(InboundAttachment.inbound_mail_id.in_(
            [mail_id for mail_id, _ in mails])))
        session.execute(delete(InboundMail).where(InboundMail.klantcontact_id.in_(batch)))
        session.execute(delete(OutboxMessage).where(OutboxMessage.klantcontact_id.in_(batch)))
        session.execute(delete(InterneTaakActor).where(InterneTaakActor.interne_taak_id.in_(taken)))
        session.execute(delete(InterneTaak).where(InterneTaak.id.in_(taken)))
        session.execute(delete(Onderwerpobject).where(
            Onderwerpobject.klantcontact_id.in_(batch) | Onderwerpobject.was_klantcontact_id.in_(batch)))
        session.execute(delete(Bijlage).where(Bijlage.klantcontact_id.in_(batch)))
        for document_batch in batches(sorted(set(documents))):
            blobs |= set(session.scalars(
                select(Informatieobject.blob_sha256).where(Informatieobject.id.in_(document_batch))))
            still_used = set(session.scalars(
                select(Bijlage.informatieobject_id).where(Bijlage.informatieobject_id.in_(document_batch))))
            session.execute(delete(Informatieobject).where(
                Informatieobject.id.in_([d for d in document_batch if d not in still_used])))
        session.execute(delete(DigitaalAdres).where(DigitaalAdres.betrokkene_id.in_(betrokkenen)))
        session.execute(delete(Betrokkene).where(Betrokkene.klantcontact_id.in_(batch)))
        session.execute(delete(ActorKlantcontact).where(ActorKlantcontact.klantcontact_id.in_(batch)))
        session.execute(delete(ExportJob).where(ExportJob.klantcontact_id.in_(batch)))
    # the klantcontacten last: a task of one dossier may replace a task of another batch of the same dossier
    for batch in batches(contacts):
        session.execute(delete(Klantcontact).where(Klantcontact.id.in_(batch)))
    return referentienummers, sorted(mail_ids), attachments, blobs
