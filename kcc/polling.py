"""One round of intake for `kcc-mail poll --once` (cron, tests), apart from the long-running service.

Kept out of kcc.service so that a poll loads neither the relay, the LMTP server nor reconciliation: a cron job
that finds an empty mailbox should cost little more than the database connection it needs.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable

from ingest.poller import IntakeSummary, Poller, PollSettings
from ingest.sources.base import SourceError
from ingest.storing import GroupLimits
from kcc.bootstrap import App, classify_options
from kcc.config import MailboxConfig
from kcc.usecases.bounces import process_bounces


def process_owner() -> str:
    """Names this process in mailbox leases, so an operator can tell who holds one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def make_poller(app: App, mailbox: MailboxConfig, owner: str, stop: threading.Event | None = None) -> Poller:
    settings = PollSettings(
        mailbox=mailbox.name, max_mail_bytes=app.config.storage.max_mail_bytes,
        poll_interval=mailbox.poll_interval, batch_size=mailbox.batch_size, classify=classify_options(app.config),
        group=GroupLimits(mails=mailbox.commit_group_mails, seconds=mailbox.commit_group_ms / 1000),
    )
    return Poller(app.intake(), app.source(mailbox), settings, owner, stop=stop)


def poll_once(app: App, mailboxes: Iterable[MailboxConfig]) -> tuple[IntakeSummary, list[str]]:
    """Fetch what is new in each mailbox; returns the total and the mailboxes that could not be reached."""
    total, unreachable = IntakeSummary(), []
    owner = process_owner()
    for mailbox in polled(mailboxes):
        poller = make_poller(app, mailbox, owner)
        try:
            total.add(poller.run_once())
        except SourceError as exc:
            unreachable.append(f"mailbox {mailbox.name}: {exc}")
        finally:
            poller.close()
    process_bounces(app.uow)
    return total, unreachable


def polled(mailboxes: Iterable[MailboxConfig]) -> list[MailboxConfig]:
    """The mailboxes kcc-mail fetches from; an LMTP mailbox is delivered to us instead (kcc.lmtp)."""
    return [mailbox for mailbox in mailboxes if mailbox.kind != "lmtp"]
