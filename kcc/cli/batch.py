"""Batch commands: reprocess stored mails, import mail files, work the quarantine, purge old personal data.

Long runs show a rich progress bar when stdout is a terminal and plain progress lines (on stderr) otherwise,
so cron and CI logs stay readable; the closing summary goes to stdout, as one line or as `--json`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kcc.bootstrap import analyse_settings
from kcc.cli.common import AS_OPTION, ID, Context, echo_json
from kcc.cli.output import cut, refuse_existing, safe, write_export
from kcc.records.actor import medewerker
from kcc.usecases.mail_files import raw_mail
from kcc.usecases.mail_import import FORMATS, ImportInterrupted, ImportSummary, import_path
from kcc.usecases.purge import PURGE_ACTOR, PURGEABLE_STATES, purge
from kcc.usecases.quarantine import (
    dismiss_quarantined,
    list_quarantine,
    release,
    show_quarantined,
)
from kcc.usecases.reprocess import Outcome, ReprocessInterrupted, ReprocessSummary, Selection, reprocess
from kcc.usecases.retention import purge_registered
from store.states import DismissReason, MailState, QuarantineReason

MAIL_STATES = [state.value for state in MailState]
RETENTION_STATES = [state.value for state in (*PURGEABLE_STATES, MailState.GEREGISTREERD)]
QUARANTINE_REASONS = [reason.value for reason in QuarantineReason]
DISMISS_REASONS = [reason.value for reason in DismissReason]


JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
WORKERS = click.option(
    "--workers", type=click.IntRange(min=1), help="Parser processes (default: one per core; 1 = no pool)."
)
PLAIN_EVERY_ITEMS = 100
PLAIN_EVERY_SECONDS = 5.0
MAX_LISTED = 50
MAX_SKIPPED_LISTED = 10
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------------------------------ helpers


class Moment(click.ParamType[datetime, Any]):
    """An ISO date or date-time; without a zone it is local time. As an end, a bare date includes that day."""

    name = "moment"

    def __init__(self, *, end: bool = False) -> None:
        self.end = end

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime.combine(day + timedelta(days=1 if self.end else 0), day_time())
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not a date (2026-11-23) or date-time (2026-11-23T08:15, 2026-11-23 08:15+01:00)")
        return moment if moment.tzinfo is not None else moment.astimezone()


class Reporter:
    """Progress of one batch run: a rich bar on a terminal, plain log lines otherwise."""

    def __init__(self, label: str, noun: str) -> None:
        self.label = label
        self.noun = noun
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.total: int | None = None
        self._last_line = (0, time.monotonic())

    def start(self, total: int | None) -> None:
        self.total = total
        if sys.stdout.isatty():
            self.bar = Progress(
                TextColumn(f"{self.label}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[counts]}"), console=Console(stderr=True), transient=False,
            )
            self.task = self.bar.add_task(self.label, total=total, counts="")
            self.bar.start()
        else:
            click.echo(f"{self.label}: {total if total is not None else 'an unknown number of'} {self.noun}", err=True)

    def update(self, done: int, counts: str, short: str) -> None:
        """`counts` for a log line, `short` beside the bar (a terminal is narrow)."""
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, counts=short)
            return
        items, at = self._last_line
        now = time.monotonic()
        if done - items >= PLAIN_EVERY_ITEMS or now - at >= PLAIN_EVERY_SECONDS:
            self._last_line = (done, now)
            of = f"/{self.total}" if self.total is not None else ""
            click.echo(f"{self.label}: {done}{of} {counts}", err=True)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextmanager
def reporting(label: str, noun: str) -> Iterator[Reporter]:
    reporter = Reporter(label, noun)
    try:
        yield reporter
    finally:
        reporter.close()


def echo_failures(failures: list[tuple[Any, str]], total: int, what: str) -> None:
    for key, error in failures[:MAX_LISTED]:
        click.echo(f"kcc-mail: {what} {safe(key)}: {safe(error)}", err=True)
    if total > MAX_LISTED:
        click.echo(f"kcc-mail: … and {total - MAX_LISTED} more errors (--json lists up to 1000)", err=True)


# ---------------------------------------------------------------------------------------------- reprocess


@click.command("reprocess")
@click.option("--state", type=click.Choice(MAIL_STATES), help="Mails in this state [default: quarantaine].")
@click.option("--reason", type=click.Choice(QUARANTINE_REASONS), help="Only quarantined mails with this reason.")
@click.option("--mailbox", "mailbox_name", help="Only mails of this mailbox.")
@click.option("--since", type=Moment(), help="Received at or after (ISO date or date-time, local time).")
@click.option("--until", type=Moment(end=True), help="Received before; a bare date includes that day.")
@click.option("--id", "ids", type=ID, multiple=True, help="This mail (repeatable); any state unless --state.")
@click.option("--all", "all_states", is_flag=True, help="Every mail that may be reprocessed, whatever its state.")
@click.option(
    "--include-registered", is_flag=True,
    help="Also geregistreerd/afgewezen mails: refreshes only their parsed fields, never the klantcontact.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@WORKERS
@JSON
@click.pass_obj
def reprocess_command(
    context: Context, state: str | None, reason: str | None, mailbox_name: str | None, since: datetime | None,
    until: datetime | None, ids: tuple[int, ...], all_states: bool, include_registered: bool, dry_run: bool,
    workers: int | None, as_json: bool,
) -> None:
    """Parse stored mails again with the current parser (never re-fetched): quarantined mails that now parse
    go to the review queue, mails under review get fresh fields. Safe to interrupt and to run again.

    Summary: reparsed counts every mail parsed again; released, still_quarantined and unchanged are parts of it.
    """
    if all_states and state:
        raise click.UsageError("--all and --state exclude each other: --all means every state")
    states: tuple[str, ...] | None = (state,) if state else None if (all_states or ids) else ("quarantaine",)
    selection = Selection(
        states=states, reason=reason, mailbox=mailbox_name, since=since, until=until, ids=ids,
        include_decided=include_registered,
    )
    app = context.app()
    with reporting("reprocess", "mail(s) selected") as reporter:

        def progress(outcome: Outcome, summary: ReprocessSummary) -> None:
            if outcome.error:
                reporter.note(f"kcc-mail: mail {outcome.mail_id}: {outcome.error}")
            short = f"released={summary.released} unchanged={summary.unchanged} errors={summary.errors}"
            reporter.update(summary.reparsed + summary.errors, summary.line(), short)

        try:
            summary = reprocess(
                app.uow, selection, analyse_settings(app.config), dry_run=dry_run, workers=workers,
                progress=progress, on_start=reporter.start,
            )
        except ReprocessInterrupted as stopped:
            reporter.close()
            click.echo(f"{stopped.summary.line()} (interrupted)")
            click.echo(f"kcc-mail: {stopped}", err=True)
            sys.exit(EXIT_INTERRUPTED)
    _report_reprocess(summary, as_json)


def _report_reprocess(summary: ReprocessSummary, as_json: bool) -> None:
    if as_json:
        echo_json(summary.as_json())
    else:
        for outcome in summary.changes:
            move = f"{outcome.before} → {outcome.after}" if outcome.before != outcome.after else outcome.after
            click.echo(f"mail {outcome.mail_id}: {move}, would change {', '.join(outcome.changes)}")
        if summary.dry_run and summary.changed > len(summary.changes):
            click.echo(f"… and {summary.changed - len(summary.changes)} more mails would change")
        click.echo(summary.line())
        echo_failures(summary.failures, summary.errors, "mail")
    if summary.decided_left_out:
        click.echo(
            f"kcc-mail: {summary.decided_left_out} geregistreerd or afgewezen mail(s) left as they are; "
            "--include-registered refreshes their parsed fields (never the klantcontact)", err=True,
        )
    if summary.dry_run:
        click.echo("kcc-mail: dry run: nothing was changed", err=True)
    if summary.errors:
        sys.exit(1)


# ------------------------------------------------------------------------------------------------- import


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--mailbox", "mailbox_name", required=True, help="The configured mailbox whose queue gets the mails.")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
    help="mbox means mboxrd (>From lines unquoted by one >); mboxo unquotes only >From.",
)
@click.option("--dry-run", is_flag=True, help="Read and parse, count what would be stored; store nothing.")
@WORKERS
@JSON
@click.pass_obj
def import_command(
    context: Context, path: Path, mailbox_name: str, fmt: str, dry_run: bool, workers: int | None, as_json: bool
) -> None:
    """Import an mbox file, a Maildir or a folder of .eml files into a mailbox's review queue, as intake would
    (same storage, parsing and quarantine). Mails stored before are skipped, so importing twice adds nothing."""
    app = context.app()
    mailbox = app.config.mailbox(mailbox_name).name
    with reporting("import", "file(s) or mails to read") as reporter:

        def progress(summary: ImportSummary) -> None:
            stored = summary.stored + summary.quarantined
            short = f"stored={stored} duplicates={summary.duplicates} errors={summary.errors}"
            reporter.update(summary.entries, summary.line(), short)

        try:
            summary = import_path(
                app.uow, path, mailbox, analyse_settings(app.config), fmt=fmt, dry_run=dry_run, workers=workers,
                progress=progress, on_start=reporter.start,
            )
        except ImportInterrupted as stopped:
            reporter.close()
            click.echo(f"{stopped.summary.line()} (interrupted)")
            click.echo(f"kcc-mail: {stopped}", err=True)
            sys.exit(EXIT_INTERRUPTED)
    if as_json:
        echo_json(summary.as_json())
    else:
        click.echo(summary.line())
        echo_failures(summary.failures, summary.errors, "file")
        for key, why in summary.skipped_names[:MAX_SKIPPED_LISTED]:
            click.echo(f"kcc-mail: skipped {safe(key)}: {why}", err=True)
        if summary.skipped > MAX_SKIPPED_LISTED:
            click.echo(f"kcc-mail: … and {summary.skipped - MAX_SKIPPED_LISTED} more skipped (--json lists them)",
                       err=True)
    if dry_run:
        click.echo("kcc-mail: dry run: nothing was stored", err=True)
    if summary.errors:
        sys.exit(1)


# --------------------------------------------------------------------------------------------- quarantine


@click.group()
def quarantine() -> None:
    """Mails the parser could not handle: list, inspect, export for a bug report, release or dismiss."""


@quarantine.command("list")
@click.option("--reason", type=click.Choice(QUARANTINE_REASONS), help="Only this reason.")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox.")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True, help="At most this many mails.")
@JSON
@click.pass_obj
def quarantine_list(context: Context, reason: str | None, mailbox_name: str | None, limit: int, as_json: bool) -> None:
    """Counts per reason, then the quarantined mails, oldest first."""
    found = list_quarantine(context.app().uow(), reason=reason, mailbox=mailbox_name, limit=limit)
    if as_json:
        echo_json(found)
        return
    for count in found["counts"]:
        click.echo(f"{count['reason']:<16}{count['mails']:>6}")
    click.echo(f"{'total':<16}{found['total']:>6}")
    if found["mails"]:
        click.echo("")
        click.echo(f"{'ID':>6}  {'ONTVANGEN':<16}  {'REDEN':<15} {'VAN':<30}  ONDERWERP")
    for mail in found["mails"]:
        click.echo(
            f"{mail['id']:>6}  {mail['receivedAt'][:16]}  {mail['reason']:<15} {cut(mail['from'], 30)}  "
            f"{cut(mail['subject'], 60, pad=False)}"
        )
    if len(found["mails"]) < found["total"]:
        click.echo(f"kcc-mail: {found['total'] - len(found['mails'])} more; raise --limit to see them", err=True)


@quarantine.command("show")
@click.argument("mail_id", type=ID)
@JSON
@click.pass_obj
def quarantine_show(context: Context, mail_id: int, as_json: bool) -> None:
    """The error and the raw headers of one mail."""
    mail = show_quarantined(context.app().uow(), mail_id)
    if as_json:
        echo_json(mail)
        return
    click.echo("\n".join([
        f"Mail {mail['id']} ({mail['state']}{', ' + mail['reason'] if mail['reason'] else ''}) in mailbox "
        f"{mail['mailbox']}, received {mail['receivedAt']}, {mail['size']} bytes, sha256 {mail['sha256']}",
        f"Error: {safe(mail['error']) or '-'}",
        "",
        mail["rawHeaders"],
    ]))


@quarantine.command("export")
@click.argument("mail_id", type=ID)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .eml file to write (byte-exact).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.pass_obj
def quarantine_export(context: Context, mail_id: int, out: Path, force: bool) -> None:
    """Write the raw mail byte for byte, for a bug report (it holds personal data: share it with care)."""
    refuse_existing(out, force)
    raw = raw_mail(context.app().uow(), mail_id)
    write_export(out, raw)
    click.echo(f"mail {mail_id} written to {safe(out)} ({len(raw)} bytes)")


@quarantine.command("release")
@click.argument("mail_id", type=ID)
@AS_OPTION
@click.pass_obj
def quarantine_release(context: Context, mail_id: int, as_medewerker: str) -> None:
    """Put the mail in the review queue as it is; registered, its raw mail is its only bijlage."""
    released = release(context.app().uow(), mail_id, medewerker(as_medewerker))
    click.echo(f"mail {released['id']} released into the review queue (was {released['reason']})")


@quarantine.command("dismiss")
@click.argument("mail_id", type=ID)
@click.option("--reason", required=True, type=click.Choice(DISMISS_REASONS))
@AS_OPTION
@click.pass_obj
def quarantine_dismiss(context: Context, mail_id: int, reason: str, as_medewerker: str) -> None:
    """Not a customer contact: recorded as afgewezen, never a klantcontact."""
    dismiss_quarantined(context.app().uow(), mail_id, reason, medewerker(as_medewerker))
    click.echo(f"mail {mail_id} dismissed ({reason})")


# -------------------------------------------------------------------------------------------------- purge


@click.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=0), required=True,
              help="Received (for geregistreerd: the dossier's last contact) more than this many days ago.")
@click.option("--state", type=click.Choice(RETENTION_STATES), required=True,
              help="afgewezen or quarantaine: mails that never became a klantcontact; geregistreerd: closed "
                   "dossiers (a klantcontact with its answer, tasks and follow-ups) whose last contact is older.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--as", "who", envvar="KCC_MEDEWERKER", default=PURGE_ACTOR, show_default=True,
              help="Who runs the purge, for the audit event.")
@JSON
@click.pass_obj
def purge_command(context: Context, days: int, state: str, dry_run: bool, who: str, as_json: bool) -> None:
    """Delete what is past its retention period (AVG), with the blobs nothing else uses; one audit event each run.

    A registered mail goes only with its whole dossier, and only when nothing in it is open (a task to do, a
    reply waiting or uncertain).
    """
    if state == MailState.GEREGISTREERD:
        app = context.app()  # with the export on, a dossier waits until Open Klant has it
        result = purge_registered(app.uow(), older_than_days=days, who=who, dry_run=dry_run,
                                  keep_unexported=app.config.openklant.enabled)
    else:
        result = purge(context.app().uow(), state=state, older_than_days=days, who=who, dry_run=dry_run)
    if as_json:
        echo_json(result.as_json())
        return
    click.echo(f"{'would purge' if dry_run else 'purged'} {result.line()}")
    if dry_run:
        click.echo("kcc-mail: dry run: nothing was deleted", err=True)
