"""`kcc-mail status` and the beheer page: the figures behind the health checks, read in one read-only snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from kcc.config import Config
from kcc.monitoring import Backlog, Figures, MailboxFigures, ProcessFigures, Report, dead_after, evaluate
from kcc.usecases.heartbeat import process_is_gone
from store.export import ExportJob
from store.mail import InboundMail, MailboxState, ReconcileResult
from store.monitoring import ServiceHeartbeat
from store.outbox import OutboxMessage
from store.states import ExportStatus, MailState, OutboxStatus, QuarantineReason
from store.types import utcnow
from store.uow import UnitOfWork

WAITING_TO_BE_SENT = (OutboxStatus.PENDING, OutboxStatus.RETRY, OutboxStatus.SENDING)
MAIL_STATES = [state.value for state in MailState]


def check_status(uow: UnitOfWork, config: Config, *, now: datetime | None = None) -> Report:
    """Gather the figures and judge them: the use case behind `kcc-mail status`."""
    figures = gather(uow, config, now=now or utcnow())
    return Report(figures, tuple(evaluate(figures, config)))


def gather(uow: UnitOfWork, config: Config, *, now: datetime) -> Figures:
    """Every figure from one snapshot, without writing anything (the transaction is rolled back)."""
    monitoring = config.monitoring
    with uow:
        session = uow.session
        _read_only_snapshot(session)
        return Figures(
            now=now,
            processes=_processes(session, now - dead_after(monitoring)),
            mailboxes=_mailboxes(session, [m.name for m in config.mailboxes]),
            review=_backlog(
                session, InboundMail.received_at, InboundMail.state == MailState.TE_BEOORDELEN,
                _cutoff(now, monitoring.review_warning_minutes), _cutoff(now, monitoring.review_critical_minutes),
            ),
            outbox=_counts(session, OutboxMessage.status, [s.value for s in OutboxStatus]),
            sending=_backlog(
                session, OutboxMessage.created_at, OutboxMessage.status.in_(WAITING_TO_BE_SENT),
                _cutoff(now, monitoring.outbox_pending_warning_minutes),
                _cutoff(now, monitoring.outbox_pending_critical_minutes),
            ),
            quarantine=_counts(session, InboundMail.reason, [r.value for r in QuarantineReason],
                               InboundMail.state == MailState.QUARANTAINE),
            **_export(session, config, now),
        )


def _export(session: Session, config: Config, now: datetime) -> dict[str, Any]:
    """The export backlog, only when the export is on: switched off, its waiting jobs are no one's problem."""
    if not config.openklant.enabled:
        return {}
    monitoring = config.monitoring
    waiting = ExportJob.status.in_((ExportStatus.PENDING, ExportStatus.RETRY, ExportStatus.SENDING))
    return {
        "export": _counts(session, ExportJob.status, [s.value for s in ExportStatus]),
        "exporting": _backlog(session, ExportJob.created_at, waiting,
                              _cutoff(now, monitoring.export_pending_warning_minutes),
                              _cutoff(now, monitoring.export_pending_critical_minutes)),
    }


def _read_only_snapshot(session: Session) -> None:
    """On PostgreSQL, all queries see one moment and cannot write; SQLite's BEGIN IMMEDIATE already isolates."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})


def _cutoff(now: datetime, minutes: float) -> datetime | None:
    return now - timedelta(minutes=minutes) if minutes else None


def _processes(session: Session, alive_since: datetime) -> tuple[ProcessFigures, ...]:
    rows = session.scalars(select(ServiceHeartbeat).order_by(ServiceHeartbeat.started_at, ServiceHeartbeat.owner))
    return tuple(
        ProcessFigures(
            owner=row.owner, started_at=row.started_at, beat_at=row.beat_at, version=row.version,
            intake=tuple(row.intake), relay=row.relay,
            alive=row.beat_at >= alive_since and not process_is_gone(row.owner),
        )
        for row in rows
    )


def _mailboxes(session: Session, configured: list[str]) -> tuple[MailboxFigures, ...]:
    """The configured mailboxes in their order, then any other mailbox that holds mail (e.g. from an import)."""
    states: dict[str, dict[str, int]] = {}
    for mailbox, state, count in session.execute(
        select(InboundMail.mailbox, InboundMail.state, func.count()).group_by(InboundMail.mailbox, InboundMail.state)
    ):
        states.setdefault(mailbox, dict.fromkeys(MAIL_STATES, 0))[state] = count
    oldest: dict[str, datetime] = {
        mailbox: received for mailbox, received in session.execute(
            select(InboundMail.mailbox, func.min(InboundMail.received_at))
            .where(InboundMail.state == MailState.TE_BEOORDELEN).group_by(InboundMail.mailbox)
        )
    }
    progress = {row.mailbox: row for row in session.scalars(select(MailboxState))}
    reconciled = {row.mailbox: row for row in session.scalars(select(ReconcileResult))}
    names = [*configured, *sorted(set(states) - set(configured))]
    figures = []
    for name in names:
        row, check = progress.get(name), reconciled.get(name)
        figures.append(MailboxFigures(
            name=name, configured=name in configured,
            last_poll_at=row.last_poll_at if row else None, last_success_at=row.last_success_at if row else None,
            last_error=row.last_error if row else "", states=states.get(name, dict.fromkeys(MAIL_STATES, 0)),
            oldest_waiting_at=oldest.get(name), reconciled_at=check.ran_at if check else None,
            reconcile_lost=check.lost if check else 0, reconcile_summary=check.summary if check else "",
        ))
    return tuple(figures)


def _backlog(
    session: Session, moment: Any, waiting: Any, warning: datetime | None, critical: datetime | None
) -> Backlog:
    """Count the waiting rows, the oldest `moment`, and how many are older than each cutoff, in one query."""

    def older_than(cutoff: datetime | None) -> Any:
        return func.coalesce(func.sum(case((moment < cutoff, 1), else_=0)), 0) if cutoff else 0

    count, oldest, over_warning, over_critical = session.execute(
        select(func.count(), func.min(moment), older_than(warning), older_than(critical)).where(waiting)
    ).one()
    return Backlog(count, oldest, int(over_warning or 0), int(over_critical or 0))


def _counts(session: Session, column: Any, keys: Sequence[str], *where: Any) -> dict[str, int]:
    counts = dict.fromkeys(keys, 0)
    for key, count in session.execute(select(column, func.count()).where(*where).group_by(column)):
        counts[key] = count
    return counts


