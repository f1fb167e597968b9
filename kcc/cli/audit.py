"""`kcc-mail audit`: read the audit trail, for a question about one mail or one employee's decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from kcc.cli.common import ID, LIMIT_OPTION, OFFSET_OPTION, Context, echo_json, page_limit
from kcc.cli.output import cut, safe
from kcc.usecases.audit_log import OBJECT_TYPES, AuditFilter, list_events


def moment(text: str | None, *, end: bool = False) -> datetime | None:
    """A date (2026-11-30, in UTC) or a moment with time zone (2026-11-30T09:00+01:00).

    A date alone means its start, or, as an end (`--until`), the start of the next day: the whole day is in.
    """
    if text is None:
        return None
    text = text.strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date; write it as 2026-11-30 or 2026-11-30T09:00+01:00") \
            from None
    if end and "T" not in text.upper() and " " not in text:
        value += timedelta(days=1)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def object_reference(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    kind, _, number = value.partition(":")
    if kind not in OBJECT_TYPES or not number.isdigit():
        raise click.BadParameter(f"write it as TYPE:ID, with TYPE one of {', '.join(OBJECT_TYPES)} "
                                 "(for example inbound_mail:12)", param_hint="--object")
    return kind, str(int(number))


@click.command("audit")
@click.option("--mail", "mail_id", type=ID, help="Only the events about this mail (inbound_mail:ID).")
@click.option("--object", "object_ref", metavar="TYPE:ID",
              help=f"Only the events about this object; TYPE is one of {', '.join(OBJECT_TYPES)}.")
@click.option("--who", help="Only what this medewerker (or 'kcc-mail …' process) did.")
@click.option("--action", help="An action (mail.geregistreerd) or a family of them (mail.).")
@click.option("--since", callback=lambda _c, _p, v: moment(v),
              help="From this date or moment (UTC unless a zone is given).")
@click.option("--until", callback=lambda _c, _p, v: moment(v, end=True),
              help="Up to this moment; a date alone includes that whole day.")
@LIMIT_OPTION
@OFFSET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def audit_command(
    context: Context, mail_id: int | None, object_ref: str | None, who: str | None, action: str | None,
    since: datetime | None, until: datetime | None, limit: int | None, offset: int, as_json: bool,
) -> None:
    """Who decided what and when: the newest matching events, shown oldest first."""
    object_type, object_id = object_reference(object_ref)
    if mail_id is not None:
        if object_type is not None:
            raise click.UsageError("give --mail or --object, not both")
        object_type, object_id = "inbound_mail", str(mail_id)
    where = AuditFilter(object_type=object_type, object_id=object_id, who=who, action=action, since=since,
                        until=until)
    events = list_events(context.app().uow(), where, limit=page_limit(limit, as_json), offset=offset)
    if as_json:
        echo_json(events)
    else:
        click.echo(f"{'MOMENT (UTC)':<19}  {'WIE':<28}  {'ACTIE':<22}  {'OBJECT':<22}  DETAILS")
        for event in events:
            details = json.dumps(event["details"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            click.echo(
                f"{event['at'][:19]}  {cut(event['who'], 28)}  {cut(event['action'], 22)}  "
                f"{cut(event['objectType'] + ':' + event['objectId'], 22)}  {safe(cut(details, 200, pad=False))}"
            )
    click.echo(events.note("events"), err=True)
