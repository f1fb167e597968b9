"""Who is signed in and what they may do: the rules behind every web route, kept out of the route handlers.

A KCC-medewerker reviews and answers mail; a colleague in an afdeling handles that afdeling's interne taken (and
their own); a functioneel beheerder works the outbox, the quarantine and the health checks. The roles come from
the sign-in (an OIDC group claim, or the development sign-in); the identity is what the audit trail and the
Klantinteracties actor record, so nobody can decide in another's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select

from kcc.errors import NotAllowed
from kcc.records.actor import IDENTIFICATOR_MAX, ActorRef
from store.klantinteracties import Actor, InterneTaak, InterneTaakActor, Onderwerpobject
from store.mail import InboundMail
from store.states import SoortActor
from store.uow import UnitOfWork

__all__ = ["Gebruiker", "Rol", "may_handle_taak", "require_mail_access", "require_taak_access"]


class Rol(StrEnum):
    KCC = "kcc"
    """Review the werkvoorraad, answer, hand off, register, dismiss; see every interne taak."""
    BEHEER = "beheer"
    """Outbox, quarantine, the health checks."""


ROL_NAMEN = {Rol.KCC: "KCC-medewerker", Rol.BEHEER: "functioneel beheerder"}


@dataclass(frozen=True, slots=True)
class Gebruiker:
    """A signed-in person: their e-mail (the identificator), their name, their roles and their afdelingen."""

    identificator: str
    naam: str
    rollen: frozenset[Rol] = frozenset()
    afdelingen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.identificator or len(self.identificator) > IDENTIFICATOR_MAX:
            raise NotAllowed("the sign-in gave no usable identity (an e-mail address of at most 200 characters)")

    @property
    def actor(self) -> ActorRef:
        """The Klantinteracties medewerker this person decides as."""
        identificator = self.identificator.lower() if "@" in self.identificator else self.identificator
        return ActorRef(SoortActor.MEDEWERKER, identificator, naam=self.naam[:IDENTIFICATOR_MAX])

    @property
    def afdeling_actoren(self) -> tuple[ActorRef, ...]:
        return tuple(ActorRef(SoortActor.ORGANISATORISCHE_EENHEID, naam) for naam in self.afdelingen)

    def heeft(self, rol: Rol) -> bool:
        return rol in self.rollen

    def vereist(self, rol: Rol) -> None:
        """Refuse unless this person has `rol`; the message names what is missing, never what is behind it."""
        if rol not in self.rollen:
            raise NotAllowed(f"this needs the role {ROL_NAMEN[rol]}, which {self.identificator} does not have")

    def vereist_taken(self) -> None:
        """The task screens: for the KCC and for members of an afdeling."""
        if Rol.KCC not in self.rollen and not self.afdelingen:
            raise NotAllowed(f"{self.identificator} is not a KCC-medewerker nor a member of an afdeling")

    def as_json(self) -> dict[str, Any]:
        return {"identificator": self.identificator, "naam": self.naam, "rollen": sorted(self.rollen),
                "afdelingen": list(self.afdelingen)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gebruiker:
        return cls(str(data["identificator"]), str(data.get("naam", "")),
                   frozenset(Rol(r) for r in data.get("rollen", ()) if r in tuple(Rol)),
                   tuple(str(a) for a in data.get("afdelingen", ())))


def may_handle_taak(gebruiker: Gebruiker, toegewezen: Iterable[ActorRef]) -> bool:
    """A task is for the KCC (every KCC-medewerker may act on it), for its medewerker, or for its afdeling's
    members."""
    if gebruiker.heeft(Rol.KCC):
        return True
    mine = {gebruiker.actor, *gebruiker.afdeling_actoren}
    return any(ref in mine for ref in toegewezen)


def require_mail_access(uow: UnitOfWork, gebruiker: Gebruiker, mail_id: int) -> None:
    """A mail and its attachments are for the KCC and the beheerders, and for whoever has a task about it (F8618:
    the colleague sees the whole klantcontact, mail and attachments)."""
    if gebruiker.heeft(Rol.KCC) or gebruiker.heeft(Rol.BEHEER):
        return
    with uow:
        session = uow.session
        contact = session.scalar(select(InboundMail.klantcontact_id).where(InboundMail.id == mail_id))
        if contact is not None:
            answers = select(Onderwerpobject.klantcontact_id).where(Onderwerpobject.was_klantcontact_id == contact)
            rows = session.execute(
                select(Actor.soort_actor, Actor.actoridentificator_object_id)
                .join(InterneTaakActor, InterneTaakActor.actor_id == Actor.id)
                .join(InterneTaak, InterneTaak.id == InterneTaakActor.interne_taak_id)
                .where(or_(InterneTaak.aanleidinggevend_klantcontact_id == contact,
                           InterneTaak.aanleidinggevend_klantcontact_id.in_(answers)))
            ).all()
            if may_handle_taak(gebruiker, (ActorRef(SoortActor(soort), ident) for soort, ident in rows)):
                return
    raise NotAllowed(f"mail {mail_id} is not about a task of {gebruiker.identificator} or their afdeling")


def require_taak_access(gebruiker: Gebruiker, taak: Mapping[str, Any]) -> None:
    """Refuse a task (as `tasks.show` returns it) that is not for this person, their afdeling or the KCC."""
    toegewezen = [
        ActorRef(SoortActor(a["soortActor"]), a["actoridentificator"]["objectId"])
        for a in taak.get("toegewezenAanActoren", ())
    ]
    if not may_handle_taak(gebruiker, toegewezen):
        raise NotAllowed(f"task {taak.get('id')} is not for {gebruiker.identificator} nor for their afdeling")
