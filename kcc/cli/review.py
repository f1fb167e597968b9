"""Review commands: register or dismiss a mail, work the interne taken, look at klantcontacten, verify."""

from __future__ import annotations

import sys
from typing import Any

import click

from kcc.cli.common import (
    AS_OPTION,
    ID,
    JSON_OPTION,
    LIMIT_OPTION,
    OFFSET_OPTION,
    REFERENCE,
    Context,
    echo_json,
    page_limit,
)
from kcc.cli.output import cut, safe, safe_block
from kcc.records.actor import medewerker, parse_actor
from kcc.usecases import tasks as taken
from kcc.usecases.contacts import list_contacts, show_contact
from kcc.usecases.review import HandOff, NoFollowUp, dismiss, register
from kcc.usecases.verify import verify
from store.states import DismissReason


@click.command("register")
@click.argument("mail_id", type=ID)
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
    keuze: HandOff | NoFollowUp = NoFollowUp()
    if follow_up == "task":
        keuze = HandOff(handeling, tuple(parse_actor(a) for a in assign), toelichting)
    elif handeling or assign:
        raise click.UsageError("--handeling and --assign belong to --follow-up task")
    result = register(app.uow(), app.config, mail_id, keuze, medewerker(as_medewerker))
    line = f"mail {result.mail_id} registered as klantcontact {result.klantcontact_id} ({result.referentienummer})"
    if result.interne_taak_id is not None:
        line += f" with interne taak {result.interne_taak_id}"
    click.echo(line)


@click.command("dismiss")
@click.argument("mail_id", type=ID)
@click.option("--reason", required=True, type=click.Choice([r.value for r in DismissReason]))
@AS_OPTION
@click.pass_obj
def dismiss_command(context: Context, mail_id: int, reason: str, as_medewerker: str) -> None:
    """Not a customer contact: no klantcontact, the reason is recorded."""
    dismiss(context.app().uow(), mail_id, reason, medewerker(as_medewerker))
    click.echo(f"mail {mail_id} dismissed ({reason})")


@click.group()
def tasks() -> None:
    """Interne taken: hand-offs to colleagues."""


@tasks.command("list")
@click.option("--status", type=click.Choice(["te_verwerken", "verwerkt", "all"]), default="te_verwerken",
              show_default=True)
@click.option("--assigned", help="medewerker:<e-mail> or afdeling:<naam>.")
@LIMIT_OPTION
@OFFSET_OPTION
@JSON_OPTION
@click.pass_obj
def tasks_list(
    context: Context, status: str, assigned: str | None, limit: int | None, offset: int, as_json: bool
) -> None:
    """Tasks, oldest first."""
    found = taken.search(
        context.app().uow(), status=None if status == "all" else status,
        assigned=parse_actor(assigned) if assigned else None, limit=page_limit(limit, as_json), offset=offset,
    )
    if as_json:
        echo_json(found)
    else:
        click.echo(f"{'ID':>6}  {'TOEGEWEZEN OP':<16}  {'STATUS':<12}  {'GEVRAAGDE HANDELING':<30}  "
                   f"{'TOEGEWEZEN AAN':<40}  ONDERWERP")
        for taak in found:
            actoren = ", ".join(a["naam"] for a in taak["toegewezenAanActoren"])
            click.echo(
                f"{taak['id']:>6}  {taak['toegewezenOp'][:16]}  {taak['status']:<12}  "
                f"{cut(taak['gevraagdeHandeling'], 30)}  {cut(actoren, 40)}  "
                f"{cut(taak['aanleidinggevendKlantcontact']['onderwerp'], 50, pad=False)}"
            )
    click.echo(found.note("tasks"), err=True)


@tasks.command("show")
@click.argument("taak_id", type=REFERENCE)
@JSON_OPTION
@click.pass_obj
def tasks_show(context: Context, taak_id: str, as_json: bool) -> None:
    """The task with its klantcontact, the customer's addresses and the bijlagen."""
    taak = taken.show(context.app().uow(), taak_id)
    if as_json:
        echo_json(taak)
        return
    contact = taak["aanleidinggevendKlantcontact"]
    lines = [
        f"Interne taak {taak['id']} ({taak['status']}): {safe(taak['gevraagdeHandeling'])}",
        f"Toegewezen aan: {safe(', '.join(a['naam'] for a in taak['toegewezenAanActoren']))} op {taak['toegewezenOp']}",
    ]
    if taak["toelichting"]:
        lines.append(f"Toelichting: {safe_block(taak['toelichting'])}")
    lines += ["", render_contact(contact)]
    click.echo("\n".join(lines))


def render_contact(contact: dict[str, Any]) -> str:
    lines = [
        f"Klantcontact {contact['id']} ({contact['referentienummer']}) via {contact['kanaal']} "
        f"op {contact['plaatsgevondenOp']}",
        f"Onderwerp: {safe(contact['onderwerp'])}",
    ]
    for betrokkene in contact["hadBetrokkenen"]:
        naam = betrokkene["organisatienaam"] or " ".join(
            part for part in (betrokkene["contactnaam"]["voornaam"] or betrokkene["contactnaam"]["voorletters"],
                              betrokkene["contactnaam"]["voorvoegselAchternaam"],
                              betrokkene["contactnaam"]["achternaam"]) if part
        )
        adressen = ", ".join(f"{a['soortDigitaalAdres']} {a['adres']}" for a in betrokkene["digitaleAdressen"])
        lines.append(f"Betrokkene: {safe(naam) or '(naam onbekend)'} ({betrokkene['rol']}) {safe(adressen)}")
    for bijlage in contact["omvatteBijlagen"]:
        document = bijlage["informatieobject"]
        lines.append(f"Bijlage: {safe(document['bestandsnaam'])} ({safe(document['formaat'])}, "
                     f"{document['bestandsomvang']} bytes)")
    lines += ["", safe_block(contact["inhoud"])]
    return "\n".join(lines)


@tasks.command("complete")
@click.argument("taak_id", type=REFERENCE)
@AS_OPTION
@click.pass_obj
def tasks_complete(context: Context, taak_id: str, as_medewerker: str) -> None:
    """Mark the task verwerkt (afgehandeldOp is set)."""
    taken.complete(context.app().uow(), taak_id, medewerker(as_medewerker))
    click.echo(f"interne taak {taak_id} verwerkt")


@tasks.command("reopen")
@click.argument("taak_id", type=REFERENCE)
@AS_OPTION
@click.pass_obj
def tasks_reopen(context: Context, taak_id: str, as_medewerker: str) -> None:
    """Set the task back to te_verwerken (afgehandeldOp is cleared)."""
    taken.reopen(context.app().uow(), taak_id, medewerker(as_medewerker))
    click.echo(f"interne taak {taak_id} te_verwerken")


@tasks.command("reroute")
@click.argument("taak_id", type=REFERENCE)
@click.option("--assign", multiple=True, required=True, help="medewerker:<e-mail> or afdeling:<naam>.")
@click.option("--handeling", default=None,
              help="The new task's gevraagde handeling [default: the original's]; for Retour KCC: "
                   f"{taken.OPNIEUW_ROUTEREN!r}.")
@click.option("--toelichting", default=None, help="The new task's toelichting [default: the original's].")
@AS_OPTION
@click.pass_obj
def tasks_reroute(
    context: Context, taak_id: str, assign: tuple[str, ...], handeling: str | None, toelichting: str | None,
    as_medewerker: str,
) -> None:
    """Wrong routing (C6114): a new task for another actor, and this one verwerkt, atomically."""
    new_id = taken.reroute(
        context.app().uow(), taak_id, [parse_actor(a) for a in assign], medewerker(as_medewerker),
        gevraagde_handeling=handeling, toelichting=toelichting,
    )
    click.echo(f"interne taak {taak_id} verwerkt; new interne taak {new_id}")


@click.group()
def contacts() -> None:
    """Registered klantcontacten."""


@contacts.command("list")
@LIMIT_OPTION
@OFFSET_OPTION
@JSON_OPTION
@click.pass_obj
def contacts_list(context: Context, limit: int | None, offset: int, as_json: bool) -> None:
    """Klantcontacten, newest first."""
    found = list_contacts(context.app().uow(), limit=page_limit(limit, as_json), offset=offset)
    if as_json:
        echo_json(found)
    else:
        click.echo(f"{'ID':>6}  {'REFERENTIE':<10}  {'PLAATSGEVONDEN OP':<16}  ONDERWERP")
        for contact in found:
            click.echo(
                f"{contact['id']:>6}  {contact['referentienummer']:<10}  {contact['plaatsgevondenOp'][:16]}  "
                f"{cut(contact['onderwerp'], 70, pad=False)}"
            )
    click.echo(found.note("klantcontacten"), err=True)


@contacts.command("show")
@click.argument("contact_id", type=REFERENCE)
@JSON_OPTION
@click.pass_obj
def contacts_show(context: Context, contact_id: str, as_json: bool) -> None:
    """One klantcontact with betrokkenen, bijlagen, actors and tasks."""
    contact = show_contact(context.app().uow(), contact_id)
    if as_json:
        echo_json(contact)
        return
    click.echo(render_contact(contact))


@click.command("verify")
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
