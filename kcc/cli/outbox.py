"""Outbox commands: run the relay, and let an operator see and settle replies that did not go smoothly."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from kcc.cli.common import AS_OPTION, ID, LIMIT_OPTION, OFFSET_OPTION, Context, echo_json, page_limit
from kcc.cli.output import cut
from kcc.records.actor import medewerker
from kcc.service import relay_once, run_service
from kcc.usecases.outbox import list_messages, mark_sent, resend


@click.command()
@click.option("--once", is_flag=True, help="Send what is due, print `sent=N retry=N failed=N uncertain=N`, exit.")
@click.pass_obj
def relay(context: Context, once: bool) -> None:
    """Send the queued replies, by SMTP or to the outgoing folder ([smtp] kind)."""
    app = context.app()
    if once:
        click.echo(relay_once(app).line())
        return
    run_service(app, intake=False)


@click.group()
def outbox() -> None:
    """Replies waiting for the relay, sent, failed, or uncertain (waiting for an operator)."""


@outbox.command("list")
@click.option("--status", default="all", show_default=True,
              help="pending, sending, retry, sent, failed, uncertain, bounced, or all.")
@LIMIT_OPTION
@OFFSET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def outbox_list(context: Context, status: str, limit: int | None, offset: int, as_json: bool) -> None:
    """Outbox messages, the newest, shown oldest first: when made, sent and next tried, and the server's reply."""
    rows = list_messages(context.app().uow(), status=None if status == "all" else status,
                         limit=page_limit(limit, as_json), offset=offset)
    if as_json:
        echo_json(rows)
    else:
        click.echo(f"{'ID':>6}  {'STATUS':<9}  {'POG':>3}  {'AANGEMAAKT':<16}  {'VERZONDEN':<16}  "
                   f"{'VOLGENDE POGING':<16}  {'MESSAGE-ID':<60}  LAATSTE ANTWOORD VAN DE SERVER")
        for row in rows:
            click.echo(render_row(row))
    click.echo(rows.note("messages"), err=True)


def render_row(row: dict[str, Any]) -> str:
    """One line, each time in its own column: created, sent (or -), next attempt (when it will be tried again)."""
    due = row["nextAttemptAt"] if row["status"] in ("pending", "retry") else None
    return (
        f"{row['id']:>6}  {row['status']:<9}  {row['attempts']:>2}x  {_minute(row['createdAt'])}  "
        f"{_minute(row['sentAt'])}  {_minute(due)}  {cut(row['messageId'], 60)}  "
        f"{cut(row['lastSmtpReply'], 80, pad=False)}"
    ).rstrip()


def _minute(moment: str | None) -> str:
    return (moment or "-")[:16].ljust(16)


@outbox.command("resend")
@click.argument("outbox_id", type=ID)
@AS_OPTION
@click.pass_obj
def outbox_resend(context: Context, outbox_id: int, as_medewerker: str) -> None:
    """Queue an uncertain, failed or bounced reply again: the same bytes, the same Message-ID."""
    app = context.app()
    row = resend(app.uow(), outbox_id, str(medewerker(as_medewerker)),
                 deliver_for=timedelta(hours=app.config.replies.deliver_until_hours))
    click.echo(
        f"outbox {row['id']}: queued again with the same bytes and Message-ID {row['messageId']}; "
        "the relay sends it on its next round (or run `kcc-mail relay --once`)"
    )


@outbox.command("mark-sent")
@click.argument("outbox_id", type=ID)
@AS_OPTION
@click.pass_obj
def outbox_mark_sent(context: Context, outbox_id: int, as_medewerker: str) -> None:
    """Record that an uncertain reply did arrive (checked at the server or with the customer)."""
    who = medewerker(as_medewerker)
    row = mark_sent(context.app().uow(), outbox_id, str(who))
    click.echo(f"outbox {row['id']}: marked sent by {who}; the klantcontact is recorded as gelukt")
