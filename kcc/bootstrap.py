"""The composition root: the one place that builds the real adapters, from the configuration, for every entry point.

The CLI, the service runner and the web app get their `App` from `build_app`; tests pass fakes of the mailbox
source and the transport through the same function. This is also where the TOML is mapped onto each adapter's own
settings (ImapSettings, SmtpSettings…), so the adapters never read kcc's configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingest.analysis import AnalyseSettings, ClassifyOptions
from kcc.config import Config, ConfigError, DocumentenConfig, MailboxConfig, OpenKlantConfig, SmtpConfig
from kcc.errors import ConfigurationError
from kcc.secrets import SecretRef
from kcc.usecases.intake import Intake
from store import schema
from store.engine import make_engine, make_session_factory
from store.uow import UnitOfWork

if TYPE_CHECKING:
    # Each adapter is imported by the method that builds it: `poll --once` then loads neither the HTTP clients
    # (httpx, joserfc) nor the relay, and a Maildir mailbox needs no imapclient.
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from ingest.sources.base import MailSource
    from ingest.sources.imap import ImapSettings
    from ingest.sources.imap_inventory import ImapInventory
    from kcc.registers.documenten import DocumentenClient, DocumentenSettings
    from kcc.registers.klantinteracties import KlantinteractiesClient, KlantinteractiesSettings
    from kcc.usecases.export import Exporter, ExportSettings
    from kcc.usecases.outbox import Outbox
    from replies.delivery import RelaySettings
    from replies.relay import SentCopy
    from replies.smtp import SmtpSettings
    from replies.transport import Transport

    SourceFactory = Callable[[MailboxConfig], MailSource]
    TransportFactory = Callable[[], Transport]
    RegisterFactory = Callable[[], KlantinteractiesClient]


@dataclass
class App:
    """Everything a use case needs, built once from the configuration."""

    config: Config
    engine: Engine
    session_factory: sessionmaker[Session]
    source_factory: SourceFactory = field(repr=False)
    transport_factory: TransportFactory | None = field(default=None, repr=False)
    register_factory: RegisterFactory | None = field(default=None, repr=False)
    documenten_factory: Callable[[], DocumentenClient] | None = field(default=None, repr=False)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    def source(self, mailbox: MailboxConfig) -> MailSource:
        return self.source_factory(mailbox)

    def intake(self) -> Intake:
        """The poller's view of the database."""
        return Intake(self.uow)

    def outbox(self) -> Outbox:
        """The relay's view of the database."""
        from kcc.usecases.outbox import Outbox

        return Outbox(self.uow, relay_settings(self.config))

    def smtp_settings(self) -> SmtpSettings:
        return smtp_settings(self.config.smtp)

    def transport(self) -> Transport:
        """Where replies go, by [smtp] kind: an SMTP server, or a folder of .eml files (tests may inject a fake)."""
        if self.transport_factory is not None:
            return self.transport_factory()
        from replies.transport import DirectoryTransport, SmtpTransport

        smtp = self.config.smtp
        return SmtpTransport(self.smtp_settings()) if smtp.kind == "smtp" else DirectoryTransport(smtp.directory)

    def klantinteracties(self) -> KlantinteractiesClient:
        """A client of Open Klant's Klantinteracties API ([openklant]); tests may inject one on a test server."""
        if self.register_factory is not None:
            return self.register_factory()
        openklant = self.config.openklant
        if not openklant.enabled:
            raise ConfigError(
                f"{self.config.source}: the export to Open Klant is switched off; set openklant.enabled = true "
                "with openklant.url and the token (see config.example.toml)"
            )
        from kcc.registers.klantinteracties import KlantinteractiesClient

        return KlantinteractiesClient(klantinteracties_settings(openklant))

    def documenten(self) -> DocumentenClient:
        """A client of the Documenten API ([documenten]); tests may inject one on a test server."""
        if self.documenten_factory is not None:
            return self.documenten_factory()
        from kcc.registers.documenten import DocumentenClient

        return DocumentenClient(documenten_settings(self.config.documenten))

    def exporter(self) -> Exporter:
        """The exporter to the registers over this database; documents only when [documenten] has a url."""
        from kcc.usecases.export import Exporter

        documents = self.documenten if self.config.documenten.enabled else None
        return Exporter(self.uow, self.klantinteracties, export_settings(self.config), documents)

    def sent_copy(self) -> SentCopy | None:
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
        from ingest.sources.imap import ImapAppender

        return ImapAppender(imap_settings(mailbox), replies.sent_folder)

    def inventory(self, mailbox: MailboxConfig) -> ImapInventory:
        """The read-only view of an IMAP mailbox's folders that reconciliation compares with the database."""
        from ingest.sources.imap_inventory import ImapInventory

        return ImapInventory(imap_settings(mailbox))

    def require_current_schema(self) -> None:
        """Refuse to work on a database this version of kcc-mail did not make (in the application's error family)."""
        try:
            schema.require_current(self.engine)
        except schema.SchemaOutOfDate as exc:
            raise SchemaOutOfDate(str(exc)) from exc

    def close(self) -> None:
        self.engine.dispose()


class SchemaOutOfDate(ConfigurationError):
    """The database was made by another version of kcc-mail; `kcc-mail init` upgrades it."""


def build_app(
    config: Config, *, engine: Engine | None = None, source_factory: SourceFactory | None = None,
    transport_factory: TransportFactory | None = None, register_factory: RegisterFactory | None = None,
) -> App:
    engine = engine or make_engine(config.database.url_with_password())
    return App(
        config=config,
        engine=engine,
        session_factory=make_session_factory(engine),
        source_factory=source_factory or real_source_factory(config),
        transport_factory=transport_factory,
        register_factory=register_factory,
    )


def real_source_factory(config: Config) -> SourceFactory:
    """IMAP or Maildir, by the mailbox's `kind`; each module is imported only when a mailbox of its kind is used."""

    def build(mailbox: MailboxConfig) -> MailSource:
        if mailbox.kind == "lmtp":
            raise ConfigError(
                f"mailbox {mailbox.name!r} is kind lmtp: the MTA delivers its mail to `kcc-mail run`, there is "
                "nothing to poll"
            )
        if mailbox.kind == "imap":
            from ingest.sources.imap import ImapSource

            return ImapSource(imap_settings(mailbox), max_mail_bytes=config.storage.max_mail_bytes)
        from ingest.sources.maildir import MaildirSource

        return MaildirSource(mailbox.name, mailbox.path)

    return build


# --- the configuration mapped onto each adapter's settings ---------------------------------------------------


def imap_settings(mailbox: MailboxConfig, environ: Mapping[str, str] | None = None) -> ImapSettings:
    """The IMAP adapter's settings for one [[mailbox]]; its secret is read at every connect."""
    from ingest.sources.imap import ImapSettings

    secret = _secret(mailbox.auth, mailbox.password_env, mailbox.password_file, mailbox.token_env,
                     mailbox.token_file, f"mailbox {mailbox.name!r}")
    return ImapSettings(
        mailbox=mailbox.name, host=mailbox.host, port=mailbox.port, security=mailbox.security, auth=mailbox.auth,
        username=mailbox.username, secret=secret.provider(environ), secret_source=secret.source(),
        folder=mailbox.folder, processed_folder=mailbox.processed_folder,
        processed_keyword=mailbox.processed_keyword, batch_size=mailbox.batch_size, timeout=mailbox.timeout,
    )


def smtp_settings(smtp: SmtpConfig, environ: Mapping[str, str] | None = None) -> SmtpSettings:
    """The SMTP adapter's settings for [smtp]; no username means no AUTH and no secret to read."""
    from replies.smtp import SmtpSettings

    secret = _secret(smtp.auth, smtp.password_env, smtp.password_file, smtp.token_env, smtp.token_file, "[smtp]")
    return SmtpSettings(
        host=smtp.host, port=smtp.port, security=smtp.security, auth=smtp.auth, username=smtp.username,
        secret=secret.provider(environ) if smtp.username else None, timeout=smtp.timeout,
        data_timeout=smtp.data_timeout,
    )


def _secret(auth: str, password_env: str, password_file: str, token_env: str, token_file: str, what: str) -> SecretRef:
    if auth == "xoauth2":
        return SecretRef(token_env, token_file, f"{what} token", key="token")
    return SecretRef(password_env, password_file, f"{what} password", key="password")


def klantinteracties_settings(openklant: OpenKlantConfig, environ: Mapping[str, str] | None = None
                              ) -> KlantinteractiesSettings:
    """The Klantinteracties adapter's settings for [openklant]; the token is read at every request."""
    from kcc.registers.klantinteracties import KlantinteractiesSettings

    token = SecretRef(openklant.token_env, openklant.token_file, "[openklant] token", key="token")
    return KlantinteractiesSettings(url=openklant.url, token=token.provider(environ), timeout=openklant.timeout)


def documenten_settings(documenten: DocumentenConfig, environ: Mapping[str, str] | None = None
                        ) -> DocumentenSettings:
    """The Documenten adapter's settings for [documenten]; the secret is read for every token it signs."""
    from kcc.registers.documenten import DocumentenSettings

    secret = SecretRef(documenten.secret_env, documenten.secret_file, "[documenten] secret", key="secret")
    return DocumentenSettings(url=documenten.url, client_id=documenten.client_id, secret=secret.provider(environ),
                              timeout=documenten.timeout)


def export_settings(config: Config) -> ExportSettings:
    from kcc.usecases.export import ExportSettings
    from kcc.usecases.export_sync import DocumentSettings

    documenten = config.documenten
    documents = (DocumentSettings(documenten.bronorganisatie, documenten.informatieobjecttype,
                                  documenten.inline_max_bytes) if documenten.enabled else None)
    return ExportSettings(
        referentienummer_prefix=config.openklant.referentienummer_prefix, lease_seconds=config.export.lease_seconds,
        batch_size=config.export.batch_size, retry_max_seconds=config.export.retry_max_seconds,
        concurrency=config.export.concurrency, documents=documents,
    )


def classify_options(config: Config) -> ClassifyOptions:
    """Our own addresses and Message-ID domain, so a mail we sent that comes back is recognised as a loop."""
    own = {config.smtp.from_address.lower()} | {m.username.lower() for m in config.mailboxes if "@" in m.username}
    domains = {address.rsplit("@", 1)[1] for address in own if "@" in address}
    return ClassifyOptions(own_addresses=frozenset(own), own_message_id_domains=frozenset(domains))


def analyse_settings(config: Config) -> AnalyseSettings:
    return AnalyseSettings(max_mail_bytes=config.storage.max_mail_bytes, classify=classify_options(config))


def relay_settings(config: Config) -> RelaySettings:
    from replies.delivery import RelaySettings

    return RelaySettings(lease_seconds=config.replies.lease_seconds)
