"""The `kcc-mail` command: thin wrappers that parse arguments, call one use case and print its outcome."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from kcc import check as checks
from kcc.config import Config, ConfigError, load_config
from kcc.queue import MailNotFound, list_mails, show_mail
from kcc.service import poll_once, run_service
from kcc.wiring import App, build_app
from store.schema import SchemaOutOfDate, require_current, upgrade


class Context:
    """Loads the configuration and builds the application only when a command needs them."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._app: App | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def app(self, *, schema_must_be_current: bool = True) -> App:
        if self._app is None:
            self._app = build_app(self.config)
            if schema_must_be_current:
                require_current(self._app.engine)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


class KccGroup(click.Group):
    """Turns the errors a user can fix into one clear line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, SchemaOutOfDate) as exc:
            click.echo(f"kcc-mail: {exc}", err=True)
            sys.exit(2)


@click.group(cls=KccGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), envvar="KCC_CONFIG",
    help="Configuration file (default: ./kcc-mail.toml if present, else built-in defaults).",
)
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """kcc-mail: the KCC's e-mail intake and reply service (VNG Klantinteracties)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context = Context(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


@cli.command()
@click.pass_obj
def init(context: Context) -> None:
    """Create or upgrade the database schema and the local folders the configuration names."""
    app = context.app(schema_must_be_current=False)
    before, after = upgrade(app.engine)
    url = app.engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"database {url}: schema is up to date ({after})")
    else:
        click.echo(f"database {url}: schema {'created' if before is None else 'upgraded from ' + before} at {after}")
    for line in checks.prepare_local_folders(app.config):
        click.echo(line)


@cli.command()
@click.pass_obj
def check(context: Context) -> None:
    """Validate the configuration and say, per part, whether kcc-mail can connect to it."""
    config = context.config
    click.echo(f"configuration {config.source}: valid")
    app = context.app(schema_must_be_current=False)
    results = checks.check_all(app)
    for result in results:
        click.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.part}: {result.detail}")
    if not all(r.ok for r in results):
        sys.exit(1)


@cli.command()
@click.option("--once", is_flag=True, help="Fetch what is new, print a summary line and exit.")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox (default: all configured mailboxes).")
@click.pass_obj
def poll(context: Context, once: bool, mailbox_name: str | None) -> None:
    """Fetch new mail from the mailboxes into the review queue."""
    app = context.app()
    mailboxes = [app.config.mailbox(mailbox_name)] if mailbox_name else list(app.config.mailboxes)
    if not once:
        run_service(replace(app, config=replace(app.config, mailboxes=tuple(mailboxes))))
        return
    summary, unreachable = poll_once(app, mailboxes)
    click.echo(summary.line())
    for problem in unreachable:
        click.echo(f"kcc-mail: {problem}", err=True)
    if unreachable:
        sys.exit(1)


@cli.command()
@click.pass_obj
def run(context: Context) -> None:
    """Run the service: intake for every mailbox until SIGTERM or SIGINT."""
    run_service(context.app())


@cli.group()
def queue() -> None:
    """The review queue: stored mails waiting for a decision (and quarantine)."""


@queue.command("list")
@click.option("--state", default="te_beoordelen", show_default=True, help="A mail state, or 'all'.")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def queue_list(context: Context, state: str, mailbox_name: str | None, as_json: bool) -> None:
    """Stored mails, oldest first."""
    try:
        mails = list_mails(context.app().uow(), state=None if state == "all" else state, mailbox=mailbox_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--state") from None
    if as_json:
        click.echo(json.dumps(mails, ensure_ascii=False, indent=2))
        return
    for mail in mails:
        flags = ",".join(mail["flags"]) or "-"
        click.echo(
            f"{mail['id']:>6}  {mail['receivedAt'][:16]}  {mail['state']:<13} {flags:<12} "
            f"{mail['from'][:30]:<30}  {mail['subject'][:60]}"
        )
    click.echo(f"{len(mails)} mail(s)", err=True)


@queue.command("show")
@click.argument("mail_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def queue_show(context: Context, mail_id: int, as_json: bool) -> None:
    """One mail: headers, text, attachments, flags, and for quarantine the reason and error."""
    try:
        mail = show_mail(context.app().uow(), mail_id)
    except MailNotFound as exc:
        click.echo(f"kcc-mail: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(mail, ensure_ascii=False, indent=2))
        return
    click.echo(render_mail(mail))


def render_mail(mail: dict[str, Any]) -> str:
    lines = [
        f"Mail {mail['id']} ({mail['state']}{', ' + mail['reason'] if mail['reason'] else ''})",
        f"From:       {mail['fromName']} <{mail['from']}>",
        f"To:         {', '.join(mail['to'])}",
        f"Subject:    {mail['subject']}",
        f"Received:   {mail['receivedAt']}",
        f"Message-ID: {mail['messageId']}{' (synthetic)' if mail['messageIdSynthetic'] else ''}",
        f"Flags:      {', '.join(mail['flags']) or '-'}",
    ]
    if mail["error"]:
        lines.append(f"Error:      {mail['error']}")
    for attachment in mail["attachmentList"]:
        lines.append(f"Attachment: {attachment['bestandsnaam']} ({attachment['formaat']}, {attachment['size']} bytes)")
    lines += ["", mail["text"]]
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="kcc-mail")
