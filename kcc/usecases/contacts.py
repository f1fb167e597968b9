"""Klantcontacten as registered (F8618): listed newest first, found by the identifiers people quote, shown."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from kcc.errors import NotFound, Refused
from kcc.records.api_json import klantcontact_json
from kcc.usecases.paging import Page
from kcc.usecases.references import as_id, as_uuid
from store.klantinteracties import Betrokkene, DigitaalAdres, Klantcontact
from store.uow import UnitOfWork


class ContactNotFound(NotFound):
    """No klantcontact has that identifier."""


class AmbiguousReference(Refused):
    """The identifier names two different records (an id and a referentienummer); the uuid names one."""


def list_contacts(
    uow: UnitOfWork, *, zoek: str = "", limit: int | None = 100, offset: int = 0
) -> Page[dict[str, Any]]:
    """Newest first; `zoek` finds a referentienummer exactly, or a word in the onderwerp or an e-mail address."""
    conditions = _search(zoek.strip()) if zoek.strip() else []
    with uow:
        query = select(Klantcontact).where(*conditions).order_by(
            Klantcontact.plaatsgevonden_op.desc(), Klantcontact.id.desc())
        total = uow.session.scalar(select(func.count()).select_from(Klantcontact).where(*conditions)) or 0
        rows = uow.session.scalars(query.offset(offset).limit(limit))
        return Page((klantcontact_json(uow.session, c, embed=False) for c in rows), total=total, offset=offset,
                    limit=limit)


def _search(text: str) -> list[ColumnElement[bool]]:
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    addresses = (
        select(Betrokkene.klantcontact_id).join(DigitaalAdres, DigitaalAdres.betrokkene_id == Betrokkene.id)
        .where(func.lower(DigitaalAdres.adres).like(pattern, escape="\\"))
    )
    return [or_(
        Klantcontact.referentienummer == text,
        func.lower(Klantcontact.onderwerp).like(pattern, escape="\\"),
        Klantcontact.id.in_(addresses),
    )]


def show_contact(uow: UnitOfWork, reference: str | int) -> dict[str, Any]:
    """One klantcontact by its uuid, its referentienummer or its id (see `find_klantcontact`)."""
    with uow:
        return klantcontact_json(uow.session, find_klantcontact(uow.session, reference), embed=True)


def find_klantcontact(session: Session, reference: str | int) -> Klantcontact:
    """The klantcontact a person means: its uuid, its referentienummer (the number the customer quotes, leading
    zeros and all) or its id. A value that is both the referentienummer of one and the id of another is refused."""
    text = str(reference).strip()
    by_uuid = as_uuid(text)
    if by_uuid is not None:
        found = session.scalar(select(Klantcontact).where(Klantcontact.uuid == by_uuid))
        if found is None:
            raise ContactNotFound(f"no klantcontact with uuid {text}; `kcc-mail contacts list` lists them")
        return found
    by_number = session.scalar(select(Klantcontact).where(Klantcontact.referentienummer == text))
    by_id = session.get(Klantcontact, int(text)) if as_id(text) else None
    if by_number is not None and by_id is not None and by_number.id != by_id.id:
        raise AmbiguousReference(
            f"{text} is the referentienummer of klantcontact {by_number.uuid} and the id of klantcontact "
            f"{by_id.uuid}; give the uuid of the one you mean"
        )
    found = by_number or by_id
    if found is None:
        raise ContactNotFound(
            f"no klantcontact with referentienummer or id {text}; `kcc-mail contacts list` lists them"
        )
    return found
