"""The composition root: the one place that builds the real adapters (and, in tests, their fakes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ingest.sources.base import MailSource
from kcc.config import Config, MailboxConfig
from store.engine import make_engine, make_session_factory
from store.uow import UnitOfWork

SourceFactory = Callable[[MailboxConfig], MailSource]


@dataclass
class App:
    """Everything a use case needs, built once from the configuration."""

    config: Config
    engine: Engine
    session_factory: sessionmaker[Session]
    source_factory: SourceFactory = field(repr=False)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    def source(self, mailbox: MailboxConfig) -> MailSource:
        return self.source_factory(mailbox)

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
