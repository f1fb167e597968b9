"""Export commands: a round for cron and tests, the backlog, the failed jobs, and the operator's retry."""

from __future__ import annotations

import sys
from typing import Any

import click

from kcc.cli.common import LIMIT_OPTION, OFFSET_OPTION, Context, echo_json, page_limit
from kcc.cli.output import cut, safe
from kcc.usecases.export import backfill, export_status, list_jobs, retry_failed


@click.group(invoke_without_command=True)
@click.option("--once", is_flag=True, help="One round, as `export run --once`.")
@click.option("--backfill", "queue_older", is_flag=True, help="Queue older klantcontacten, as `export backfill`.")
@click.pass_context
def export(context: click.Context, once: bool, queue_older: bool) -> None:
    """Export of the klantcontacten to Open Klant ([openklant]): every decision leaves a job for the exporter."""
    if context.invoked_subcommand is not None:
        if once or queue_older:
            raise click.UsageError("--once and --backfill stand alone: `kcc-mail export --once`, or use the "
                                   "subcommand without them")
    elif once and queue_older:
        raise click.UsageError("choose one: `kcc-mail export --backfill`, then `kcc-mail export --once`")
    elif queue_older:
        context.invoke(export_backfill)
    elif once:
        context.invoke(export_run, once=True)
    else:
        click.echo(context.get_help())


@export.command("run")
@click.option("--once", is_flag=True,
              help="Export what is due, print `exported=N retry=N failed=N changes=N`, exit (1 if any failed).")
@click.pass_obj
def export_run(context: Context, once: bool) -> None:
    """One round of the exporter (`kcc-mail run` runs it continuously when [openklant] is enabled)."""
    if not once:
        raise click.UsageError("`kcc-mail export run` needs --once; `kcc-mail run` exports continuously")
    summary = context.app().exporter().run_once()
    click.echo(str(summary))
    if summary.failed:
        click.echo("some klantcontacten were refused: `kcc-mail export list --failed` shows why", err=True)
        sys.exit(1)


@export.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def export_status_command(context: Context, as_json: bool) -> None:
    """Jobs per status, and since when the oldest unfinished one waits."""
    app = context.app()
    status = export_status(app.uow())
    if as_json:
        echo_json({"enabled": app.config.openklant.enabled, **status})
        return
    jobs = status["jobs"]
    state = "on" if app.config.openklant.enabled else "off ([openklant] enabled = false; jobs wait)"
    click.echo(f"export to Open Klant: {state}")
    click.echo(" ".join(f"{name}={count}" for name, count in jobs.items()))
    if status["oldestUnfinishedAt"]:
        click.echo(f"oldest unfinished job since {status['oldestUnfinishedAt'][:19]} UTC")


@export.command("list")
@click.option("--status", default="all", show_default=True, help="pending, sending, retry, done, failed, or all.")
@click.option("--failed", is_flag=True, help="Only the failed jobs (the same as --status failed).")
@LIMIT_OPTION
@OFFSET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def export_list(context: Context, status: str, failed: bool, limit: int | None, offset: int, as_json: bool) -> None:
    """Export jobs, oldest first, with the register's last answer."""
    wanted = "failed" if failed else None if status == "all" else status
    rows = list_jobs(context.app().uow(), status=wanted, limit=page_limit(limit, as_json), offset=offset)
    if as_json:
        echo_json(rows)
    else:
        click.echo(f"{'ID':>6}  {'KLANTCONTACT':<12}  {'REDEN':<24}  {'STATUS':<7}  {'POG':>3}  "
                   f"{'VOLGENDE POGING':<16}  LAATSTE FOUT")
        for row in rows:
            click.echo(render_row(row))
    click.echo(rows.note("jobs"), err=True)


def render_row(row: dict[str, Any]) -> str:
    due = row["nextAttemptAt"][:16] if row["status"] in ("pending", "retry") else "-"
    return (f"{row['id']:>6}  {row['referentienummer']:<12}  {cut(row['reden'], 24)}  {row['status']:<7}  "
            f"{row['attempts']:>2}x  {due:<16}  {safe(row['lastError'])}").rstrip()


@export.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as a JSON array.")
@click.option("--repair", is_flag=True,
              help="Queue each klantcontact that differs, so the exporter makes the register hold kcc-mail's record "
                   "again (gone records made again, changed ones sent whole).")
@click.pass_obj
def export_verify(context: Context, as_json: bool, repair: bool) -> None:
    """Compare every exported klantcontact with Open Klant (and its documents): exit 1 on any difference."""
    found = context.app().exporter().verify(repair=repair)
    if as_json:
        echo_json(found)
    else:
        for line in found:
            click.echo(safe(line))
        click.echo(f"{len(found)} differences" if found else "the registers hold what kcc-mail exported", err=True)
    if found and repair:
        click.echo("the klantcontacten that differ are queued (reden verify); the exporter repairs them on its next "
                   "round (or run `kcc-mail export run --once`), then `kcc-mail export verify` again", err=True)
    if found:
        sys.exit(1)


@export.command("retry")
@click.pass_obj
def export_retry(context: Context) -> None:
    """Try the failed jobs again, after the cause (token, configuration, data) was fixed."""
    count = retry_failed(context.app().uow())
    click.echo(f"{count} failed jobs queued again; the exporter takes them on its next round "
               "(or run `kcc-mail export run --once`)")


@export.command("backfill")
@click.pass_obj
def export_backfill(context: Context) -> None:
    """A job for every klantcontact registered before export jobs existed (kcc-mail before issue 14)."""
    count = backfill(context.app().uow())
    click.echo(f"{count} klantcontacten queued for export")
