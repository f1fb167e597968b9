"""The LMTP listeners of `kcc-mail run`: one per [[mailbox]] kind = "lmtp", started and stopped with the service.

Each socket is bound when the companion is built, before anything else starts, so an address in use or a socket
path without permission stops the start with one clear line instead of a thread that quietly died.
"""

from __future__ import annotations

from kcc.bootstrap import App, analyse_settings
from kcc.config import MailboxConfig
from kcc.errors import ConfigurationError
from kcc.lmtp_config import parse_listen
from kcc.usecases.lmtp_intake import LmtpIntake


class LmtpListener:
    """One LMTP mailbox served beside the pollers and the relay (a kcc.service.Companion)."""

    def __init__(self, app: App, mailbox: MailboxConfig) -> None:
        from ingest.sources.lmtp import ListenError, LmtpServer, LmtpSettings, bind_tcp, bind_unix

        self.mailbox = mailbox
        address = parse_listen(mailbox.listen)
        if address is None:  # kcc.config refuses this at load; a Config built in code may still hold it
            raise ConfigurationError(f"mailbox {mailbox.name}: listen {mailbox.listen!r} is not HOST:PORT or unix:PATH")
        try:
            sock = bind_unix(address.path, mailbox.socket_mode) if address.is_unix else bind_tcp(
                address.host, address.port)
        except ListenError as exc:
            raise ConfigurationError(
                f"mailbox {mailbox.name}: {exc}; stop what uses it or set another listen"
            ) from None
        settings = LmtpSettings(
            mailbox=mailbox.name, recipients=frozenset(r.lower() for r in mailbox.recipients),
            max_message_bytes=mailbox.max_message_bytes, max_recipients=mailbox.max_recipients,
            max_connections=mailbox.max_connections, idle_timeout=mailbox.idle_timeout,
        )
        self.server = LmtpServer(settings, LmtpIntake(app.uow, mailbox.name, analyse_settings(app.config)), sock)

    @property
    def where(self) -> str:
        """The address it listens on, with the real port when the configuration asked for port 0."""
        address = self.server.address
        if isinstance(address, str):
            return f"unix:{address}"
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def describe(self) -> str:
        count = len(self.mailbox.recipients)
        return (f"intake: mailbox {self.mailbox.name} over LMTP on {self.where}, for {count} "
                f"recipient{'s' if count != 1 else ''}; 250 only once a mail is stored")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


def lmtp_listeners(app: App) -> list[LmtpListener]:
    """A bound listener for every LMTP mailbox in the configuration; none is left open when one cannot bind."""
    listeners: list[LmtpListener] = []
    try:
        for mailbox in app.config.mailboxes:
            if mailbox.kind == "lmtp":
                listeners.append(LmtpListener(app, mailbox))
    except BaseException:
        for listener in listeners:
            listener.server.sock.close()
        raise
    return listeners
