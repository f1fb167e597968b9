"""Running the service: one round of the relay (cron, tests), or intake and relay long-running, one thread each.

One round of intake (`poll --once`) lives in kcc.polling, which loads none of what only the service needs.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Protocol

from kcc.bootstrap import App, relay_settings
from kcc.config import MailboxConfig
from kcc.lmtp import lmtp_listeners
from kcc.logs import log_failure
from kcc.polling import make_poller, polled, process_owner
from kcc.usecases.bounces import process_bounces
from kcc.usecases.heartbeat import Heartbeat, beat, forget_dead, kcc_version, remove_heartbeat
from kcc.usecases.reconcile import reconcile_mailbox
from replies import relay as outbox_relay
from replies.delivery import RelaySummary
from replies.relay import SentCopy
from store.types import utcnow

log = logging.getLogger(__name__)
START_LOG = logging.getLogger("kcc.start")
"""What the service runs, said once at start; kcc.logs lets its INFO lines through at any log level."""


def relay_once(app: App) -> RelaySummary:
    """Send every reply that is due, then return (cron, `kcc-mail relay --once`)."""
    sent_copy = app.sent_copy()
    try:
        return outbox_relay.relay_once(
            app.outbox(), app.transport(), settings=relay_settings(app.config), sent_copy=sent_copy,
        )
    finally:
        if sent_copy is not None:
            sent_copy.close()


def run_relay(app: App, stop: threading.Event, sent_copy: SentCopy | None) -> None:
    """Relay rounds every `replies.relay_interval` seconds until `stop`; the message in hand is finished first."""
    outbox_relay.run_forever(
        stop, app.outbox(), app.transport(), interval=app.config.replies.relay_interval,
        settings=relay_settings(app.config), sent_copy=sent_copy,
    )


def run_bounces(app: App, stop: threading.Event) -> None:
    """Match new bounces to our replies every relay interval, until `stop`."""
    while not stop.is_set():
        try:
            process_bounces(app.uow)
        except Exception as exc:  # the database may be away for a moment; the next round tries again
            log_failure(log, "matching bounces to replies failed; trying again in the next round", exc)
        stop.wait(app.config.replies.relay_interval)


def run_reconcile(app: App, stop: threading.Event, mailboxes: Sequence[MailboxConfig]) -> None:
    """Reconcile each IMAP mailbox every `monitoring.reconcile_interval_minutes`, first one interval after start
    (so a start does not add a full listing to intake's catch-up), until `stop`."""
    interval = app.config.monitoring.reconcile_interval_minutes * 60
    while not stop.wait(interval):
        for mailbox in mailboxes:
            if stop.is_set():
                return
            try:
                reconcile_mailbox(app.uow, mailbox, app.inventory(mailbox))
            except Exception as exc:  # the server or the database may be away; the next round tries again
                log_failure(log, f"reconciling mailbox {mailbox.name} failed; trying again in the next interval",
                            exc)


def run_heartbeat(app: App, stop: threading.Event, heartbeat: Heartbeat) -> None:
    """Tell `kcc-mail status` this process is alive, every `monitoring.heartbeat_interval` seconds until `stop`.

    Each beat also forgets processes that died, so a killed instance's warning clears once another runs.
    """
    while not stop.is_set():
        try:
            for owner in forget_dead(app.uow(), app.config.monitoring):
                log.warning("process %s died without stopping (its heartbeat stopped); forgotten", owner)
            beat(app.uow(), heartbeat)
        except Exception as exc:  # the database may be away for a moment; the next beat tries again
            log_failure(log, "could not write the heartbeat; trying again in the next interval", exc)
        stop.wait(app.config.monitoring.heartbeat_interval)


def stop_heartbeat(app: App, owner: str) -> None:
    """A clean stop removes the row, so status says "not running" instead of "died"."""
    try:
        remove_heartbeat(app.uow(), owner)
    except Exception as exc:
        log_failure(log, "could not remove the heartbeat; status says this process died until the next start", exc)


class ExportCompanion:
    """The exporter to Open Klant beside the service ([openklant] enabled): rounds every export.interval seconds."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="export", daemon=True)

    def describe(self) -> str:
        return (f"export: klantcontacten to Open Klant at {self._app.config.openklant.url}, "
                f"every {self._app.config.export.interval:g} s")

    def _run(self) -> None:
        self._app.exporter().run_forever(self._stop, self._app.config.export.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The klantcontact in hand is finished (or its lease left to expire) first."""
        self._stop.set()
        self._thread.join(timeout=self._app.config.openklant.timeout * 4)


def describe(
    app: App, owner: str, *, intake: bool, relay: bool, companions: Sequence[Companion] = ()
) -> list[str]:
    """What this process watches and where it sends, said once at start: places only, never a secret or an
    address (the log keeps addresses out of INFO)."""
    config = app.config
    lines = [f"kcc-mail running (version {kcc_version()}, process {owner}); "
             f"database {app.engine.url.render_as_string(hide_password=True)}"]
    for mailbox in polled(config.mailboxes) if intake else ():
        if mailbox.kind == "imap":
            place = f"IMAP {mailbox.host}:{mailbox.port} folder {mailbox.folder}"
            when = f"at once where the server has IDLE, else every {mailbox.poll_interval:g} s"
        else:
            place, when = f"Maildir {mailbox.path}", "as soon as a file arrives in new/"
        lines.append(f"intake: mailbox {mailbox.name} from {place}, {when}")
    if intake and not config.mailboxes:
        lines.append("intake: no mailbox configured ([[mailboxes]] in the configuration)")
    imap = [m.name for m in config.mailboxes if m.kind == "imap"]
    if intake and imap and config.monitoring.reconcile_interval_minutes:
        lines.append(f"reconcile: mailbox {', '.join(imap)} against the database every "
                     f"{config.monitoring.reconcile_interval_minutes:g} min")
    if relay:
        smtp = config.smtp
        target = f"SMTP {smtp.host}:{smtp.port}" if smtp.kind == "smtp" else f"the folder {smtp.directory}"
        lines.append(f"replies: sent to {target}")
    lines += [companion.describe() for companion in companions]
    lines.append("stop with Ctrl-C or SIGTERM: the mail in hand is finished first")
    return lines


class Companion(Protocol):
    """Something run beside the service (the web screen, an LMTP listener), started and stopped with it."""

    def describe(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def run_service(
    app: App, stop: threading.Event | None = None, *, intake: bool = True, relay: bool = True,
    companions: Sequence[Companion] = (),
) -> None:
    """Intake for every mailbox and the outbox relay until SIGTERM or SIGINT; the mail in hand is finished first.

    Once everything runs, the lines of `describe` go to the `kcc.start` log, which shows INFO at any log level.
    """
    stop = stop or threading.Event()
    owner = process_owner()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s received; finishing the mail in hand and stopping", signum)
        stop.set()

    if intake:  # bound before anything starts: an address in use stops the start with one clear line
        companions = [*lmtp_listeners(app), *companions]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    threads = [
        threading.Thread(
            target=make_poller(app, mailbox, owner, stop).run_forever, name=f"intake-{mailbox.name}", daemon=True
        )
        for mailbox in (polled(app.config.mailboxes) if intake else ())
    ]
    if intake:
        threads.append(threading.Thread(target=run_bounces, args=(app, stop), name="bounces", daemon=True))
    imap = [mailbox for mailbox in app.config.mailboxes if mailbox.kind == "imap"]
    if intake and imap and app.config.monitoring.reconcile_interval_minutes:
        threads.append(threading.Thread(target=run_reconcile, args=(app, stop, imap), name="reconcile",
                                        daemon=True))
    if relay:  # the Sent-folder copier is built here, so a configuration error stops the start, not a thread
        threads.append(threading.Thread(target=run_relay, args=(app, stop, app.sent_copy()), name="relay",
                                        daemon=True))
    for thread in threads:
        thread.start()
    heartbeat = Heartbeat(owner, utcnow(), tuple(m.name for m in app.config.mailboxes) if intake else (), relay)
    heartbeat_stop = threading.Event()  # set once the mail in hand is finished: "running" until then
    heartbeat_thread = threading.Thread(target=run_heartbeat, args=(app, heartbeat_stop, heartbeat),
                                        name="heartbeat", daemon=True)
    heartbeat_thread.start()
    for companion in companions:
        companion.start()
    for line in describe(app, owner, intake=intake, relay=relay, companions=companions):
        START_LOG.info("%s", line)
    while not stop.is_set() and any(t.is_alive() for t in threads):
        stop.wait(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    for companion in companions:
        companion.stop()
    heartbeat_stop.set()
    heartbeat_thread.join(timeout=5)  # only a beat stuck on a hung database takes this long
    stop_heartbeat(app, owner)
