"""`kcc-mail reconcile`: prove that the IMAP server and the database agree, mail by mail."""

from __future__ import annotations

import sys

import click

from kcc.cli.common import Context, echo_json
from kcc.cli.output import safe
from kcc.usecases.reconcile import reconcile_mailbox


@click.command("reconcile")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox (default: every IMAP mailbox).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per mailbox.")
@click.pass_obj
def reconcile_command(context: Context, mailbox_name: str | None, as_json: bool) -> None:
    """Compare every UID on the server with the stored mails; exit 1 when a mail was lost."""
    app = context.app()
    if mailbox_name:
        mailboxes = [app.config.mailbox(mailbox_name)]
    else:
        mailboxes = [m for m in app.config.mailboxes if m.kind == "imap"]
        if not mailboxes:
            click.echo("kcc-mail: no IMAP mailbox is configured; reconciliation compares IMAP UIDs", err=True)
            sys.exit(2)
    results = [reconcile_mailbox(app.uow, mailbox, app.inventory(mailbox)) for mailbox in mailboxes]
    if as_json:
        echo_json([result.as_json() for result in results])
    else:
        for result in results:
            click.echo(safe(result.summary()))
    if any(result.lost for result in results):
        sys.exit(1)
