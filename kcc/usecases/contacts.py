"""Klantcontacten as registered (F8618): listed newest first, or one in full with everything attached."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kcc.errors import NotFound
from kcc.records.api_json import klantcontact_json
from store.klantinteracties import Klantcontact
from store.uow import UnitOfWork


class ContactNotFound(NotFound):
    """No klantcontact has that id."""


def list_contacts(uow: UnitOfWork, *, limit: int = 100) -> list[dict[str, Any]]:
    with uow:
        query = select(Klantcontact).order_by(Klantcontact.plaatsgevonden_op.desc(), Klantcontact.id.desc())
        return [klantcontact_json(uow.session, c, embed=False) for c in uow.session.scalars(query.limit(limit))]


def show_contact(uow: UnitOfWork, contact_id: int) -> dict[str, Any]:
    with uow:
        contact = uow.session.get(Klantcontact, contact_id)
        if contact is None:
            raise ContactNotFound(f"no klantcontact with id {contact_id}; `kcc-mail contacts list` lists them")
        return klantcontact_json(uow.session, contact, embed=True)
