"""The reply decision (C1199 variant A): the answer becomes a second klantcontact and an outbox message.

Runs inside the review decision's transaction, after the incoming klantcontact was built, so the customer's
klantcontact, ours and the message to send exist together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from kcc.config import Config
from kcc.registratie import (
    Document,
    koppel_actoren,
    koppel_onderwerp,
    nieuw_klantcontact,
    voeg_bijlage_toe,
    voeg_klant_toe,
)
from replies.compose import ComposedReply, OriginalMail, Sender, compose_reply, dutch_datetime, new_message_id
from replies.render import ReplyTemplates, reply_templates
from store.blobs import put_blob
from store.klantinteracties import Actor, Klantcontact
from store.mail import InboundMail
from store.outbox import OutboxMessage

NEVER_ANSWER_AUTOMATICALLY = ("auto_reply", "bounce")
LOCAL_TIME = ZoneInfo("Europe/Amsterdam")


@dataclass(frozen=True, slots=True)
class Antwoord:
    """Answer the customer with a template (default `antwoord`, the employee's own text in the house style)."""

    template: str = "antwoord"
    variables: tuple[tuple[str, str], ...] = ()
    force: bool = False


@dataclass(frozen=True, slots=True)
class Verstuurd:
    klantcontact: Klantcontact
    outbox: OutboxMessage


def refusal_to_answer(mail: InboundMail, follow_up: Antwoord) -> str | None:
    """Auto-replies and bounces are never answered without an explicit --force: that is how mail loops start."""
    flagged = [flag for flag in NEVER_ANSWER_AUTOMATICALLY if flag in mail.flags]
    if flagged and not follow_up.force:
        return (
            f"mail {mail.id} is flagged {', '.join(flagged)}: kcc-mail does not answer those unless you say so; "
            "add --force to answer anyway, or dismiss it"
        )
    return None


def template_context(config: Config, mail: InboundMail, referentienummer: str) -> dict[str, object]:
    """The standard values every reply template may use (see replies.render)."""
    return {
        "organisatie": config.organisatie.naam,
        "handtekening": "",
        "klant_naam": mail.from_name,
        "onderwerp": mail.subject,
        "referentienummer": referentienummer,
        "ontvangen_op": dutch_datetime(mail.received_at.astimezone(LOCAL_TIME)),
        "tekst": "",
    }


def compose(
    config: Config, templates: ReplyTemplates, mail: InboundMail, follow_up: Antwoord, referentienummer: str,
    now: datetime,
) -> ComposedReply:
    """Render the template for this mail and build the exact message bytes (pure apart from reading templates)."""
    variables: dict[str, object] = dict(follow_up.variables)
    templates.check_vars(follow_up.template, variables)
    rendered = templates.render(follow_up.template, template_context(config, mail, referentienummer) | variables)
    original = OriginalMail(
        message_id=mail.message_id if not mail.message_id_synthetic else "", subject=mail.subject,
        from_name=mail.from_name, from_address=mail.from_address, reply_to=tuple(mail.reply_to),
        references=tuple(mail.references), text=mail.text_body, received_at=mail.received_at.astimezone(LOCAL_TIME),
    )
    return compose_reply(
        original, rendered, Sender(config.smtp.from_address, config.smtp.from_name),
        message_id=new_message_id(config.message_id_domain, uuid.uuid4().hex), now=now.astimezone(LOCAL_TIME),
        automatic=False, quote_original=config.replies.quote_original,
    )


def registreer_antwoord(
    session: Session, config: Config, mail: InboundMail, inkomend: Klantcontact, follow_up: Antwoord,
    actoren: list[Actor], now: datetime,
) -> Verstuurd:
    """Our answer as klantcontact about the customer's, with the sent .eml as bijlage and the outbox row."""
    composed = compose(
        config, reply_templates(config.replies.templates_path()), mail, follow_up, inkomend.referentienummer, now
    )
    uitgaand = nieuw_klantcontact(
        session, config.organisatie, onderwerp=composed.subject, inhoud=composed.text, plaatsgevonden_op=now,
        indicatie_contact_gelukt=None,
    )
    voeg_klant_toe(session, uitgaand, mail, initiator=False)
    koppel_actoren(session, uitgaand, actoren)
    koppel_onderwerp(session, uitgaand, inkomend)
    digest = put_blob(session, composed.data)
    document = Document(
        titel=composed.subject, bestandsnaam=f"antwoord-{inkomend.referentienummer}.eml", formaat="message/rfc822",
        bestandsomvang=len(composed.data), sha256=digest,
    )
    voeg_bijlage_toe(session, uitgaand, document, config.organisatie, auteur=config.organisatie.naam, creatiedatum=now)
    outbox = OutboxMessage(
        klantcontact_id=uitgaand.id, message_id=composed.message_id, blob_sha256=digest,
        envelope_from=composed.envelope_from, envelope_to=list(composed.recipients), status="pending",
        attempts=0, next_attempt_at=now, deliver_until=now + timedelta(hours=config.replies.deliver_until_hours),
        forced=follow_up.force,
    )
    session.add(outbox)
    session.flush()
    return Verstuurd(uitgaand, outbox)

