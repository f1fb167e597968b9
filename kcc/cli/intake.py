"""Intake commands: run the service, serve the screen, and look at the review queue (`poll` is kcc.cli.poll)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kcc.cli.common import ID, LIMIT_OPTION, OFFSET_OPTION, Context, echo_json, page_limit
from kcc.cli.output import cut, refuse_existing, safe, safe_block, write_export
from kcc.service import Companion, ExportCompanion, run_service
from kcc.usecases.mail_files import attachment_file, raw_mail
from kcc.usecases.review_queue import UnknownState, list_mails, show_mail


@click.command()
@click.pass_obj
def run(context: Context) -> None:
    """Run the service: intake for every mailbox, the reply relay and the web screen, until SIGTERM or SIGINT."""
    app = context.app()
    companions: list[Companion] = []
    if app.config.openklant.enabled:
        companions.append(ExportCompanion(app))
    if app.config.web.enabled:
        from kcc.web.server import WebThread  # the web stack is loaded only by the commands that serve it

        companions.append(WebThread(app))
    run_service(app, companions=companions)


@click.command()
@click.pass_obj
def web(context: Context) -> None:
    """Serve only the web screen (web.listen), until SIGTERM or SIGINT."""
    from kcc.web.server import serve

    app = context.app()
    click.echo(f"kcc-mail web screen on {app.config.web.base_url}/", err=True)
    serve(app)


@click.group()
def queue() -> None:
    """The review queue: stored mails waiting for a decision (and quarantine)."""


@queue.command("list")
@click.option("--state", default="te_beoordelen", show_default=True, help="A mail state, or 'all'.")
@click.option("--mailbox", "mailbox_name", help="Only this mailbox.")
@LIMIT_OPTION
@OFFSET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def queue_list(
    context: Context, state: str, mailbox_name: str | None, limit: int | None, offset: int, as_json: bool
) -> None:
    """Stored mails, oldest first."""
    try:
        mails = list_mails(context.app().uow(), state=None if state == "all" else state, mailbox=mailbox_name,
                           limit=page_limit(limit, as_json), offset=offset)
    except UnknownState as exc:
        raise click.BadParameter(str(exc), param_hint="--state") from None
    if as_json:
        echo_json(mails)
    else:
        click.echo(f"{'ID':>6}  {'ONTVANGEN':<16}  {'STATUS':<13} {'KENMERKEN':<12} {'VAN':<30}  ONDERWERP")
        for mail in mails:
            flags = ",".join(mail["flags"]) or "-"
            click.echo(
                f"{mail['id']:>6}  {mail['receivedAt'][:16]}  {mail['state']:<13} {flags:<12} "
                f"{cut(mail['from'], 30)}  {cut(mail['subject'], 60, pad=False)}"
            )
    click.echo(mails.note("mails"), err=True)


@queue.command("show")
@click.argument("mail_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def queue_show(context: Context, mail_id: int, as_json: bool) -> None:
    """One mail: headers, text, attachments, flags, and for quarantine the reason and error."""
    mail = show_mail(context.app().uow(), mail_id)
    if as_json:
        echo_json(mail)
        return
    click.echo(render_mail(mail))


def render_mail(mail: dict[str, Any]) -> str:
    lines = [
        f"Mail {mail['id']} ({mail['state']}{', ' + mail['reason'] if mail['reason'] else ''})",
        f"From:       {safe(mail['fromName'])} <{safe(mail['from'])}>",
        f"To:         {safe(', '.join(mail['to']))}",
        f"Subject:    {safe(mail['subject'])}",
        f"Received:   {mail['receivedAt']}",
        f"Message-ID: {safe(mail['messageId'])}{' (synthetic)' if mail['messageIdSynthetic'] else ''}",
        f"Flags:      {', '.join(mail['flags']) or '-'}",
    ]
    if mail["error"]:
        lines.append(f"Error:      {safe(mail['error'])}")
    for attachment in mail["attachmentList"]:
        lines.append(f"Attachment {attachment['number']}: {_file(attachment)}")
        if "message" in attachment:
            lines += _message_lines(attachment["message"], "  ", str(attachment["number"]))
    lines += ["", safe_block(mail["text"])]
    return "\n".join(lines)


def _file(attachment: dict[str, Any]) -> str:
    return f"{safe(attachment['bestandsnaam'])} ({safe(attachment['formaat'])}, {attachment['size']} bytes)"


def _message_lines(message: dict[str, Any], indent: str, number: str) -> list[str]:
    """What an attached message holds, indented under it (and its own attached messages deeper)."""
    if "error" in message:
        return [f"{indent}(the attached message cannot be read: {safe(message['error'])})"]
    sender = f"{safe(message['fromName'])} <{safe(message['from'])}>" if message["fromName"] else safe(message["from"])
    lines = [f"{indent}From:    {sender}", f"{indent}Subject: {safe(message['subject'])}"]
    if message["sentAt"]:
        lines.append(f"{indent}Date:    {message['sentAt']}")
    for position, inner in enumerate(message["attachments"], 1):
        lines.append(f"{indent}Attachment {number}.{position}: {_file(inner)}")
        if "message" in inner:
            lines += _message_lines(inner["message"], indent + "  ", f"{number}.{position}")
    return lines


@queue.command("export")
@click.argument("mail_id", type=ID)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .eml file to write (byte for byte as received).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.pass_obj
def queue_export(context: Context, mail_id: int, out: Path, force: bool) -> None:
    """Save the original mail as .eml, in any state (it holds personal data: keep it where it belongs)."""
    refuse_existing(out, force)
    raw = raw_mail(context.app().uow(), mail_id)
    write_export(out, raw)
    click.echo(f"mail {mail_id} written to {safe(out)} ({len(raw)} bytes)")


@queue.command("attachment")
@click.argument("mail_id", type=ID)
@click.argument("number")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write; the mail's own file name is never used as a path.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.pass_obj
def queue_attachment(context: Context, mail_id: int, number: str, out: Path, force: bool) -> None:
    """Save attachment NUMBER of a mail, numbered as `queue show` lists them: 2, or 1.2 for the second attachment
    of the first attached message (an attached message itself is saved as .eml)."""
    refuse_existing(out, force)
    saved = attachment_file(context.app().uow(), mail_id, number)
    write_export(out, saved.data)
    click.echo(f"attachment {number} of mail {mail_id} ({safe(saved.bestandsnaam)}, {safe(saved.formaat)}) "
               f"written to {safe(out)} ({len(saved.data)} bytes)")
