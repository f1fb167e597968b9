"""Interne taken: a request to colleagues, assigned to one or more actors (never commits)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from kcc.errors import Refused
from store.klantinteracties import Actor, InterneTaak, InterneTaakActor, Klantcontact
from store.states import TaakStatus

GEVRAAGDE_HANDELING_MAX = 200
TOELICHTING_MAX = 1000


class TaakError(Refused):
    """The task cannot be created or changed this way; nothing was changed."""


def create_interne_taak(
    session: Session, contact: Klantcontact, gevraagde_handeling: str, toelichting: str, actoren: Iterable[Actor],
    *, now: datetime, vervangt: InterneTaak | None = None,
) -> InterneTaak:
    """An interne taak `te_verwerken`, assigned to at least one actor."""
    handeling = " ".join(gevraagde_handeling.split())
    assigned = list(actoren)
    if not handeling:
        raise TaakError("a task needs a gevraagde handeling, e.g. --handeling Terugbellen")
    if len(handeling) > GEVRAAGDE_HANDELING_MAX:
        raise TaakError(f"the gevraagde handeling is {len(handeling)} characters; at most 200 are allowed")
    if len(toelichting) > TOELICHTING_MAX:
        raise TaakError(f"the toelichting is {len(toelichting)} characters; at most 1000 are allowed")
    if not assigned:
        raise TaakError("a task must be assigned to at least one actor: --assign medewerker:… or afdeling:…")
    taak = InterneTaak(
        aanleidinggevend_klantcontact=contact, gevraagde_handeling=handeling, toelichting=toelichting,
        status=TaakStatus.TE_VERWERKEN, toegewezen_op=now, vervangt_taak_id=vervangt.id if vervangt else None,
    )
    session.add(taak)
    session.flush()
    for actor in {a.id: a for a in assigned}.values():
        session.add(InterneTaakActor(interne_taak_id=taak.id, actor_id=actor.id))
    session.flush()
    return taak
