"""Who is working on a mail ("In behandeling bij Anna, sinds 10:42"): opening a mail claims it for a few minutes.

A claim is a courtesy, not a lock: it tells a second employee that someone else has the mail open, and lets them
take over explicitly. What decides is still the decision's own transaction (kcc.usecases.review), so a lapsed
or ignored claim can never cause a second klantcontact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kcc.errors import Refused
from kcc.usecases.access import Gebruiker
from kcc.usecases.review import MailNotFound
from store.claims import MailClaim
from store.mail import InboundMail
from store.states import MailState
from store.types import utcnow
from store.uow import UnitOfWork
from store.upsert import insert_if_absent

__all__ = ["ClaimedByOther", "Inbehandeling", "claims_for", "open_mail", "release", "require_claim"]


class ClaimedByOther(Refused):
    """Another employee has the mail open; take it over first."""


@dataclass(frozen=True, slots=True)
class Inbehandeling:
    """Who has the mail open, since when, until when, and whether that is the person asking."""

    medewerker: str
    naam: str
    since: datetime
    until: datetime
    mine: bool

    @property
    def wie(self) -> str:
        return self.naam or self.medewerker


def open_mail(
    uow: UnitOfWork, mail_id: int, gebruiker: Gebruiker, *, minutes: float, take_over: bool = False,
    now: datetime | None = None,
) -> Inbehandeling | None:
    """Claim a waiting mail for `gebruiker` (or renew their claim) unless someone else holds it; then say who does.

    With `take_over` the other's claim is replaced. A mail that no longer waits for review is not claimed (None).
    """
    now = now or utcnow()
    until = now + timedelta(minutes=minutes)
    with uow:
        session = uow.session
        mail = session.get(InboundMail, mail_id)
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}")
        if mail.state != MailState.TE_BEOORDELEN:
            return None
        insert_if_absent(session, MailClaim, {
            "inbound_mail_id": mail_id, "medewerker": gebruiker.identificator, "naam": gebruiker.naam[:200],
            "since": now, "until": until,
        })
        claim = session.scalars(select(MailClaim).where(MailClaim.inbound_mail_id == mail_id).with_for_update()).one()
        if claim.medewerker == gebruiker.identificator:
            claim.until = until
        elif claim.until <= now or take_over:
            claim.medewerker, claim.naam, claim.since, claim.until = (
                gebruiker.identificator, gebruiker.naam[:200], now, until)
        held = _held(claim, gebruiker)
        uow.commit()
        return held


def require_claim(uow: UnitOfWork, mail_id: int, gebruiker: Gebruiker, *, now: datetime | None = None) -> None:
    """Before a decision from the screen: refuse when someone else has the mail open (their claim still runs)."""
    now = now or utcnow()
    with uow:
        claim = uow.session.get(MailClaim, mail_id)
        if claim is not None and claim.medewerker != gebruiker.identificator and claim.until > now:
            raise ClaimedByOther(
                f"mail {mail_id} is in behandeling bij {claim.naam or claim.medewerker} since "
                f"{claim.since:%H:%M} UTC; take it over first if you are to decide on it"
            )


def release(uow: UnitOfWork, mail_id: int, gebruiker: Gebruiker) -> None:
    """Give the mail back (after a decision, or "Vrijgeven"); only one's own claim."""
    with uow:
        uow.session.execute(delete(MailClaim).where(
            MailClaim.inbound_mail_id == mail_id, MailClaim.medewerker == gebruiker.identificator))
        uow.commit()


def claims_for(
    session: Session, mail_ids: list[int], gebruiker: Gebruiker | None, now: datetime
) -> dict[int, Inbehandeling]:
    """The running claims of these mails, for a list page, inside the caller's transaction."""
    if not mail_ids:
        return {}
    rows = session.scalars(select(MailClaim).where(MailClaim.inbound_mail_id.in_(mail_ids), MailClaim.until > now))
    return {row.inbound_mail_id: _held(row, gebruiker) for row in rows}


def _held(claim: MailClaim, gebruiker: Gebruiker | None) -> Inbehandeling:
    mine = gebruiker is not None and claim.medewerker == gebruiker.identificator
    return Inbehandeling(claim.medewerker, claim.naam, claim.since, claim.until, mine)
