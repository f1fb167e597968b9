"""Reprocessing's reads and writes: the selected mails page by page, their stored state, and one mail's new state.

Plain SELECT/UPDATE/DELETE/INSERT statements built once (the ORM's bookkeeping would cost more than the parse).
A write applies only while the mail is still in the state it was read in; else it is read again under a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, delete, func, insert, select, true, update
from sqlalchemy.orm import Session

from ingest.analysis import AnalyseSettings
from ingest.reevaluate import DERIVED_FIELDS, AttachmentRow, Derived, Evaluation, Job, evaluate, normal
from kcc.errors import Refused
from store import audit
from store.blobs import put_blob
from store.mail import Blob, InboundAttachment, InboundMail
from store.states import MailState
from store.uow import UnitOfWork

log = logging.getLogger(__name__)

DECIDED_STATES = (MailState.GEREGISTREERD, MailState.AFGEWEZEN)
"""States whose mail is a record (a klantcontact, or a recorded dismissal): never changed by reprocessing."""
PAGE_SIZE = 500
"""Mail ids read per selection query, so a selection of millions never sits in memory as a whole."""
REPROCESS_ACTOR = "kcc-mail reprocess"


class ReprocessRefused(Refused):
    """The selection asks for something reprocessing must not do; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which stored mails to reprocess. `states` None means every state; decided mails only with `include_decided`.

    `since` is inclusive and `until` exclusive, both on the time the mail was received.
    """

    states: tuple[str, ...] | None = (MailState.QUARANTAINE,)
    reason: str | None = None
    mailbox: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] = ()
    include_decided: bool = False

    def condition(self, *, with_decided: bool | None = None) -> ColumnElement[bool]:
        include = self.include_decided if with_decided is None else with_decided
        parts: list[ColumnElement[bool]] = []
        if self.states is not None:
            parts.append(InboundMail.state.in_(self.states))
        if not include:
            parts.append(InboundMail.state.not_in(DECIDED_STATES))
        if self.reason is not None:
            parts.append(InboundMail.reason == self.reason)
        if self.mailbox is not None:
            parts.append(InboundMail.mailbox == self.mailbox)
        if self.since is not None:
            parts.append(InboundMail.received_at >= self.since)
        if self.until is not None:
            parts.append(InboundMail.received_at < self.until)
        if self.ids:
            parts.append(InboundMail.id.in_(self.ids))
        return and_(true(), *parts)


def check_selection(session: Session, selection: Selection) -> None:
    """Refuse what must not be reprocessed, before anything is changed."""
    unknown = set(selection.states or ()) - set(MailState)
    if unknown:
        raise ReprocessRefused(f"unknown state {sorted(unknown)[0]!r}; choose one of {', '.join(MailState)}")
    if selection.since and selection.until and selection.since >= selection.until:
        raise ReprocessRefused("--since must be before --until; nothing was selected or changed")
    hint = (
        "their klantcontact is a record and is never changed; add --include-registered to refresh only the "
        "parsed fields of the stored mail"
    )
    if not selection.include_decided and set(selection.states or ()) & set(DECIDED_STATES):
        raise ReprocessRefused(f"reprocessing geregistreerd or afgewezen mails is refused: {hint}")
    if selection.ids:
        found = dict(session.execute(
            select(InboundMail.id, InboundMail.state).where(InboundMail.id.in_(selection.ids))
        ).all())
        missing = sorted(set(selection.ids) - set(found))
        if missing:
            raise ReprocessRefused(
                f"no stored mail with id {', '.join(map(str, missing))}; `kcc-mail queue list --state all` lists "
                "them; nothing was changed"
            )
        decided = sorted(i for i, state in found.items() if state in DECIDED_STATES)
        if decided and not selection.include_decided:
            raise ReprocessRefused(
                f"mail {', '.join(map(str, decided))} is geregistreerd or afgewezen, reprocessing is refused: {hint}"
            )


def count(session: Session, condition: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(InboundMail).where(condition)) or 0


def pages(uow_factory: Callable[[], UnitOfWork], selection: Selection) -> Iterator[list[tuple[int, int]]]:
    """(id, size) of the selected mails in id order, a page at a time (keyset: safe while states change)."""
    after = 0
    while True:
        query = (
            select(InboundMail.id, InboundMail.size)
            .where(selection.condition(), InboundMail.id > after)
            .order_by(InboundMail.id)
            .limit(PAGE_SIZE)
        )
        with uow_factory() as uow:
            page = [(int(mail_id), int(size)) for mail_id, size in uow.session.execute(query)]
        if not page:
            return
        yield page
        after = page[-1][0]


_MAIL_COLUMNS = (
    InboundMail.id, InboundMail.raw_sha256, InboundMail.received_at, InboundMail.state, InboundMail.reason,
    InboundMail.error, *(getattr(InboundMail, name) for name in DERIVED_FIELDS),
)
# Built once, with bound parameters: constructing a statement costs more than executing it on SQLite.
_SELECT_MAILS = select(*_MAIL_COLUMNS).where(InboundMail.id.in_(bindparam("ids", expanding=True)))
_SELECT_MAILS_LOCKED = _SELECT_MAILS.with_for_update()
_SELECT_ATTACHMENTS = (
    select(
        InboundAttachment.inbound_mail_id, InboundAttachment.bestandsnaam, InboundAttachment.formaat,
        InboundAttachment.size, InboundAttachment.blob_sha256, InboundAttachment.inline, InboundAttachment.content_id,
    )
    .where(InboundAttachment.inbound_mail_id.in_(bindparam("ids", expanding=True)))
    .order_by(InboundAttachment.inbound_mail_id, InboundAttachment.position)
)
_SELECT_BLOBS = select(Blob.sha256, Blob.data).where(Blob.sha256.in_(bindparam("digests", expanding=True)))
_WRITTEN = ("state", "reason", "error", *DERIVED_FIELDS)
_UPDATE_MAIL = (
    update(InboundMail).where(InboundMail.id == bindparam("mail_id"), InboundMail.state == bindparam("old_state"))
    .values({name: bindparam(f"new_{name}", type_=InboundMail.__table__.c[name].type) for name in _WRITTEN})
)
_DELETE_ATTACHMENTS = delete(InboundAttachment).where(InboundAttachment.inbound_mail_id == bindparam("mail_id"))
_INSERT_ATTACHMENTS = insert(InboundAttachment)


def _stored(session: Session, ids: list[int], *, lock: bool = False) -> dict[int, tuple[str, datetime, Derived]]:
    """(raw sha256, received at, Derived) per mail id, read with plain SELECTs: this runs once per mail.
    With `lock`, the mail rows are locked first, so their attachment rows cannot change under the read."""
    mails = session.execute(_SELECT_MAILS_LOCKED if lock else _SELECT_MAILS, {"ids": ids}).all()
    attachments: dict[int, list[AttachmentRow]] = {}
    for a in session.execute(_SELECT_ATTACHMENTS, {"ids": ids}):
        attachments.setdefault(a.inbound_mail_id, []).append(
            AttachmentRow(a.bestandsnaam, a.formaat, a.size, a.blob_sha256, a.inline, a.content_id)
        )
    found = {}
    for row in mails:
        values = row._mapping
        derived = Derived(
            row.state, row.reason, row.error, {name: normal(values[name]) for name in DERIVED_FIELDS},
            tuple(attachments.get(row.id, ())),
        )
        found[row.id] = (row.raw_sha256, row.received_at, derived)
    return found


def read_jobs(uow: UnitOfWork, ids: list[int]) -> tuple[list[Job], list[int]]:
    """The raw bytes and stored state of these mails, in one short read; also the ids that are gone."""
    with uow:
        session = uow.session
        stored = _stored(session, ids)
        digests = {sha for sha, _, _ in stored.values()}
        blobs = session.execute(_SELECT_BLOBS, {"digests": list(digests)})
        data = {sha: raw for sha, raw in blobs}  # dict(result) would take the Result for a mapping
    jobs = [
        Job(mail_id, data[sha], sha, received_at, derived)
        for mail_id, (sha, received_at, derived) in sorted(stored.items()) if sha in data
    ]
    return jobs, sorted(set(ids) - {job.mail_id for job in jobs})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one mail; `changes` empty and no `error` means it came out identical."""

    mail_id: int
    before: str
    after: str
    changes: tuple[str, ...] = ()
    error: str = ""
    write_failed: bool = False


def apply(
    uow: UnitOfWork, job: Job, evaluation: Evaluation, settings: AnalyseSettings, include_decided: bool
) -> Outcome:
    """Write one mail's new derived fields in its own transaction.

    Optimistic: the UPDATE only applies while the mail is still in the state it was read in (people change
    states; only reprocessing, with the same parser, changes the derived fields). If it is not, the row is
    read again under a lock and decided anew.
    """
    with uow:
        session = uow.session
        before = job.current
        if not _write(session, job.mail_id, before.state, evaluation):
            stored = _stored(session, [job.mail_id], lock=True).get(job.mail_id)
            if stored is None:
                return Outcome(job.mail_id, before.state, before.state,
                               error=f"mail {job.mail_id} was deleted while reprocessing (a purge?); nothing to do")
            before = stored[2]
            if before.state in DECIDED_STATES and not include_decided:
                log.info("mail=%s was decided meanwhile; left as it is", job.mail_id)
                return Outcome(job.mail_id, before.state, before.state)
            evaluation = evaluate(replace(job, current=before), settings)
            if evaluation.problem:
                return Outcome(job.mail_id, before.state, before.state, error=evaluation.problem)
            if evaluation.target is None:
                return Outcome(job.mail_id, before.state, before.state)
            _write(session, job.mail_id, before.state, evaluation)  # locked: it applies
        target = evaluation.target
        assert target is not None
        _audit(session, job.mail_id, before, evaluation)
        uow.commit()
        return Outcome(job.mail_id, before.state, target.state, evaluation.changes)


def _write(session: Session, mail_id: int, state: str, evaluation: Evaluation) -> bool:
    """Plain UPDATE/DELETE/INSERT statements (the ORM's bookkeeping would cost more than the parse): the new
    fields, and the attachment rows when those changed. False, with nothing written, when the mail is no
    longer in `state`."""
    target = evaluation.target
    assert target is not None
    values = {"state": target.state, "reason": target.reason, "error": target.error, **target.fields}
    params = {"mail_id": mail_id, "old_state": state, **{f"new_{name}": values[name] for name in _WRITTEN}}
    if cast(CursorResult[Any], session.execute(_UPDATE_MAIL, params)).rowcount != 1:
        return False
    if "attachments" not in evaluation.changes:
        return True
    session.execute(_DELETE_ATTACHMENTS, {"mail_id": mail_id})
    data = dict(evaluation.blobs)
    for row in target.attachments:
        put_blob(session, data[row.blob_sha256], row.blob_sha256)
    if target.attachments:
        session.execute(_INSERT_ATTACHMENTS, [
            {"inbound_mail_id": mail_id, "position": position, "bestandsnaam": row.bestandsnaam,
             "formaat": row.formaat, "size": row.size, "blob_sha256": row.blob_sha256, "inline": row.inline,
             "content_id": row.content_id}
            for position, row in enumerate(target.attachments)
        ])
    return True


def _audit(session: Session, mail_id: int, before: Derived, evaluation: Evaluation) -> None:
    """A state change, or a change to a decided mail's stored fields, is accounted for; a refresh is not."""
    target = evaluation.target
    assert target is not None
    details: dict[str, Any]
    if before.state == MailState.QUARANTAINE and target.state != MailState.QUARANTAINE:
        action, details = "mail.vrijgegeven", {"via": "reprocess", "reden": before.reason}
    elif before.state in DECIDED_STATES:
        action, details = "mail.herverwerkt", {"via": "reprocess", "velden": list(evaluation.changes)}
    else:
        return
    audit.record(session, REPROCESS_ACTOR, action, "inbound_mail", mail_id, **details)


