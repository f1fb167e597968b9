"""The composition root: the one place that builds the real adapters (and, in tests, their fakes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ingest.sources.base import MailSource
from kcc.config import Config, ConfigError, MailboxConfig
from replies.sentcopy import ImapSentCopy
from replies.transport import DirectoryTransport, SmtpTransport, Transport
from store.engine import make_engine, make_session_factory
from store.uow import UnitOfWork

SourceFactory = Callable[[MailboxConfig], MailSource]
TransportFactory = Callable[[], Transport]


@dataclass
class App:
    """Everything a use case needs, built once from the configuration."""

    config: Config
    engine: Engine
    session_factory: sessionmaker[Session]
    source_factory: SourceFactory = field(repr=False)
    transport_factory: TransportFactory | None = field(default=None, repr=False)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    def source(self, mailbox: MailboxConfig) -> MailSource:
        return self.source_factory(mailbox)

    def transport(self) -> Transport:
        """Where replies go, by [smtp] kind: an SMTP server, or a folder of .eml files (tests may inject a fake)."""
        if self.transport_factory is not None:
            return self.transport_factory()
        smtp = self.config.smtp
        return SmtpTransport(smtp) if smtp.kind == "smtp" else DirectoryTransport(smtp.directory)

    def sent_copy(self) -> ImapSentCopy | None:
        """The Sent-folder copier when [replies] sent_folder is set: sent_mailbox, else the first IMAP mailbox."""
        replies = self.config.replies
        if not replies.sent_folder:
            return None
        imap = [m for m in self.config.mailboxes if m.kind == "imap"]
        if replies.sent_mailbox:
            mailbox = self.config.mailbox(replies.sent_mailbox)
            if mailbox.kind != "imap":
                raise ConfigError(
                    f"{self.config.source}: replies.sent_mailbox {mailbox.name!r} is kind {mailbox.kind}; "
                    "a Sent-folder copy needs an IMAP mailbox"
                )
        elif imap:
            mailbox = imap[0]
        else:
            raise ConfigError(
                f"{self.config.source}: replies.sent_folder is set but no [[mailbox]] is kind imap; "
                "configure an IMAP mailbox or leave sent_folder empty"
            )
        return ImapSentCopy(mailbox, replies.sent_folder)

    def close(self) -> None:
        self.engine.dispose()


def real_source_factory(config: Config) -> SourceFactory:
    """IMAP or Maildir, by the mailbox's `kind`."""

    def build(mailbox: MailboxConfig) -> MailSource:
        if mailbox.kind == "imap":
            from ingest.sources.imap import ImapSource

            return ImapSource(mailbox, max_mail_bytes=config.storage.max_mail_bytes)
        from ingest.sources.maildir import MaildirSource

        return MaildirSource(mailbox)

    return build


def build_app(
    config: Config, *, engine: Engine | None = None, source_factory: SourceFactory | None = None
) -> App:
    engine = engine or make_engine(config.database.url)
    return App(
        config=config,
        engine=engine,
        session_factory=make_session_factory(engine),
        source_factory=source_factory or real_source_factory(config),
    )
