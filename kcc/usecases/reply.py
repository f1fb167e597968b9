"""The reply decision (C1199 variant A): the answer becomes a second klantcontact and an outbox message.

The customer's klantcontact, ours and the message to send are stored in one transaction, or not at all. The
message is rendered before that transaction opens (rendering a template has a time and size budget of its own),
so the mail row is locked only for the inserts. Its referentienummer, which the template may quote, is reserved
in a short transaction first; a decision that then fails leaves a gap in the numbering, never a duplicate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from kcc.config import Config
from kcc.errors import Refused
from kcc.records.actor import ActorRef
from kcc.records.betrokkene import add_klant, left_out_adres
from kcc.records.bijlage import Document, add_bijlage
from kcc.records.klantcontact import create_klantcontact, link_actoren, link_onderwerp, next_referentienummers
from kcc.usecases.review import (
    DecisionError,
    MailNotFound,
    Registered,
    lock_mail_for_decision,
    mark_registered,
    register_mail,
)
from replies.compose import (
    ComposedReply,
    ComposeError,
    OriginalMail,
    Sender,
    compose_reply,
    dutch_datetime,
    new_message_id,
)
from replies.render import TemplateError
from replies.render_worker import render_guarded
from replies.templates import ReplyTemplates, reply_templates
from store import audit, export
from store.blobs import put_blob
from store.engine import commit_without_waiting_for_disk
from store.klantinteracties import Actor, Klantcontact
from store.mail import InboundMail
from store.outbox import OutboxMessage
from store.states import OutboxStatus
from store.types import utcnow
from store.uow import UnitOfWork

NEVER_ANSWER_AUTOMATICALLY = ("auto_reply", "bounce", "own_loop")
"""Flags a reply needs an explicit --force for: answering them is how mail loops start."""
LOCAL_TIME = ZoneInfo("Europe/Amsterdam")


class ReplyRefused(Refused):
    """The reply cannot be made as asked (a template, a value or an address); nothing was stored or sent."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the customer with a template (default `antwoord`, the employee's own text in the house style)."""

    template: str = "antwoord"
    variables: tuple[tuple[str, str], ...] = ()
    force: bool = False


def refusal_to_answer(mail: InboundMail, follow_up: Reply) -> str | None:
    """Auto-replies, bounces and our own mail coming back are never answered without an explicit --force."""
    flagged = [flag for flag in NEVER_ANSWER_AUTOMATICALLY if flag in mail.flags]
    if flagged and not follow_up.force:
        return (
            f"mail {mail.id} is flagged {', '.join(flagged)}: kcc-mail does not answer those unless you say so; "
            "add --force to answer anyway, or dismiss it"
        )
    return None


def written_at(mail: InboundMail) -> datetime:
    """When the customer wrote the mail, as the quote line and "uw e-mail van …" say: its Date, else its arrival."""
    return mail.sent_at or mail.received_at


def template_context(config: Config, mail: InboundMail, referentienummer: str) -> dict[str, object]:
    """The standard values every reply template may use (see replies.render)."""
    return {
        "organisatie": config.organisatie.naam,
        "handtekening": "",
        "klant_naam": mail.from_name,
        "onderwerp": mail.subject,
        "referentienummer": referentienummer,
        "ontvangen_op": dutch_datetime(written_at(mail).astimezone(LOCAL_TIME)),
        "tekst": "",
    }


def compose(
    config: Config, templates: ReplyTemplates, mail: InboundMail, follow_up: Reply, referentienummer: str,
    now: datetime,
) -> ComposedReply:
    """Render the template for this mail and build the exact message bytes; template and address problems are
    refusals that say what to fix."""
    try:
        variables: dict[str, object] = dict(follow_up.variables)
        templates.check_vars(follow_up.template, variables)
        rendered = render_guarded(
            templates.directory, follow_up.template, template_context(config, mail, referentienummer) | variables
        )
        original = OriginalMail(
            message_id=mail.message_id if not mail.message_id_synthetic else "", subject=mail.subject,
            from_name=mail.from_name, from_address=mail.from_address, reply_to=tuple(mail.reply_to),
            references=tuple(mail.references), text=mail.text_body,
            received_at=written_at(mail).astimezone(LOCAL_TIME),
        )
        return compose_reply(
            original, rendered, Sender(config.smtp.from_address, config.smtp.from_name),
            message_id=new_message_id(config.message_id_domain, uuid.uuid4().hex), now=now.astimezone(LOCAL_TIME),
            automatic=False, quote_original=config.replies.quote_original,
        )
    except (TemplateError, ComposeError) as exc:
        raise ReplyRefused(str(exc)) from exc


def reply(
    uow: UnitOfWork, config: Config, mail_id: int, follow_up: Reply, medewerker: ActorRef,
    *, now: datetime | None = None,
) -> Registered:
    """Answer the mail: both klantcontacten and the outbox message with the exact bytes, in one transaction."""
    now = now or utcnow()
    with uow:  # a short first transaction: the mail as it is now, and the numbers of both klantcontacten
        mail = lock_mail_for_decision(uow.session, mail_id, attachments=False)  # composing needs no attachments
        if refusal := refusal_to_answer(mail, follow_up):
            raise DecisionError(refusal)
        referentienummer, antwoord_nummer = next_referentienummers(uow.session, 2)
        commit_without_waiting_for_disk(uow.session)  # the decision's own commit makes the numbers durable
        uow.commit()
    composed = compose(config, reply_templates(config.replies.templates_path()), mail, follow_up, referentienummer,
                       now)
    with uow:
        session = uow.session
        mail = lock_mail_for_decision(session, mail_id)  # another employee may have decided meanwhile
        if refusal := refusal_to_answer(mail, follow_up):
            raise DecisionError(refusal)
        digest = put_blob(session, composed.data)  # a statement of its own: before the records are added
        contact, beoordelaar, actoren = register_mail(session, config, mail, medewerker,
                                                      referentienummer=referentienummer)
        antwoord, outbox = record_reply(session, config, mail, contact, composed, digest, actoren, now,
                                        force=follow_up.force, referentienummer=antwoord_nummer)
        mark_registered(session, mail, contact.id, beoordelaar, now)
        export.enqueue(session, [contact.id, antwoord.id], "registreren")  # in this order: the answer links to it
        audit.record(
            session, str(medewerker), "mail.geregistreerd", "inbound_mail", mail.id, klantcontact=str(contact.uuid),
            opvolging="antwoord", antwoordKlantcontact=str(antwoord.uuid), outbox=outbox.id,
            template=follow_up.template, geforceerd=follow_up.force, **left_out_adres(mail),
        )
        uow.commit()
        return Registered(mail.id, contact.id, str(contact.uuid), contact.referentienummer,
                          antwoord_klantcontact_id=antwoord.id, outbox_id=outbox.id)


def record_reply(
    session: Session, config: Config, mail: InboundMail, inkomend: Klantcontact, composed: ComposedReply,
    digest: str, actoren: list[Actor], now: datetime, *, force: bool, referentienummer: str | None = None,
) -> tuple[Klantcontact, OutboxMessage]:
    """Our answer as klantcontact about the customer's, with the sent .eml (stored as blob `digest`) as bijlage and
    the outbox row. One flush for both klantcontacten and all they hold: a table's rows go in one statement."""
    uitgaand = create_klantcontact(
        session, config.organisatie, onderwerp=composed.subject, inhoud=composed.text, plaatsgevonden_op=now,
        indicatie_contact_gelukt=None, referentienummer=referentienummer,
    )
    add_klant(session, uitgaand, mail, initiator=False)
    link_actoren(session, uitgaand, actoren)
    link_onderwerp(session, uitgaand, inkomend)
    document = Document(
        titel=composed.subject, bestandsnaam=f"antwoord-{inkomend.referentienummer}.eml", formaat="message/rfc822",
        bestandsomvang=len(composed.data), sha256=digest,
    )
    add_bijlage(session, uitgaand, document, config.organisatie, auteur=config.organisatie.naam, creatiedatum=now)
    session.flush()
    outbox = OutboxMessage(
        klantcontact_id=uitgaand.id, message_id=composed.message_id, blob_sha256=digest,
        envelope_from=composed.envelope_from, envelope_to=list(composed.recipients), status=OutboxStatus.PENDING,
        attempts=0, next_attempt_at=now, deliver_until=now + timedelta(hours=config.replies.deliver_until_hours),
        forced=force,
    )
    session.add(outbox)
    session.flush()
    return uitgaand, outbox


def preview(uow: UnitOfWork, config: Config, mail_id: int, follow_up: Reply, *, now: datetime | None = None
            ) -> ComposedReply:
    """The message exactly as it would be sent for this mail; nothing is stored."""
    with uow:
        mail = uow.session.get(InboundMail, mail_id)
        if mail is None:
            raise MailNotFound(f"no stored mail with id {mail_id}; `kcc-mail queue list` shows the waiting mails")
    return compose(config, reply_templates(config.replies.templates_path()), mail, follow_up,
                   "(wordt toegekend bij verzenden)", now or utcnow())
