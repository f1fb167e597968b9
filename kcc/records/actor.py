"""Actors on the municipality's side: the reviewing medewerker, the departments, and this service itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from kcc.errors import Refused
from store.klantinteracties import Actor
from store.states import SoortActor
from store.upsert import insert_if_absent

REGISTER = "kcc-mail"
IDENTIFICATOR_MAX = 200
"""Actor.naam and actoridentificator.objectId hold at most 200 characters in the standard."""
SERVICE = (SoortActor.GEAUTOMATISEERDE_ACTOR, "app", "naam", "kcc-mail", "kcc-mail (e-mailintake)")


class ActorError(Refused):
    """An actor given by a user could not be understood."""


@dataclass(frozen=True, slots=True)
class ActorRef:
    """Who a task is for or who decides: `medewerker:<e-mail or identificator>` or `afdeling:<naam>`."""

    soort_actor: SoortActor
    identificator: str
    naam: str = field(default="", compare=False)
    """The display name, when known (from the sign-in); the identificator is the name otherwise."""

    @property
    def code_soort_object_id(self) -> str:
        if self.soort_actor == SoortActor.ORGANISATORISCHE_EENHEID:
            return "naam"
        return "email" if "@" in self.identificator else "gebruikersnaam"

    def __str__(self) -> str:
        kind = "afdeling" if self.soort_actor == SoortActor.ORGANISATORISCHE_EENHEID else "medewerker"
        return f"{kind}:{self.identificator}"


def parse_actor(text: str, *, default_medewerker: bool = False) -> ActorRef:
    """Read `medewerker:anna@gemeente.nl` or `afdeling:Burgerzaken`; a bare value is a medewerker if allowed."""
    kind, sep, value = text.partition(":")
    if not sep:
        kind, value = ("medewerker", text) if default_medewerker else ("", text)
    value = value.strip()
    if len(value) > IDENTIFICATOR_MAX:
        raise ActorError(
            f"the actor {value[:40]!r}… is {len(value)} characters; an actor's name or identificator has at most "
            f"{IDENTIFICATOR_MAX}"
        )
    if kind == "medewerker" and value:
        return ActorRef(SoortActor.MEDEWERKER, value.lower() if "@" in value else value)
    if kind in ("afdeling", "organisatorische_eenheid") and value:
        return ActorRef(SoortActor.ORGANISATORISCHE_EENHEID, value)
    raise ActorError(
        f"cannot read actor {text!r}: write medewerker:<e-mail or identificator> or afdeling:<naam>"
    )


def medewerker(text: str) -> ActorRef:
    """The deciding employee (`--as`); the `medewerker:` prefix is optional."""
    ref = parse_actor(text, default_medewerker=True)
    if ref.soort_actor != SoortActor.MEDEWERKER:
        raise ActorError(f"--as names the employee who decides, not a department: {text!r}")
    return ref


def find_or_create(session: Session, ref: ActorRef) -> Actor:
    """The actor with this identificator, created on first use (safe against a concurrent first use)."""
    return _ensure(session, *_identity(ref))


def service_actor(session: Session) -> Actor:
    """kcc-mail itself, a geautomatiseerde_actor on every klantcontact it registers."""
    return _ensure(session, *SERVICE)


def with_service_actor(session: Session, ref: ActorRef) -> tuple[Actor, Actor]:
    """`find_or_create(ref)` and `service_actor()` with one SELECT: every decision needs both."""
    wanted = [_identity(ref), SERVICE]
    found = {
        (actor.actoridentificator_code_soort_object_id, actor.actoridentificator_object_id): actor
        for actor in session.scalars(select(Actor).where(
            Actor.actoridentificator_code_register == REGISTER,
            or_(*(and_(Actor.actoridentificator_code_soort_object_id == key[2],
                       Actor.actoridentificator_object_id == key[3]) for key in wanted)),
        ))
    }
    medewerker, service = (found.get((key[2], key[3])) or _ensure(session, *key) for key in wanted)
    return medewerker, service


def _identity(ref: ActorRef) -> tuple[SoortActor, str, str, str, str]:
    code_objecttype = "afd" if ref.soort_actor == SoortActor.ORGANISATORISCHE_EENHEID else "mdw"
    return ref.soort_actor, code_objecttype, ref.code_soort_object_id, ref.identificator, ref.naam or ref.identificator


def _ensure(
    session: Session, soort: SoortActor, code_objecttype: str, code_soort_object_id: str, object_id: str, naam: str
) -> Actor:
    key = (
        Actor.actoridentificator_code_register == REGISTER,
        Actor.actoridentificator_code_soort_object_id == code_soort_object_id,
        Actor.actoridentificator_object_id == object_id,
    )
    actor = session.scalar(select(Actor).where(*key))
    if actor is not None:
        return actor
    insert_if_absent(session, Actor, {
        "uuid": uuid.uuid4(), "naam": naam[:200], "soort_actor": soort, "indicatie_actief": True,
        "actoridentificator_object_id": object_id, "actoridentificator_code_objecttype": code_objecttype,
        "actoridentificator_code_register": REGISTER, "actoridentificator_code_soort_object_id": code_soort_object_id,
    })
    return session.scalars(select(Actor).where(*key)).one()
