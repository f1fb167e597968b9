"""Interne taken (F2120, F3839, F5241, C6114): hand-offs to colleagues, searched, shown, completed and rerouted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from kcc.errors import NotFound
from kcc.records.actor import ActorRef, find_or_create
from kcc.records.api_json import interne_taak_json
from kcc.records.interne_taak import TaakError, create_interne_taak
from kcc.usecases.paging import Page
from kcc.usecases.references import as_id, as_uuid
from store import audit, export
from store.klantinteracties import Actor, InterneTaak, InterneTaakActor, Klantcontact
from store.states import TaakStatus
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = ["OPNIEUW_ROUTEREN", "TaakError", "TaakNotFound", "complete", "reopen", "reroute", "search", "show"]

OPNIEUW_ROUTEREN = "Opnieuw routeren"


class TaakNotFound(TaakError, NotFound):
    """No interne taak has that id."""


def search(
    uow: UnitOfWork, *, status: str | None = TaakStatus.TE_VERWERKEN,
    assigned: ActorRef | Sequence[ActorRef] | None = None, limit: int | None = 500, offset: int = 0,
) -> Page[dict[str, Any]]:
    """Tasks by status (None: all) and assigned actor (or any of several), oldest first (F3839)."""
    with uow:
        conditions = []
        if status is not None:
            conditions.append(InterneTaak.status == status)
        if assigned is not None:
            refs = [assigned] if isinstance(assigned, ActorRef) else list(assigned)
            actor_ids = select(Actor.id).where(or_(false(), *(
                (Actor.soort_actor == ref.soort_actor)
                & ((Actor.actoridentificator_object_id == ref.identificator) | (Actor.naam == ref.identificator))
                for ref in refs
            )))
            conditions.append(InterneTaak.id.in_(
                select(InterneTaakActor.interne_taak_id).where(InterneTaakActor.actor_id.in_(actor_ids))
            ))
        query = select(InterneTaak).where(*conditions).order_by(InterneTaak.toegewezen_op, InterneTaak.id)
        total = uow.session.scalar(select(func.count()).select_from(InterneTaak).where(*conditions)) or 0
        rows = uow.session.scalars(query.offset(offset).limit(limit))
        return Page((interne_taak_json(uow.session, taak, embed=False) for taak in rows), total=total,
                    offset=offset, limit=limit)


def show(uow: UnitOfWork, taak_id: str | int) -> dict[str, Any]:
    """The task with its klantcontact, betrokkenen and their addresses, and the bijlagen (F8618)."""
    with uow:
        return interne_taak_json(uow.session, _taak(uow.session, taak_id), embed=True)


def complete(uow: UnitOfWork, taak_id: str | int, medewerker: ActorRef, *, now: datetime | None = None) -> None:
    """F5241: the colleague handled it."""
    _change_status(uow, taak_id, TaakStatus.VERWERKT, medewerker, now or utcnow())


def reopen(uow: UnitOfWork, taak_id: str | int, medewerker: ActorRef, *, now: datetime | None = None) -> None:
    """Back to te_verwerken; afgehandeldOp is cleared, as the standard wants."""
    _change_status(uow, taak_id, TaakStatus.TE_VERWERKEN, medewerker, now or utcnow())


def reroute(
    uow: UnitOfWork, taak_id: str | int, toegewezen_aan: Iterable[ActorRef], medewerker: ActorRef, *,
    gevraagde_handeling: str | None = None, toelichting: str | None = None, now: datetime | None = None,
) -> int:
    """C6114: a new task on the same klantcontact for another actor, and the original verwerkt — atomically.

    The new task keeps the original's gevraagde handeling and toelichting (a phone number for a callback, say)
    unless the colleague gives new ones; "Retour KCC" passes OPNIEUW_ROUTEREN as the handeling.
    """
    now = now or utcnow()
    with uow:
        session = uow.session
        original = _taak(session, taak_id, lock=True)
        if original.status != TaakStatus.TE_VERWERKEN:
            raise TaakError(f"task {taak_id} is {original.status}; only a task te_verwerken can be rerouted")
        actoren = [find_or_create(session, ref) for ref in toegewezen_aan]
        contact = session.get(Klantcontact, original.aanleidinggevend_klantcontact_id)
        assert contact is not None  # a foreign key guarantees it
        nieuw = create_interne_taak(
            session, contact, original.gevraagde_handeling if gevraagde_handeling is None else gevraagde_handeling,
            original.toelichting if toelichting is None else toelichting, actoren, now=now, vervangt=original,
        )
        original.set_status(TaakStatus.VERWERKT, now)
        export.enqueue(session, contact.id, "taak_gerouteerd")
        audit.record(session, str(medewerker), "taak.gerouteerd", "interne_taak", original.id, nieuweTaak=nieuw.id)
        uow.commit()
        return nieuw.id


def _change_status(
    uow: UnitOfWork, taak_id: str | int, status: TaakStatus, medewerker: ActorRef, now: datetime
) -> None:
    with uow:
        taak = _taak(uow.session, taak_id, lock=True)
        if taak.status == status:
            raise TaakError(f"task {taak_id} is already {status}; nothing was changed")
        taak.set_status(status, now)
        action = "taak.verwerkt" if status == TaakStatus.VERWERKT else "taak.heropend"
        export.enqueue(uow.session, taak.aanleidinggevend_klantcontact_id, action.replace(".", "_"))
        audit.record(uow.session, str(medewerker), action, "interne_taak", taak.id)
        uow.commit()


def _taak(session: Session, reference: str | int, *, lock: bool = False) -> InterneTaak:
    """The task by its uuid (what `tasks list --json` prints) or its id."""
    text = str(reference).strip()
    by_uuid = as_uuid(text)
    if by_uuid is not None:
        query = select(InterneTaak).where(InterneTaak.uuid == by_uuid)
    elif as_id(text):
        query = select(InterneTaak).where(InterneTaak.id == int(text))
    else:
        raise TaakNotFound(f"{text!r} is neither the uuid nor the id of an interne taak; `kcc-mail tasks list` "
                           "lists them")
    taak = session.scalar(query.with_for_update() if lock else query)
    if taak is None:
        raise TaakNotFound(f"no interne taak {text}; `kcc-mail tasks list --status all` lists them")
    return taak
