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
from kcc import taken
from kcc.actors import ActorError, medewerker, parse_actor
from kcc.config import Config, ConfigError, load_config
from kcc.contacts import ContactNotFound, list_contacts, show_contact
from kcc.queue import MailNotFound, list_mails, show_mail
from kcc.registratie import RegistratieError
from kcc.review import DecisionError, GeenOpvolging, Taak, dismiss, register
from kcc.service import poll_once, run_service
from kcc.taken import TaakError
from kcc.verify import verify
from kcc.wiring import App, build_app
from store.mail import DISMISS_REASON
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


REFUSALS = (DecisionError, TaakError, ActorError, RegistratieError, MailNotFound, ContactNotFound)


class KccGroup(click.Group):
    """Turns the errors a user can fix into one clear line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, SchemaOutOfDate) as exc:
            click.echo(f"kcc-mail: {exc}", err=True)
            sys.exit(2)
        except REFUSALS as exc:
            click.echo(f"kcc-mail: {exc}", err=True)
            sys.exit(1)


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
        echo_json(mails)
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
    mail = show_mail(context.app().uow(), mail_id)
    if as_json:
        echo_json(mail)
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


AS_OPTION = click.option(
    "--as", "as_medewerker", envvar="KCC_MEDEWERKER", required=True,
    help="The employee who decides (e-mail or identificator); default from KCC_MEDEWERKER.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print Klantinteracties API v2 shaped JSON.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@cli.command("register")
@click.argument("mail_id", type=int)
@click.option("--follow-up", type=click.Choice(["task", "none"]), required=True, help="What happens next.")
@click.option("--handeling", default="", help="The gevraagde handeling of the task, e.g. Terugbellen.")
@click.option("--toelichting", default="", help="Explanation for the colleague (at most 1000 characters).")
@click.option("--assign", multiple=True, help="medewerker:<e-mail> or afdeling:<naam>; repeatable.")
@AS_OPTION
@click.pass_obj
def register_command(
    context: Context, mail_id: int, follow_up: str, handeling: str, toelichting: str, assign: tuple[str, ...],
    as_medewerker: str,
) -> None:
    """Register a reviewed mail as klantcontact, with an interne taak or no follow-up, in one transaction."""
    app = context.app()
    keuze: Taak | GeenOpvolging = GeenOpvolging()
    if follow_up == "task":
        keuze = Taak(handeling, tuple(parse_actor(a) for a in assign), toelichting)
    elif handeling or assign:
        raise click.UsageError("--handeling and --assign belong to --follow-up task")
    result = register(app.uow(), app.config.organisatie, mail_id, keuze, medewerker(as_medewerker))
    line = f"mail {result.mail_id} registered as klantcontact {result.klantcontact_id} ({result.referentienummer})"
    if result.interne_taak_id is not None:
        line += f" with interne taak {result.interne_taak_id}"
    click.echo(line)


@cli.command("dismiss")
@click.argument("mail_id", type=int)
@click.option("--reason", required=True, type=click.Choice(list(DISMISS_REASON)))
@AS_OPTION
@click.pass_obj
def dismiss_command(context: Context, mail_id: int, reason: str, as_medewerker: str) -> None:
    """Not a customer contact: no klantcontact, the reason is recorded."""
    dismiss(context.app().uow(), mail_id, reason, medewerker(as_medewerker))
    click.echo(f"mail {mail_id} dismissed ({reason})")


@cli.group()
def tasks() -> None:
    """Interne taken: hand-offs to colleagues."""


@tasks.command("list")
@click.option("--status", type=click.Choice(["te_verwerken", "verwerkt", "all"]), default="te_verwerken",
              show_default=True)
@click.option("--assigned", help="medewerker:<e-mail> or afdeling:<naam>.")
@JSON_OPTION
@click.pass_obj
def tasks_list(context: Context, status: str, assigned: str | None, as_json: bool) -> None:
    """Tasks, oldest first."""
    found = taken.search(
        context.app().uow(), status=None if status == "all" else status,
        assigned=parse_actor(assigned) if assigned else None,
    )
    if as_json:
        echo_json(found)
        return
    for taak in found:
        actoren = ", ".join(a["naam"] for a in taak["toegewezenAanActoren"])
        click.echo(
            f"{taak['id']:>6}  {taak['toegewezenOp'][:16]}  {taak['status']:<12}  {taak['gevraagdeHandeling'][:30]:<30}"
            f"  {actoren[:40]:<40}  {taak['aanleidinggevendKlantcontact']['onderwerp'][:50]}"
        )
    click.echo(f"{len(found)} task(s)", err=True)


@tasks.command("show")
@click.argument("taak_id", type=int)
@JSON_OPTION
@click.pass_obj
def tasks_show(context: Context, taak_id: int, as_json: bool) -> None:
    """The task with its klantcontact, the customer's addresses and the bijlagen."""
    taak = taken.show(context.app().uow(), taak_id)
    if as_json:
        echo_json(taak)
        return
    contact = taak["aanleidinggevendKlantcontact"]
    lines = [
        f"Interne taak {taak['id']} ({taak['status']}): {taak['gevraagdeHandeling']}",
        f"Toegewezen aan: {', '.join(a['naam'] for a in taak['toegewezenAanActoren'])} op {taak['toegewezenOp']}",
    ]
    if taak["toelichting"]:
        lines.append(f"Toelichting: {taak['toelichting']}")
    lines += ["", render_contact(contact)]
    click.echo("\n".join(lines))


def render_contact(contact: dict[str, Any]) -> str:
    lines = [
        f"Klantcontact {contact['id']} ({contact['referentienummer']}) via {contact['kanaal']} "
        f"op {contact['plaatsgevondenOp']}",
        f"Onderwerp: {contact['onderwerp']}",
    ]
    for betrokkene in contact["hadBetrokkenen"]:
        naam = betrokkene["organisatienaam"] or " ".join(
            part for part in (betrokkene["contactnaam"]["voornaam"] or betrokkene["contactnaam"]["voorletters"],
                              betrokkene["contactnaam"]["voorvoegselAchternaam"],
                              betrokkene["contactnaam"]["achternaam"]) if part
        )
        adressen = ", ".join(f"{a['soortDigitaalAdres']} {a['adres']}" for a in betrokkene["digitaleAdressen"])
        lines.append(f"Betrokkene: {naam or '(naam onbekend)'} ({betrokkene['rol']}) {adressen}")
    for bijlage in contact["omvatteBijlagen"]:
        document = bijlage["informatieobject"]
        lines.append(f"Bijlage: {document['bestandsnaam']} ({document['formaat']}, {document['bestandsomvang']} bytes)")
    lines += ["", contact["inhoud"]]
    return "\n".join(lines)


@tasks.command("complete")
@click.argument("taak_id", type=int)
@AS_OPTION
@click.pass_obj
def tasks_complete(context: Context, taak_id: int, as_medewerker: str) -> None:
    """Mark the task verwerkt (afgehandeldOp is set)."""
    taken.complete(context.app().uow(), taak_id, medewerker(as_medewerker))
    click.echo(f"interne taak {taak_id} verwerkt")


@tasks.command("reopen")
@click.argument("taak_id", type=int)
@AS_OPTION
@click.pass_obj
def tasks_reopen(context: Context, taak_id: int, as_medewerker: str) -> None:
    """Set the task back to te_verwerken (afgehandeldOp is cleared)."""
    taken.reopen(context.app().uow(), taak_id, medewerker(as_medewerker))
    click.echo(f"interne taak {taak_id} te_verwerken")


@tasks.command("reroute")
@click.argument("taak_id", type=int)
@click.option("--assign", multiple=True, required=True, help="medewerker:<e-mail> or afdeling:<naam>.")
@click.option("--handeling", default=taken.OPNIEUW_ROUTEREN, show_default=True)
@click.option("--toelichting", default="")
@AS_OPTION
@click.pass_obj
def tasks_reroute(
    context: Context, taak_id: int, assign: tuple[str, ...], handeling: str, toelichting: str, as_medewerker: str
) -> None:
    """Wrong routing (C6114): a new task for another actor, and this one verwerkt, atomically."""
    new_id = taken.reroute(
        context.app().uow(), taak_id, [parse_actor(a) for a in assign], medewerker(as_medewerker),
        gevraagde_handeling=handeling, toelichting=toelichting,
    )
    click.echo(f"interne taak {taak_id} verwerkt; new interne taak {new_id}")


@cli.group()
def contacts() -> None:
    """Registered klantcontacten."""


@contacts.command("list")
@JSON_OPTION
@click.pass_obj
def contacts_list(context: Context, as_json: bool) -> None:
    """Klantcontacten, newest first."""
    found = list_contacts(context.app().uow())
    if as_json:
        echo_json(found)
        return
    for contact in found:
        click.echo(
            f"{contact['id']:>6}  {contact['referentienummer']}  {contact['plaatsgevondenOp'][:16]}  "
            f"{contact['onderwerp'][:70]}"
        )


@contacts.command("show")
@click.argument("contact_id", type=int)
@JSON_OPTION
@click.pass_obj
def contacts_show(context: Context, contact_id: int, as_json: bool) -> None:
    """One klantcontact with betrokkenen, bijlagen, actors and tasks."""
    contact = show_contact(context.app().uow(), contact_id)
    if as_json:
        echo_json(contact)
        return
    click.echo(render_contact(contact))


@cli.command("verify")
@click.pass_obj
def verify_command(context: Context) -> None:
    """Check the no-orphan invariant; print every violation and exit 1 if there is one."""
    problems = verify(context.app().uow())
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} violation(s)", err=True)
        sys.exit(1)
    click.echo("ok: every klantcontact has its mail and follow-up, every registered mail its klantcontact")


def main() -> None:
    cli(prog_name="kcc-mail")
