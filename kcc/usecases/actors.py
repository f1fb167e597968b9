"""The actors a task can be assigned to: the medewerkers and afdelingen kcc-mail has met, for a picker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from store.klantinteracties import Actor
from store.states import SoortActor
from store.uow import UnitOfWork

__all__ = ["known_actors"]


def known_actors(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Active medewerkers and afdelingen, afdelingen first, each by name; `ref` is what a form posts back."""
    with uow:
        rows = uow.session.scalars(
            select(Actor).where(
                Actor.indicatie_actief.is_(True),
                Actor.soort_actor.in_((SoortActor.MEDEWERKER, SoortActor.ORGANISATORISCHE_EENHEID)),
            ).order_by(Actor.soort_actor.desc(), Actor.naam)
        ).all()
        return [
            {
                "ref": f"{'afdeling' if a.soort_actor == SoortActor.ORGANISATORISCHE_EENHEID else 'medewerker'}:"
                       f"{a.actoridentificator_object_id}",
                "naam": a.naam, "soort": a.soort_actor, "identificator": a.actoridentificator_object_id,
            }
            for a in rows
        ]
