"""Reply commands: answer a mail (C1199 variant A), and list or preview the reply templates."""

from __future__ import annotations

import email
import sys
from email.policy import default as default_policy
from pathlib import Path

import click

from kcc.cli.common import AS_OPTION, ID, Context
from kcc.cli.output import safe, safe_block
from kcc.records.actor import medewerker
from kcc.usecases.reply import Reply, preview, reply
from kcc.usecases.templates import survey_templates


def parse_vars(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="--var")
        pairs.append((name.strip(), text))
    return tuple(pairs)


@click.command("reply")
@click.argument("mail_id", type=ID)
@click.option("--template", "template_name", help="The reply template (see `kcc-mail templates list`).")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for the template; repeatable.")
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your answer as a text file, put inside the standard greeting and signature (template antwoord).")
@click.option("--force", is_flag=True, help="Answer even though the mail is flagged auto_reply or bounce.")
@AS_OPTION
@click.pass_obj
def reply_command(
    context: Context, mail_id: int, template_name: str | None, variables: tuple[str, ...], text_file: Path | None,
    force: bool, as_medewerker: str,
) -> None:
    """Answer the customer: both klantcontacten and the message to send are stored in one transaction."""
    if (template_name is None) == (text_file is None):
        raise click.UsageError("give either --template NAME (with --var) or --text-file FILE")
    pairs = parse_vars(variables)
    if text_file is not None:
        try:
            pairs += (("tekst", text_file.read_text(encoding="utf-8")),)
        except UnicodeDecodeError as exc:
            raise click.BadParameter(f"{safe(text_file)} is not UTF-8 text (byte {exc.start}); save it as UTF-8",
                                     param_hint="--text-file") from None
    follow_up = Reply(template=template_name or "antwoord", variables=pairs, force=force)
    app = context.app()
    result = reply(app.uow(), app.config, mail_id, follow_up, medewerker(as_medewerker))
    click.echo(
        f"mail {result.mail_id} registered as klantcontact {result.klantcontact_id} ({result.referentienummer}); "
        f"answer klantcontact {result.antwoord_klantcontact_id} queued as outbox message {result.outbox_id}"
    )


@click.group()
def templates() -> None:
    """Reply templates."""


@templates.command("list")
@click.pass_obj
def templates_list(context: Context) -> None:
    """The reply templates and the variables each needs; a broken template is named with its error (exit 1)."""
    broken = 0
    for status in survey_templates(context.config):
        if status.info is None:
            broken += 1
            click.echo(f"{safe(status.name):<24} BROKEN: {safe(status.problem)}")
            continue
        needed = ", ".join(status.info.required) or "-"
        click.echo(f"{status.name:<24} needs: {needed:<24} {safe(status.info.description)}")
    if broken:
        click.echo(f"kcc-mail: {broken} template(s) cannot be used until fixed; employees get the same error",
                   err=True)
        sys.exit(1)


@templates.command("preview")
@click.argument("name")
@click.option("--mail", "mail_id", type=ID, required=True, help="The stored mail to answer.")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for the template; repeatable.")
@click.pass_obj
def templates_preview(context: Context, name: str, mail_id: int, variables: tuple[str, ...]) -> None:
    """Print the message as it would be sent; nothing is stored."""
    app = context.app()
    composed = preview(app.uow(), app.config, mail_id, Reply(template=name, variables=parse_vars(variables)))
    message = email.message_from_bytes(composed.data, policy=default_policy)
    for header in ("From", "To", "Subject", "Message-ID", "In-Reply-To", "Auto-Submitted"):
        click.echo(f"{header}: {safe(message[header])}")
    click.echo("")
    click.echo(safe_block(composed.text))
