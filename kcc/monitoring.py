"""Is kcc-mail healthy? The figures an operator needs, judged against [monitoring]: pure, no session.

`kcc.usecases.status` gathers the figures in one read-only transaction; `evaluate` turns them into checks of
level ok, warning or critical, the worst of which is the exit code of `kcc-mail status` (a Nagios/Icinga plugin)
and what the web app's beheer page shows. `report_json` and `perfdata` are the machine-readable forms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from kcc.config import Config, MonitoringConfig

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
    reconciled_at: datetime | None = None
    reconcile_lost: int = 0
    reconcile_summary: str = ""


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
    export: dict[str, int] = field(default_factory=dict)
    """Export jobs per status; empty when the export to Open Klant is off."""
    exporting: Backlog = field(default_factory=Backlog)


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


def failed_report(what: str, problem: str) -> Report:
    """A report for when the figures cannot be read at all (no database, old schema, bad configuration)."""
    return Report(None, (Check(what, Level.CRITICAL, problem),))


def dead_after(monitoring: MonitoringConfig) -> timedelta:
    """How old a heartbeat may be before its process counts as dead."""
    seconds = monitoring.heartbeat_critical_seconds or DEAD_AFTER_BEATS * monitoring.heartbeat_interval
    return timedelta(seconds=seconds)


# --- judging ------------------------------------------------------------------------------------------------------


def evaluate(figures: Figures, config: Config) -> list[Check]:
    """Every check, in the order an operator reads them; pure, so each threshold is easy to test."""
    monitoring = config.monitoring
    checks = service_checks(figures, config) if monitoring.heartbeat_critical_seconds else []
    lmtp = {m.name: m for m in config.mailboxes if m.kind == "lmtp"}
    checks += [poll_check(m, figures.now, monitoring) for m in figures.mailboxes if m.configured and (
        monitoring.poll_warning_minutes or monitoring.poll_critical_minutes) and m.name not in lmtp]
    checks += [lmtp_check(m, lmtp[m.name].listen, figures.now) for m in figures.mailboxes if m.name in lmtp]
    checks += [reconcile_check(m, figures.now) for m in figures.mailboxes if m.configured and m.reconciled_at]
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
    if config.openklant.enabled:
        checks.append(backlog_check(
            "export", figures.exporting, figures.now, monitoring.export_pending_warning_minutes,
            monitoring.export_pending_critical_minutes, ("job", "jobs"), "waiting for export to Open Klant",
        ))
        checks.append(count_check(
            "export failed", figures.export.get("failed", 0), monitoring.export_failed_warning,
            ("export job", "export jobs"), "failed: `kcc-mail export list --failed`, then `kcc-mail export retry`",
        ))
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
            does = "listens for LMTP to" if mailbox.kind == "lmtp" else "polls"
            checks.append(Check("service", Level.WARNING, f"no running process {does} mailbox {mailbox.name}"))
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


def lmtp_check(mailbox: MailboxFigures, listen: str, now: datetime) -> Check:
    """An LMTP mailbox waits for the MTA, so a quiet hour is no alarm; a mail the MTA had to keep (451) is."""
    name = f"mailbox {mailbox.name}"
    stored = (f"last mail stored {ago(now, mailbox.last_success_at)} ago" if mailbox.last_success_at
              else "no mail delivered yet")
    if mailbox.last_error:
        return Check(name, Level.WARNING, f"{name}: LMTP on {listen}, {stored}; last delivery deferred: "
                                          f"{_one_line(mailbox.last_error)}")
    return Check(name, Level.OK, f"{name}: LMTP on {listen}, {stored}")


def reconcile_check(mailbox: MailboxFigures, now: datetime) -> Check:
    """A mail on the server that kcc-mail does not have is the loss nobody sees otherwise: critical."""
    name = f"mailbox {mailbox.name}"
    when = ago(now, mailbox.reconciled_at) if mailbox.reconciled_at else "never"
    if mailbox.reconcile_lost:
        return Check(name, Level.CRITICAL, f"{name}: reconciliation {when} ago found {mailbox.reconcile_lost} lost "
                                           f"mail(s): {_one_line(mailbox.reconcile_summary, 400)}")
    return Check(name, Level.OK, f"{name}: reconciled with the server {when} ago, nothing lost")


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
    if figures.export:
        data["export"] = {"counts": figures.export, **_backlog_json(figures.exporting, figures.now)}
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
        "reconciledAt": _iso(mailbox.reconciled_at), "reconcileLost": mailbox.reconcile_lost,
        "reconcileSummary": mailbox.reconcile_summary,
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
    if figures.export:
        items.append(f"export_failed={figures.export.get('failed', 0)};{limit(monitoring.export_failed_warning)}")
    return " ".join(items)


def _backlog_perfdata(name: str, backlog: Backlog, now: datetime, warning: float, critical: float) -> Iterable[str]:
    age = _seconds(now, backlog.oldest_at) or 0
    warn, crit = (f"{value * 60:g}" if value else "" for value in (warning, critical))
    return [f"{name}_waiting={backlog.waiting}", f"{name}_oldest={age}s;{warn};{crit}"]
