"""Interne taken (F2120, F3839, F5241, C6114): hand-offs to colleagues, searched, shown, completed and rerouted."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kcc.actors import ActorRef, find_or_create
from kcc.api_json import interne_taak_json
from kcc.registratie import audit
from store.klantinteracties import Actor, InterneTaak, InterneTaakActor, Klantcontact
from store.types import utcnow
from store.uow import UnitOfWork

OPNIEUW_ROUTEREN = "Opnieuw routeren"


class TaakError(Exception):
    """The task cannot be changed this way; nothing was changed."""


def nieuwe_taak(
    session: Session, contact: Klantcontact, gevraagde_handeling: str, toelichting: str, actoren: Iterable[Actor],
    *, now: datetime, vervangt: InterneTaak | None = None,
) -> InterneTaak:
    """An interne taak `te_verwerken`, assigned to at least one actor."""
    handeling = " ".join(gevraagde_handeling.split())
    assigned = list(actoren)
    if not handeling:
        raise TaakError("a task needs a gevraagde handeling, e.g. --handeling Terugbellen")
    if len(handeling) > 200:
        raise TaakError(f"the gevraagde handeling is {len(handeling)} characters; at most 200 are allowed")
    if len(toelichting) > 1000:
        raise TaakError(f"the toelichting is {len(toelichting)} characters; at most 1000 are allowed")
    if not assigned:
        raise TaakError("a task must be assigned to at least one actor: --assign medewerker:… or afdeling:…")
    taak = InterneTaak(
        aanleidinggevend_klantcontact_id=contact.id, gevraagde_handeling=handeling, toelichting=toelichting,
        status="te_verwerken", toegewezen_op=now, vervangt_taak_id=vervangt.id if vervangt else None,
    )
    session.add(taak)
    session.flush()
    for actor in {a.id: a for a in assigned}.values():
        session.add(InterneTaakActor(interne_taak_id=taak.id, actor_id=actor.id))
    session.flush()
    return taak


def search(
    uow: UnitOfWork, *, status: str | None = "te_verwerken", assigned: ActorRef | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Tasks by status (None: all) and assigned actor, oldest first (F3839)."""
    with uow:
        query = select(InterneTaak).order_by(InterneTaak.toegewezen_op, InterneTaak.id).limit(limit)
        if status is not None:
            query = query.where(InterneTaak.status == status)
        if assigned is not None:
            actor_ids = select(Actor.id).where(
                Actor.soort_actor == assigned.soort_actor,
                (Actor.actoridentificator_object_id == assigned.identificator) | (Actor.naam == assigned.identificator),
            )
            query = query.where(InterneTaak.id.in_(
                select(InterneTaakActor.interne_taak_id).where(InterneTaakActor.actor_id.in_(actor_ids))
            ))
        return [interne_taak_json(uow.session, taak, embed=False) for taak in uow.session.scalars(query)]


def show(uow: UnitOfWork, taak_id: int) -> dict[str, Any]:
    """The task with its klantcontact, betrokkenen and their addresses, and the bijlagen (F8618)."""
    with uow:
        return interne_taak_json(uow.session, _taak(uow.session, taak_id), embed=True)


def complete(uow: UnitOfWork, taak_id: int, medewerker: ActorRef, *, now: datetime | None = None) -> None:
    """F5241: the colleague handled it."""
    _change_status(uow, taak_id, "verwerkt", medewerker, now or utcnow())


def reopen(uow: UnitOfWork, taak_id: int, medewerker: ActorRef, *, now: datetime | None = None) -> None:
    """Back to te_verwerken; afgehandeldOp is cleared, as the standard wants."""
    _change_status(uow, taak_id, "te_verwerken", medewerker, now or utcnow())


def reroute(
    uow: UnitOfWork, taak_id: int, toegewezen_aan: Iterable[ActorRef], medewerker: ActorRef, *,
    gevraagde_handeling: str = OPNIEUW_ROUTEREN, toelichting: str = "", now: datetime | None = None,
) -> int:
    """C6114: a new task on the same klantcontact for another actor, and the original verwerkt — atomically."""
    now = now or utcnow()
    with uow:
        session = uow.session
        original = _taak(session, taak_id, lock=True)
        if original.status != "te_verwerken":
            raise TaakError(f"task {taak_id} is {original.status}; only a task te_verwerken can be rerouted")
        actoren = [find_or_create(session, ref) for ref in toegewezen_aan]
        contact = session.get(Klantcontact, original.aanleidinggevend_klantcontact_id)
        assert contact is not None  # a foreign key guarantees it
        nieuw = nieuwe_taak(session, contact, gevraagde_handeling, toelichting, actoren, now=now, vervangt=original)
        original.zet_status("verwerkt", now)
        audit(session, str(medewerker), "taak.gerouteerd", "interne_taak", original.id, nieuweTaak=nieuw.id)
        uow.commit()
        return nieuw.id


def _change_status(uow: UnitOfWork, taak_id: int, status: str, medewerker: ActorRef, now: datetime) -> None:
    with uow:
        taak = _taak(uow.session, taak_id, lock=True)
        if taak.status == status:
            raise TaakError(f"task {taak_id} is already {status}; nothing was changed")
        taak.zet_status(status, now)
        action = "taak.verwerkt" if status == "verwerkt" else "taak.heropend"
        audit(uow.session, str(medewerker), action, "interne_taak", taak.id)
        uow.commit()


def _taak(session: Session, taak_id: int, *, lock: bool = False) -> InterneTaak:
    query = select(InterneTaak).where(InterneTaak.id == taak_id)
    taak = session.scalar(query.with_for_update() if lock else query)
    if taak is None:
        raise TaakError(f"no interne taak with id {taak_id}; `kcc-mail tasks list --status all` lists them")
    return taak
