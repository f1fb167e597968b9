"""Monitoring: is kcc-mail healthy? The figures, read in one read-only transaction, judged against [monitoring].

`check_status` gathers what an operator (or Nagios/Icinga) needs: which service processes are alive (their
heartbeats), per mailbox the last successful poll and the last error, the review queue, the outbox and the
quarantine. `evaluate` turns those figures into checks of level ok, warning or critical; the worst level is the exit
code of `kcc-mail status`. The heartbeat itself is written by the running service through `beat`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from kcc.config import Config, MonitoringConfig
from store.mail import MAIL_STATE, QUARANTINE_REASON, InboundMail, MailboxState
from store.monitoring import ServiceHeartbeat
from store.outbox import OUTBOX_STATUS, OutboxMessage
from store.types import utcnow
from store.uow import UnitOfWork

WAITING_TO_BE_SENT = ("pending", "retry", "sending")
DEAD_AFTER_BEATS = 6  # without a heartbeat threshold, a process this many intervals silent is shown as dead


class Level(IntEnum):
    """A check's outcome; the value is the Nagios plugin exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    message: str


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """One heartbeat row, and whether it is recent enough to count as alive."""

    owner: str
    started_at: datetime
    beat_at: datetime
    version: str
    intake: tuple[str, ...]
    relay: bool
    alive: bool

    @property
    def name(self) -> str:
        """host:pid, without the random token: what an operator looks for in `ps` or the journal."""
        return self.owner.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class MailboxFigures:
    name: str
    configured: bool
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str = ""
    states: dict[str, int] = field(default_factory=dict)
    oldest_waiting_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Items waiting (for review, or to be sent): how many, the oldest, and how many are over each threshold."""

    waiting: int = 0
    oldest_at: datetime | None = None
    over_warning: int = 0
    over_critical: int = 0


@dataclass(frozen=True, slots=True)
class Figures:
    now: datetime
    processes: tuple[ProcessFigures, ...]
    mailboxes: tuple[MailboxFigures, ...]
    review: Backlog
    outbox: dict[str, int]
    sending: Backlog
    quarantine: dict[str, int]


@dataclass(frozen=True, slots=True)
class Report:
    figures: Figures | None
    checks: tuple[Check, ...]

    @property
    def level(self) -> Level:
        return max((check.level for check in self.checks), default=Level.OK)

    def summary(self) -> str:
        """The Nagios-style first line: the problems, worst first; when there are none, the main figures."""
        problems = sorted((c for c in self.checks if c.level > Level.OK), key=lambda c: -c.level)
        shown = problems or [c for c in self.checks if c.name in ("service", "review", "outbox")]
        return f"KCC-MAIL {self.level.name} - " + "; ".join(c.message for c in shown)


# --- gathering ---------------------------------------------------------------------------------------------------


def check_status(uow: UnitOfWork, config: Config, *, now: datetime | None = None) -> Report:
    """Gather the figures and judge them: the use case behind `kcc-mail status`."""
    figures = gather(uow, config, now=now or utcnow())
    return Report(figures, tuple(evaluate(figures, config)))


def failed_report(what: str, problem: str) -> Report:
    """A report for when the figures cannot be read at all (no database, old schema, bad configuration)."""
    return Report(None, (Check(what, Level.CRITICAL, problem),))


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
                session, InboundMail.received_at, InboundMail.state == "te_beoordelen",
                _cutoff(now, monitoring.review_warning_minutes), _cutoff(now, monitoring.review_critical_minutes),
            ),
            outbox=_counts(session, OutboxMessage.status, OUTBOX_STATUS),
            sending=_backlog(
                session, OutboxMessage.created_at, OutboxMessage.status.in_(WAITING_TO_BE_SENT),
                _cutoff(now, monitoring.outbox_pending_warning_minutes),
                _cutoff(now, monitoring.outbox_pending_critical_minutes),
            ),
            quarantine=_counts(session, InboundMail.reason, QUARANTINE_REASON, InboundMail.state == "quarantaine"),
        )


def dead_after(monitoring: MonitoringConfig) -> timedelta:
    """How old a heartbeat may be before its process counts as dead."""
    seconds = monitoring.heartbeat_critical_seconds or DEAD_AFTER_BEATS * monitoring.heartbeat_interval
    return timedelta(seconds=seconds)


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
            intake=tuple(row.intake), relay=row.relay, alive=row.beat_at >= alive_since,
        )
        for row in rows
    )


def _mailboxes(session: Session, configured: list[str]) -> tuple[MailboxFigures, ...]:
    """The configured mailboxes in their order, then any other mailbox that holds mail (e.g. from an import)."""
    states: dict[str, dict[str, int]] = {}
    for mailbox, state, count in session.execute(
        select(InboundMail.mailbox, InboundMail.state, func.count()).group_by(InboundMail.mailbox, InboundMail.state)
    ):
        states.setdefault(mailbox, dict.fromkeys(MAIL_STATE, 0))[state] = count
    oldest: dict[str, datetime] = {
        mailbox: received for mailbox, received in session.execute(
            select(InboundMail.mailbox, func.min(InboundMail.received_at))
            .where(InboundMail.state == "te_beoordelen").group_by(InboundMail.mailbox)
        )
    }
    progress = {row.mailbox: row for row in session.scalars(select(MailboxState))}
    names = [*configured, *sorted(set(states) - set(configured))]
    figures = []
    for name in names:
        row = progress.get(name)
        figures.append(MailboxFigures(
            name=name, configured=name in configured,
            last_poll_at=row.last_poll_at if row else None, last_success_at=row.last_success_at if row else None,
            last_error=row.last_error if row else "", states=states.get(name, dict.fromkeys(MAIL_STATE, 0)),
            oldest_waiting_at=oldest.get(name),
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


# --- judging -----------------------------------------------------------------------------------------------------


def evaluate(figures: Figures, config: Config) -> list[Check]:
    """Every check, in the order an operator reads them; pure, so each threshold is easy to test."""
    monitoring = config.monitoring
    checks = service_checks(figures, config) if monitoring.heartbeat_critical_seconds else []
    checks += [poll_check(m, figures.now, monitoring) for m in figures.mailboxes if m.configured and (
        monitoring.poll_warning_minutes or monitoring.poll_critical_minutes)]
    checks.append(backlog_check(
        "review", figures.review, figures.now, monitoring.review_warning_minutes,
        monitoring.review_critical_minutes, ("mail", "mails"), "waiting for review",
    ))
    checks.append(backlog_check(
        "outbox", figures.sending, figures.now, monitoring.outbox_pending_warning_minutes,
        monitoring.outbox_pending_critical_minutes, ("reply", "replies"), "waiting to be sent",
    ))
    checks.append(count_check(
        "uncertain", figures.outbox["uncertain"], monitoring.uncertain_warning,
        ("reply", "replies"), "uncertain: check, then `kcc-mail outbox resend` or `mark-sent`",
    ))
    if monitoring.failed_warning:
        checks.append(count_check(
            "failed", figures.outbox["failed"], monitoring.failed_warning, ("reply", "replies"), "failed",
        ))
    checks.append(quarantine_check(figures.quarantine, monitoring.quarantine_warning))
    return checks


def service_checks(figures: Figures, config: Config) -> list[Check]:
    """Alive, died (a heartbeat row left behind) or not running (no row: never started, or stopped cleanly)."""
    alive = [p for p in figures.processes if p.alive]
    dead = [p for p in figures.processes if not p.alive]
    if not alive:
        if dead:
            last = max(dead, key=lambda p: p.beat_at)
            return [Check("service", Level.CRITICAL, (
                f"service not running: process {last.name} died (last heartbeat "
                f"{ago(figures.now, last.beat_at)} ago)"
            ))]
        return [Check("service", Level.CRITICAL, "service not running (never started, or stopped cleanly)")]
    checks = [Check("service", Level.OK, "service running: " + ", ".join(
        f"{p.name} ({_parts(p)}, heartbeat {ago(figures.now, p.beat_at)} ago)" for p in alive
    ))]
    polled = {name for p in alive for name in p.intake}
    for mailbox in config.mailboxes:
        if mailbox.name not in polled:
            checks.append(Check("service", Level.WARNING, f"no running process polls mailbox {mailbox.name}"))
    if not any(p.relay for p in alive):
        checks.append(Check("service", Level.WARNING, "no running process sends replies (relay)"))
    checks += [
        Check("service", Level.WARNING, f"process {p.name} died (last heartbeat {ago(figures.now, p.beat_at)} ago)")
        for p in dead
    ]
    return checks


def poll_check(mailbox: MailboxFigures, now: datetime, monitoring: MonitoringConfig) -> Check:
    """Judged by the time since the last *successful* poll, so one failed poll between good ones is no alarm."""
    name = f"mailbox {mailbox.name}"
    error = f"; last poll failed: {_one_line(mailbox.last_error)}" if mailbox.last_error else ""
    if mailbox.last_success_at is None:
        level = Level.CRITICAL if monitoring.poll_critical_minutes else Level.WARNING
        return Check(name, level, f"{name}: never polled successfully{error}")
    age = now - mailbox.last_success_at
    level = _level(age, monitoring.poll_warning_minutes, monitoring.poll_critical_minutes)
    return Check(name, level, f"{name}: last successful poll {ago(now, mailbox.last_success_at)} ago{error}")


def backlog_check(
    name: str, backlog: Backlog, now: datetime, warning: float, critical: float, nouns: tuple[str, str], what: str,
) -> Check:
    if backlog.over_critical:
        return Check(name, Level.CRITICAL, f"{_n(backlog.over_critical, nouns)} {what} longer than {critical:g} min"
                     f"{_oldest(backlog, now)}")
    if backlog.over_warning:
        return Check(name, Level.WARNING, f"{_n(backlog.over_warning, nouns)} {what} longer than {warning:g} min"
                     f"{_oldest(backlog, now)}")
    return Check(name, Level.OK, f"{_n(backlog.waiting, nouns)} {what}{_oldest(backlog, now)}")


def count_check(name: str, count: int, warning: int, nouns: tuple[str, str], what: str) -> Check:
    level = Level.WARNING if warning and count >= warning else Level.OK
    return Check(name, level, f"{_n(count, nouns)} {what}" if count else f"no {nouns[1]} {what.split(':')[0]}")


def quarantine_check(counts: dict[str, int], warning: int) -> Check:
    total = sum(counts.values())
    if not total:
        return Check("quarantine", Level.OK, "no mails in quarantine")
    level = Level.WARNING if warning and total >= warning else Level.OK
    reasons = ", ".join(f"{reason} {count}" for reason, count in counts.items() if count)
    return Check("quarantine", level, f"{_n(total, ('mail', 'mails'))} in quarantine ({reasons})")


def _level(age: timedelta, warning_minutes: float, critical_minutes: float) -> Level:
    if critical_minutes and age > timedelta(minutes=critical_minutes):
        return Level.CRITICAL
    if warning_minutes and age > timedelta(minutes=warning_minutes):
        return Level.WARNING
    return Level.OK


def _parts(process: ProcessFigures) -> str:
    parts = [f"intake {' '.join(process.intake)}"] if process.intake else []
    return "; ".join([*parts, "relay"] if process.relay else parts) or "nothing"


def _oldest(backlog: Backlog, now: datetime) -> str:
    return f" (oldest {ago(now, backlog.oldest_at)})" if backlog.oldest_at is not None else ""


def _n(count: int, nouns: tuple[str, str]) -> str:
    return f"{count} {nouns[0] if count == 1 else nouns[1]}"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ago(now: datetime, then: datetime) -> str:
    """A duration an operator reads at a glance: 40 s, 12 min, 5 h 3 min, 2 d 4 h."""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


# --- the heartbeat the running service writes ----------------------------------------------------------------------


def kcc_version() -> str:
    """The installed version, shown per process so a half-finished upgrade is visible."""
    try:
        return importlib.metadata.version("kcc-mail")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Who this process is and what it runs, written to `service_heartbeat` every `heartbeat_interval`."""

    owner: str
    started_at: datetime
    intake: tuple[str, ...]
    relay: bool
    version: str = field(default_factory=kcc_version)


def beat(uow: UnitOfWork, heartbeat: Heartbeat, *, now: datetime | None = None) -> None:
    """Insert or renew this process's row; only this process writes it, so a read-then-write is safe."""
    with uow:
        row = uow.session.get(ServiceHeartbeat, heartbeat.owner)
        if row is None:
            row = ServiceHeartbeat(
                owner=heartbeat.owner, started_at=heartbeat.started_at, version=heartbeat.version,
                intake=list(heartbeat.intake), relay=heartbeat.relay,
            )
            uow.session.add(row)
        row.beat_at = now or utcnow()
        uow.commit()


def forget_dead(uow: UnitOfWork, monitoring: MonitoringConfig, *, now: datetime | None = None) -> list[str]:
    """At start: remove rows of processes that died earlier, so a restart after a crash is healthy again.

    Returns their owners, for the log. A live process's row is never older than the threshold, so it stays.
    """
    cutoff = (now or utcnow()) - dead_after(monitoring)
    with uow:
        owners = list(uow.session.scalars(select(ServiceHeartbeat.owner).where(ServiceHeartbeat.beat_at < cutoff)))
        if owners:
            uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner.in_(owners)))
            uow.commit()
    return owners


def remove_heartbeat(uow: UnitOfWork, owner: str) -> None:
    """A clean stop: no row means "not running" rather than "died"."""
    with uow:
        uow.session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.owner == owner))
        uow.commit()


# --- JSON --------------------------------------------------------------------------------------------------------


def report_json(report: Report) -> dict[str, Any]:
    """The machine-readable status; times are ISO 8601 in UTC, ages in whole seconds."""
    data: dict[str, Any] = {
        "status": report.level.label,
        "exitCode": int(report.level),
        "summary": report.summary(),
        "checks": [{"name": c.name, "level": c.level.label, "message": c.message} for c in report.checks],
    }
    figures = report.figures
    if figures is None:
        return data
    data["checkedAt"] = _iso(figures.now)
    data["processes"] = [_process_json(p, figures.now) for p in figures.processes]
    data["mailboxes"] = [_mailbox_json(m, figures.now) for m in figures.mailboxes]
    data["review"] = _backlog_json(figures.review, figures.now)
    data["outbox"] = {"counts": figures.outbox, **_backlog_json(figures.sending, figures.now)}
    data["quarantine"] = figures.quarantine
    return data


def _process_json(process: ProcessFigures, now: datetime) -> dict[str, Any]:
    return {
        "owner": process.owner, "alive": process.alive, "startedAt": _iso(process.started_at),
        "beatAt": _iso(process.beat_at), "beatAgeSeconds": _seconds(now, process.beat_at),
        "version": process.version, "intake": list(process.intake), "relay": process.relay,
    }


def _mailbox_json(mailbox: MailboxFigures, now: datetime) -> dict[str, Any]:
    return {
        "name": mailbox.name, "configured": mailbox.configured, "lastPollAt": _iso(mailbox.last_poll_at),
        "lastSuccessAt": _iso(mailbox.last_success_at), "lastSuccessAgeSeconds": _seconds(now, mailbox.last_success_at),
        "lastError": mailbox.last_error, "states": mailbox.states, "oldestWaitingAt": _iso(mailbox.oldest_waiting_at),
        "oldestWaitingAgeSeconds": _seconds(now, mailbox.oldest_waiting_at),
    }


def _backlog_json(backlog: Backlog, now: datetime) -> dict[str, Any]:
    return {
        "waiting": backlog.waiting, "oldestAt": _iso(backlog.oldest_at),
        "oldestAgeSeconds": _seconds(now, backlog.oldest_at), "overWarning": backlog.over_warning,
        "overCritical": backlog.over_critical,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _seconds(now: datetime, then: datetime | None) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds()))


def perfdata(report: Report, monitoring: MonitoringConfig) -> str:
    """Nagios performance data (label=value[unit];warn;crit), so the figures can be graphed."""
    figures = report.figures
    if figures is None:
        return ""

    def limit(value: float) -> str:
        return f"{value:g}" if value else ""

    def minutes(value: float) -> str:
        return limit(value * 60)

    items: list[str] = [f"processes={sum(p.alive for p in figures.processes)}"]
    items += [
        f"poll_age_{m.name}={_seconds(figures.now, m.last_success_at)}s;{minutes(monitoring.poll_warning_minutes)};"
        f"{minutes(monitoring.poll_critical_minutes)}"
        for m in figures.mailboxes if m.configured and m.last_success_at is not None
    ]
    items += _backlog_perfdata("review", figures.review, figures.now, monitoring.review_warning_minutes,
                               monitoring.review_critical_minutes)
    items += _backlog_perfdata("outbox", figures.sending, figures.now, monitoring.outbox_pending_warning_minutes,
                               monitoring.outbox_pending_critical_minutes)
    items.append(f"uncertain={figures.outbox['uncertain']};{limit(monitoring.uncertain_warning)}")
    items.append(f"failed={figures.outbox['failed']};{limit(monitoring.failed_warning)}")
    items.append(f"quarantine={sum(figures.quarantine.values())};{limit(monitoring.quarantine_warning)}")
    return " ".join(items)


def _backlog_perfdata(name: str, backlog: Backlog, now: datetime, warning: float, critical: float) -> Iterable[str]:
    age = _seconds(now, backlog.oldest_at) or 0
    warn, crit = (f"{value * 60:g}" if value else "" for value in (warning, critical))
    return [f"{name}_waiting={backlog.waiting}", f"{name}_oldest={age}s;{warn};{crit}"]
