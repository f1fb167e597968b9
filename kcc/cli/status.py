"""`kcc-mail status`: health for people, cron and Nagios/Icinga (exit 0 ok, 1 warning, 2 critical)."""

from __future__ import annotations

import sys
from datetime import datetime

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from kcc.bootstrap import SchemaOutOfDate
from kcc.cli.common import Context, echo_json
from kcc.cli.output import safe
from kcc.config import ConfigError, MonitoringConfig
from kcc.monitoring import (
    Backlog,
    MailboxFigures,
    ProcessFigures,
    Report,
    ago,
    failed_report,
    perfdata,
    report_json,
)
from kcc.usecases.status import check_status


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks and figures as JSON.")
@click.pass_obj
def status(context: Context, as_json: bool) -> None:
    """Is kcc-mail healthy? Service heartbeat, polls, review queue, outbox, quarantine; exit 0, 1 or 2.

    The first line is a Nagios/Icinga plugin line; the thresholds are in [monitoring].
    """
    report, monitoring = build_report(context)
    if as_json:
        echo_json(report_json(report))
    else:
        click.echo(render(report, monitoring))
    sys.exit(int(report.level))


def build_report(context: Context) -> tuple[Report, MonitoringConfig]:
    """The report, or a critical one naming why there are no figures: status must answer, never crash."""
    try:
        config = context.config
    except ConfigError as exc:
        return failed_report("configuration", f"configuration: {exc}"), MonitoringConfig()
    try:
        return check_status(context.app().uow(), config), config.monitoring
    except SchemaOutOfDate as exc:
        return failed_report("database", f"database: {exc}"), config.monitoring
    except (SQLAlchemyError, OSError) as exc:
        problem = f"database {_safe_url(config.database.url)} cannot be reached: {_reason(exc)}"
        return failed_report("database", problem), config.monitoring


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say so without echoing what may hold a password
        return "(unparsable database.url)"


def _reason(exc: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --- the text for people -------------------------------------------------------------------------------------------


def render(report: Report, monitoring: MonitoringConfig) -> str:
    """The Nagios line (with performance data after `|`), then the checks, then the figures behind them."""
    data = perfdata(report, monitoring)
    lines = [report.summary() + (f" | {data}" if data else ""), "", "Checks"]
    lines += [f"  {check.level.name:<9} {check.name:<16} {check.message}" for check in report.checks]
    figures = report.figures
    if figures is None:
        return "\n".join(lines)
    now = figures.now
    lines += ["", "Processes"]
    lines += [_process_line(p, now) for p in figures.processes] or ["  none"]
    lines += ["", "Mailboxes"]
    for mailbox in figures.mailboxes:
        lines += _mailbox_lines(mailbox, now)
    lines += ["", "Review", f"  {_backlog(figures.review, now)}"]
    lines += ["", "Outbox", f"  {_counts(figures.outbox)}", f"  {_backlog(figures.sending, now)}"]
    lines += ["", "Quarantine", f"  {_counts(figures.quarantine)}"]
    return "\n".join(lines)


def _process_line(process: ProcessFigures, now: datetime) -> str:
    runs = [*(f"intake {name}" for name in process.intake), *(["relay"] if process.relay else [])]
    return (
        f"  {process.owner:<32} {'alive' if process.alive else 'DEAD':<5}  started {_when(process.started_at)}  "
        f"heartbeat {ago(now, process.beat_at)} ago  version {process.version}  runs {', '.join(runs) or '-'}"
    )


def _mailbox_lines(mailbox: MailboxFigures, now: datetime) -> list[str]:
    success = (f"{_when(mailbox.last_success_at)} ({ago(now, mailbox.last_success_at)} ago)"
               if mailbox.last_success_at else "never")
    polled = "" if mailbox.configured else " (not configured)"
    oldest = f"; oldest waiting {ago(now, mailbox.oldest_waiting_at)}" if mailbox.oldest_waiting_at else ""
    lines = [
        f"  {mailbox.name}{polled}: last successful poll {success}",
        f"    {_counts(mailbox.states)}{oldest}",
    ]
    if mailbox.last_error:
        lines.insert(1, f"    last poll failed: {safe(' '.join(mailbox.last_error.split())[:300])}")
    return lines


def _backlog(backlog: Backlog, now: datetime) -> str:
    oldest = f"oldest {_when(backlog.oldest_at)} ({ago(now, backlog.oldest_at)} ago)" if backlog.oldest_at else "-"
    return f"waiting {backlog.waiting}, {oldest}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items())


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"
