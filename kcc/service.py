"""Running intake: one poll of each mailbox (cron, tests) or the long-running service (one thread a mailbox)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterable
from types import FrameType

from ingest.intake import ClassifyOptions, IntakeSummary
from ingest.poller import Poller, PollSettings
from ingest.sources.base import SourceError
from kcc.config import Config, MailboxConfig
from kcc.wiring import App

log = logging.getLogger(__name__)


def process_owner() -> str:
    """Names this process in mailbox leases, so an operator can tell who holds one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def classify_options(config: Config) -> ClassifyOptions:
    """Our own addresses and Message-ID domain, so a mail we sent that comes back is recognised as a loop."""
    own = {config.smtp.from_address.lower()} | {m.username.lower() for m in config.mailboxes if "@" in m.username}
    domains = {address.rsplit("@", 1)[1] for address in own if "@" in address}
    return ClassifyOptions(own_addresses=frozenset(own), own_message_id_domains=frozenset(domains))


def make_poller(app: App, mailbox: MailboxConfig, owner: str, stop: threading.Event | None = None) -> Poller:
    settings = PollSettings(
        mailbox=mailbox.name, max_mail_bytes=app.config.storage.max_mail_bytes,
        poll_interval=mailbox.poll_interval, batch_size=mailbox.batch_size, classify=classify_options(app.config),
    )
    return Poller(app.uow, app.source(mailbox), settings, owner, stop=stop)


def poll_once(app: App, mailboxes: Iterable[MailboxConfig]) -> tuple[IntakeSummary, list[str]]:
    """Fetch what is new in each mailbox; returns the total and the mailboxes that could not be reached."""
    total, unreachable = IntakeSummary(), []
    owner = process_owner()
    for mailbox in mailboxes:
        poller = make_poller(app, mailbox, owner)
        try:
            total.add(poller.run_once())
        except SourceError as exc:
            unreachable.append(f"mailbox {mailbox.name}: {exc}")
        finally:
            poller.close()
    return total, unreachable


def run_service(app: App, stop: threading.Event | None = None) -> None:
    """Intake for every mailbox until SIGTERM or SIGINT; the mail in hand is finished first."""
    stop = stop or threading.Event()
    owner = process_owner()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s received; finishing the mail in hand and stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    threads = [
        threading.Thread(
            target=make_poller(app, mailbox, owner, stop).run_forever, name=f"intake-{mailbox.name}", daemon=True
        )
        for mailbox in app.config.mailboxes
    ]
    for thread in threads:
        thread.start()
    log.info("kcc-mail running: intake for %s", ", ".join(m.name for m in app.config.mailboxes))
    while not stop.is_set() and any(t.is_alive() for t in threads):
        stop.wait(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
