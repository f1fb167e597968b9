"""Werkvoorraad e-mail: the mails waiting for review as the KCC employee sees them on the screen.

Oldest first, one page at a time, with the counts per state, the filters (mailbox, flag, date) and a search over
sender, subject, body text and referentienummer (store.search), and who has each mail open (kcc.usecases.claims).
Everything comes from one read-only snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, select, union
from sqlalchemy.orm import load_only

from ingest.classify import FLAGS
from kcc.errors import Refused
from kcc.usecases.access import Gebruiker
from kcc.usecases.claims import Inbehandeling, claims_for
from kcc.usecases.paging import Page
from store import search
from store.klantinteracties import Klantcontact
from store.mail import InboundAttachment, InboundMail
from store.outbox import OutboxMessage
from store.states import MailState
from store.types import utcnow
from store.uow import UnitOfWork

__all__ = ["FILTER_FLAGS", "VERVOLG", "BadFilter", "Werkvoorraad", "WerkvoorraadFilter", "werkvoorraad"]

VERVOLG = "vervolg"
"""Not a parser flag: the mail answers one of ours or follows a registered mail (In-Reply-To)."""
FILTER_FLAGS = (*sorted(FLAGS), VERVOLG)
SEARCH_COUNT_LIMIT = 1000
"""A search counts its matches this far: an exact count of 20,000 matches costs a visit to each of them."""
COUNTED = (MailState.TE_BEOORDELEN.value, MailState.QUARANTAINE.value)
LISTED = (InboundMail.uuid, InboundMail.state, InboundMail.mailbox, InboundMail.from_address, InboundMail.from_name,
          InboundMail.subject, InboundMail.received_at, InboundMail.flags, InboundMail.reason)
"""The columns a row of the list shows: never the bodies (up to megabytes each) nor the headers it does not."""


class BadFilter(Refused):
    """A filter value that names nothing (an unknown state or flag, an end before its start)."""


@dataclass(frozen=True, slots=True)
class WerkvoorraadFilter:
    """What the employee narrowed the list to; every field is optional."""

    state: str = MailState.TE_BEOORDELEN
    mailbox: str | None = None
    flag: str | None = None
    van: date | None = None
    tot: date | None = None
    zoek: str = ""
    zone: tzinfo = UTC
    """The time zone the dates are meant in (the KCC's, from web.timezone)."""

    @property
    def narrowed_by_state_and_mailbox_only(self) -> bool:
        return not (self.flag or self.van or self.tot or self.zoek.strip())

    def check(self) -> None:
        if self.state not in tuple(MailState):
            raise BadFilter(f"unknown state {self.state!r}; choose one of {', '.join(MailState)}")
        if self.flag is not None and self.flag not in FILTER_FLAGS:
            raise BadFilter(f"unknown flag {self.flag!r}; choose one of {', '.join(FILTER_FLAGS)}")
        if self.van and self.tot and self.van > self.tot:
            raise BadFilter("the start date is after the end date; swap them")


@dataclass(frozen=True, slots=True)
class Werkvoorraad:
    """One page of the list, the counts per state (over the mailbox filter only), and the known mailboxes."""

    mails: Page[dict[str, Any]]
    counts: dict[str, int | None]
    """Mails per state for the states that are work (COUNTED); None for the archive states, whose counts would
    cost a scan of every mail ever kept and tell the employee nothing."""
    mailboxes: list[str]
    claims: dict[int, Inbehandeling] = field(default_factory=dict)
    more_than: bool = False
    """The search matched more than SEARCH_COUNT_LIMIT mails: `mails.total` is that limit plus one."""


def werkvoorraad(
    uow: UnitOfWork, where: WerkvoorraadFilter, *, gebruiker: Gebruiker | None = None, page: int = 1,
    page_size: int = 50, now: datetime | None = None, mailboxes: list[str] | None = None,
) -> Werkvoorraad:
    """The page `page` (1 = the oldest mails) of the mails matching `where`.

    `mailboxes` are the names the filter offers (the configured ones); without them every name in the database is
    read, which costs a scan of all mail.
    """
    where.check()
    now = now or utcnow()
    offset = (max(page, 1) - 1) * page_size
    with uow:
        session = uow.session
        conditions = _conditions(session.get_bind().dialect, where)
        mailbox_only = [InboundMail.mailbox == where.mailbox] if where.mailbox else []
        by_state: dict[str, int | None] = {state.value: None for state in MailState}
        for state, count in session.execute(
            select(InboundMail.state, func.count()).where(InboundMail.state.in_(COUNTED), *mailbox_only)
            .group_by(InboundMail.state)
        ):
            by_state[state] = count
        for state in COUNTED:
            by_state[state] = by_state[state] or 0
        counted = by_state[where.state]
        more_than = False
        if counted is not None and where.narrowed_by_state_and_mailbox_only:
            total = counted
        else:  # a search or a filter: counted up to SEARCH_COUNT_LIMIT, beyond that "more than" is enough
            matched = select(InboundMail.id).where(*conditions).limit(SEARCH_COUNT_LIMIT + 1).subquery()
            total = session.scalar(select(func.count()).select_from(matched)) or 0
            more_than = total > SEARCH_COUNT_LIMIT
        attachments = (
            select(func.count()).where(InboundAttachment.inbound_mail_id == InboundMail.id)
            .correlate(InboundMail).scalar_subquery()
        )
        rows = session.execute(
            select(InboundMail, attachments).options(load_only(*LISTED)).where(*conditions)
            .order_by(InboundMail.received_at, InboundMail.id).offset(offset).limit(page_size)
        ).all()
        if mailboxes is None:
            mailboxes = sorted(session.scalars(select(InboundMail.mailbox).distinct()))
        mails = Page((_row(mail, count) for mail, count in rows), total=total, offset=offset, limit=page_size)
        claimed = claims_for(session, [m["id"] for m in mails], gebruiker, now)
        return Werkvoorraad(mails, by_state, mailboxes, claimed, more_than=more_than)


def _conditions(dialect: Any, where: WerkvoorraadFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [InboundMail.state == where.state]
    if where.mailbox:
        conditions.append(InboundMail.mailbox == where.mailbox)
    if where.flag == VERVOLG:
        conditions.append(_follow_up())
    elif where.flag:  # a known token (checked), so matching its JSON text is exact
        conditions.append(cast(InboundMail.flags, String).like(f'%"{where.flag}"%'))
    if where.van:
        conditions.append(InboundMail.received_at >= datetime.combine(where.van, time.min, where.zone))
    if where.tot:
        end = datetime.combine(where.tot + timedelta(days=1), time.min, where.zone)
        conditions.append(InboundMail.received_at < end)
    if where.zoek.strip():
        conditions.append(_search(dialect, where.zoek.strip()))
    return conditions


def _search(dialect: Any, text: str) -> ColumnElement[bool]:
    """Words in sender, subject or text; a number also finds the mail registered under that referentienummer.

    The two are a UNION of ids, not an OR: an OR of the text match with anything else keeps PostgreSQL from the
    full-text index and makes it compute every mail's text vector (seconds with 100,000 mails).
    """
    matching = search.matches(dialect, text)
    if not text.isdigit():
        return matching if matching is not None else InboundMail.id.is_(None)
    registered = (select(InboundMail.id).join(Klantcontact, Klantcontact.id == InboundMail.klantcontact_id)
                  .where(Klantcontact.referentienummer == text))
    if matching is None:
        return InboundMail.id.in_(registered)
    return InboundMail.id.in_(union(select(InboundMail.id).where(matching), registered))


def _follow_up() -> ColumnElement[bool]:
    ours = select(OutboxMessage.message_id)
    registered = select(InboundMail.message_id).where(InboundMail.klantcontact_id.is_not(None))
    return (InboundMail.in_reply_to != "") & (
        InboundMail.in_reply_to.in_(ours) | InboundMail.in_reply_to.in_(registered)
    )


def _row(mail: InboundMail, attachments: int) -> dict[str, Any]:
    return {
        "id": mail.id, "uuid": str(mail.uuid), "state": mail.state, "mailbox": mail.mailbox,
        "from": mail.from_address, "fromName": mail.from_name, "subject": mail.subject,
        "receivedAt": mail.received_at, "flags": list(mail.flags), "attachments": attachments,
        "reason": mail.reason,
    }
