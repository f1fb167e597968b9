"""`kcc-mail poll`: fetch new mail into the review queue, once (cron) or until stopped.

A module of its own, so that `poll --once` imports one round of intake (kcc.polling) and nothing of the service,
the relay or the review queue's presentation.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from kcc.cli.common import Context


@click.command()
@click.option("--once", is_flag=True, help="Fetch what is new, print a summary line and exit.")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox (default: all configured mailboxes).")
@click.pass_obj
def poll(context: Context, once: bool, mailbox_name: str | None) -> None:
    """Fetch new mail from the mailboxes into the review queue."""
    app = context.app()
    mailboxes = [app.config.mailbox(mailbox_name)] if mailbox_name else list(app.config.mailboxes)
    if not once:
        from kcc.service import run_service  # the long-running service; a single round does not need it

        run_service(replace(app, config=replace(app.config, mailboxes=tuple(mailboxes))), relay=False)
        return
    from kcc.polling import poll_once

    summary, unreachable = poll_once(app, mailboxes)
    click.echo(summary.line())
    for problem in unreachable:
        click.echo(f"kcc-mail: {problem}", err=True)
    if unreachable:
        sys.exit(1)
