"""Configuration: one TOML file, validated at start-up into frozen, typed objects.

A KCC's functional administrator edits this file; a typo must stop the service with a message that names the key
and the file, never be silently ignored. Secrets are never in the file itself: only the name of an environment
variable or a file that holds them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import tomllib
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kcc.errors import ConfigError as ConfigError  # this module's error, defined with the others
from kcc.lmtp_config import check_lmtp, is_loopback

DEFAULT_CONFIG_FILE = Path("kcc-mail.toml")

Security = Literal["tls", "starttls", "none"]
AuthMethod = Literal["password", "xoauth2"]


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = "sqlite:///var/kcc-mail.db"
    password_file: str = ""

    def url_with_password(self) -> str:
        """The URL to connect with: `url`, with the password from `password_file` when one is named."""
        if not self.password_file:
            return self.url
        from sqlalchemy.engine import make_url

        from kcc.secrets import resolve_secret

        password = resolve_secret("", self.password_file, "database", key="password")
        return make_url(self.url).set(password=password).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    max_mail_bytes: int = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OrganisatieConfig:
    naam: str = "Gemeente Voorbeeld"
    kanaal: str = "e-mail"
    taal: str = "nld"
    vertrouwelijk: bool = False


@dataclass(frozen=True, slots=True)
class MailboxConfig:
    name: str = "info"
    kind: Literal["imap", "maildir", "lmtp"] = "maildir"
    host: str = ""
    port: int = 993
    security: Security = "tls"
    auth: AuthMethod = "password"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    token_env: str = ""
    token_file: str = ""
    folder: str = "INBOX"
    processed_folder: str = ""
    processed_keyword: str = "$KccOpgeslagen"
    path: str = "var/mail/info"
    poll_interval: float = 60.0
    batch_size: int = 50
    commit_group_mails: int = 50
    commit_group_ms: float = 200.0
    timeout: float = 60.0
    # kind = "lmtp": the MTA delivers to us (RFC 2033); kcc.lmtp_config checks these keys
    listen: str = "127.0.0.1:2424"
    recipients: tuple[str, ...] = ()
    allow_remote: bool = False
    socket_mode: int = 0o660
    max_message_bytes: int = 100 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 20
    idle_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    kind: Literal["smtp", "directory"] = "directory"
    host: str = ""
    port: int = 587
    security: Security = "starttls"
    auth: AuthMethod = "password"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    token_env: str = ""
    token_file: str = ""
    from_address: str = "info@gemeente.example"
    from_name: str = "Gemeente Voorbeeld"
    directory: str = "var/outgoing"
    timeout: float = 60.0
    data_timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class RepliesConfig:
    templates_dir: str = ""
    quote_original: bool = True
    message_id_domain: str = ""
    deliver_until_hours: float = 72.0
    lease_seconds: float = 900.0
    relay_interval: float = 10.0
    sent_folder: str = ""
    sent_mailbox: str = ""

    def templates_path(self) -> Path:
        """The configured folder, else the templates that ship with kcc-mail (templates/replies)."""
        if self.templates_dir:
            return Path(self.templates_dir)
        return builtin_templates()


@functools.cache
def builtin_templates() -> Path:
    """The reply templates that ship with kcc-mail (looked up once per process: a decision asks every time).

    Installed from a wheel they are package data, `replies/builtin_templates` (pyproject.toml maps the checkout's
    templates/replies there); run from a checkout (an editable install) they are that folder itself.
    """
    spec = importlib.util.find_spec("replies.builtin_templates")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[1] / "templates" / "replies"


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Thresholds for `kcc-mail status` (0 turns a check off) and how often the service says it is alive."""

    heartbeat_interval: float = 10.0
    heartbeat_critical_seconds: float = 60.0
    poll_warning_minutes: float = 15.0
    poll_critical_minutes: float = 60.0
    review_warning_minutes: float = 1440.0
    review_critical_minutes: float = 4320.0
    outbox_pending_warning_minutes: float = 30.0
    outbox_pending_critical_minutes: float = 240.0
    uncertain_warning: int = 1
    failed_warning: int = 0
    quarantine_warning: int = 1
    reconcile_interval_minutes: float = 60.0
    """How often `kcc-mail run` reconciles each IMAP mailbox with the database (0: only `kcc-mail reconcile`)."""
    export_pending_warning_minutes: float = 30.0
    export_pending_critical_minutes: float = 240.0
    export_failed_warning: int = 1


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """The municipality's identity provider (Entra ID, Keycloak, ADFS): who signs in, and their roles."""

    issuer: str = ""
    client_id: str = ""
    client_secret_env: str = ""
    client_secret_file: str = ""
    scopes: str = "openid email profile"
    roles_claim: str = "groups"
    role_kcc: str = "kcc-medewerkers"
    role_beheer: str = "kcc-beheer"
    afdeling_prefix: str = "afdeling-"
    email_claim: str = "email"
    name_claim: str = "name"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The KCC's screen: where it listens, how people sign in, and what the forms offer."""

    enabled: bool = True
    listen: str = "127.0.0.1:8000"
    auth: Literal["oidc", "dev"] = "dev"
    public_url: str = ""
    session_secret_env: str = ""
    session_secret_file: str = ""
    session_hours: float = 10.0
    theme_css: str = ""
    page_size: int = 50
    claim_minutes: float = 5.0
    refresh_seconds: float = 15.0
    timezone: str = "Europe/Amsterdam"
    kcc_afdeling: str = "KCC"
    """The afdeling "Retour KCC" sends a task back to (every KCC-medewerker sees its tasks)."""
    gevraagde_handelingen: tuple[str, ...] = (
        "Terugbellen", "Informatie verstrekken", "Afspraak maken", "Melding afhandelen", "Klacht behandelen",
    )
    oidc: OidcConfig = field(default_factory=OidcConfig)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        """The address people open: public_url behind a reverse proxy, else the listen address itself."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")


@dataclass(frozen=True, slots=True)
class OpenKlantConfig:
    """The municipality's Open Klant (Klantinteracties API): off by default, so everything stays local."""

    enabled: bool = False
    url: str = ""
    token_env: str = ""
    token_file: str = ""
    timeout: float = 30.0
    referentienummer_prefix: str = "KM"
    """Open Klant's referentienummer is unique register-wide and KISS writes there too: kcc-mail's numbers go
    out with this prefix (letters only), so they cannot collide with another writer's."""


@dataclass(frozen=True, slots=True)
class DocumentenConfig:
    """The Documenten API (Open Zaak) for the mail's .eml and its attachments; empty url: documents stay local."""

    url: str = ""
    client_id: str = ""
    secret_env: str = ""
    secret_file: str = ""
    bronorganisatie: str = ""
    informatieobjecttype: str = ""
    timeout: float = 60.0
    inline_max_bytes: int = 4 * 1024 * 1024
    """A document up to this size goes inline (base64 in the JSON POST); a larger one through the API's
    bestandsdelen upload, part by part, so it is never held whole in memory as one JSON body."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)


INLINE_MAX_BYTES_LIMIT = 64 * 1024 * 1024
"""Inline a document is base64 in one JSON body (a third larger) held in memory: beyond this, bestandsdelen."""


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """How the exporter works through its jobs: its rhythm, its lease, and how long it keeps retrying."""

    interval: float = 10.0
    lease_seconds: float = 300.0
    batch_size: int = 20
    retry_max_seconds: float = 3600.0
    concurrency: int = 4
    """Klantcontacten exported at the same time: the registers' answer time, not kcc-mail, bounds one at a time."""


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    organisatie: OrganisatieConfig = field(default_factory=OrganisatieConfig)
    mailboxes: tuple[MailboxConfig, ...] = (MailboxConfig(),)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    web: WebConfig = field(default_factory=WebConfig)
    openklant: OpenKlantConfig = field(default_factory=OpenKlantConfig)
    documenten: DocumentenConfig = field(default_factory=DocumentenConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    source: str = "built-in defaults"

    @property
    def message_id_domain(self) -> str:
        """The domain of our own Message-IDs: configured, else the sender address's domain."""
        return self.replies.message_id_domain or self.smtp.from_address.rpartition("@")[2] or "kcc-mail.invalid"

    def mailbox(self, name: str) -> MailboxConfig:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        known = ", ".join(m.name for m in self.mailboxes)
        raise ConfigError(f"no mailbox named {name!r} in {self.source}; configured mailboxes: {known}")


_SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseConfig,
    "storage": StorageConfig,
    "organisatie": OrganisatieConfig,
    "smtp": SmtpConfig,
    "replies": RepliesConfig,
    "monitoring": MonitoringConfig,
    "openklant": OpenKlantConfig,
    "documenten": DocumentenConfig,
    "export": ExportConfig,
}
_INLINE_SECRETS = {"password": "password", "secret": "password", "token": "token", "access_token": "token"}


def load_config(path: Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Load `path`, else ./kcc-mail.toml when present, else the built-in laptop defaults.

    `KCC_DATABASE_URL` in the environment overrides `database.url`, so a deployment keeps its database secret
    out of the file.
    """
    env = os.environ if environ is None else environ
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    config = Config() if path is None else _load_file(path)
    override = env.get("KCC_DATABASE_URL")
    if override:
        config = dataclasses.replace(config, database=DatabaseConfig(url=override))
    return config


def _load_file(path: Path) -> Config:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {where} does not exist; pass an existing file to --config") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a folder, not a configuration file; pass the .toml file to --config") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {where} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    unknown = set(data) - set(_SECTIONS) - {"mailbox", "web"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown section or key {sorted(unknown)[0]!r}; "
            f"known are {', '.join(sorted([*_SECTIONS, 'mailbox', 'web']))} (see config.example.toml)"
        )
    sections = {name: _build(cls, data.get(name, {}), name, where) for name, cls in _SECTIONS.items()}
    mailboxes = _load_mailboxes(data.get("mailbox"), where)
    config = Config(mailboxes=mailboxes, source=where, web=_load_web(data.get("web", {}), where), **sections)
    _check_database(config.database, where)
    _check_security(config)
    _check_values(config, where)
    check_lmtp(config.mailboxes, where)
    _check_monitoring(config.monitoring, where)
    check_export(config.openklant, config.export, where)
    check_documenten(config.documenten, config.openklant, where)
    return config


def _load_web(raw: object, where: str) -> WebConfig:
    """[web] with its [web.oidc] table, checked: a listen address that parses, a dev sign-in only on loopback."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [web] must be a table")
    table = dict(raw)
    oidc = _build(OidcConfig, table.pop("oidc", {}), "web.oidc", where)
    web: WebConfig = dataclasses.replace(_build(WebConfig, table, "web", where), oidc=oidc)
    check_web(web, where)
    return web


def check_web(web: WebConfig, where: str) -> None:
    """Refuse a web configuration that cannot work or would let anyone in."""
    host, colon, port = web.listen.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: web.listen {web.listen!r} must be HOST:PORT, e.g. 127.0.0.1:8000")
    if web.auth == "dev" and web.enabled and not is_loopback(web.host):
        raise ConfigError(
            f"{where}: web.auth = \"dev\" lets anyone pick a name and roles, so it is only allowed on a loopback "
            f"address, not on {web.host}; set web.auth = \"oidc\" with [web.oidc], or listen on 127.0.0.1"
        )
    if web.auth == "oidc":
        oidc = web.oidc
        missing = [key for key in ("issuer", "client_id") if not getattr(oidc, key)]
        if missing:
            raise ConfigError(f"{where}: web.auth = \"oidc\" needs web.oidc.{missing[0]} (see config.example.toml)")
        if not oidc.issuer.startswith("https://") and not is_loopback(_url_host(oidc.issuer)):
            raise ConfigError(f"{where}: web.oidc.issuer must be an https:// address (plain http only on loopback)")
        if not (web.session_secret_env or web.session_secret_file):
            raise ConfigError(
                f"{where}: web.auth = \"oidc\" needs a session secret that survives restarts: name it with "
                "web.session_secret_env or web.session_secret_file"
            )
    if web.public_url and not web.public_url.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: web.public_url {web.public_url!r} must start with https://")
    try:
        zoneinfo.ZoneInfo(web.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: web.timezone {web.timezone!r} is not a time zone; e.g. Europe/Amsterdam") from None
    for key in ("page_size", "claim_minutes", "session_hours"):
        if getattr(web, key) <= 0:
            raise ConfigError(f"{where}: web.{key} must be more than 0, not {getattr(web, key)}")
    if not web.gevraagde_handelingen or any(not h.strip() or len(h) > 200 for h in web.gevraagde_handelingen):
        raise ConfigError(f"{where}: web.gevraagde_handelingen must list one or more texts of 1 to 200 characters")


def _url_host(url: str) -> str:
    return url.partition("://")[2].partition("/")[0].rpartition(":")[0] or url.partition("://")[2].partition("/")[0]


def _load_mailboxes(raw: object, where: str) -> tuple[MailboxConfig, ...]:
    if raw is None:
        return (MailboxConfig(),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'mailbox' must be one or more [[mailbox]] tables")
    mailboxes = tuple(_build(MailboxConfig, item, f"mailbox[{i}]", where) for i, item in enumerate(raw))
    names = [m.name for m in mailboxes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: two [[mailbox]] tables are named {name!r}; names must be unique")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{where}: mailbox name {name!r} must be letters, digits, '-' or '_'")
    return mailboxes


def _build(cls: type[Any], raw: object, section: str, where: str) -> Any:
    """Build one dataclass from a TOML table, refusing unknown keys, wrong types and inline secrets."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _INLINE_SECRETS:
            kind = _INLINE_SECRETS[key]
            raise ConfigError(
                f"{where}: {section}.{key} holds a secret inline; put it in an environment variable or a file "
                f"and name that with {kind}_env or {kind}_file"
            )
        if key not in known:
            raise ConfigError(f"{where}: unknown key {section}.{key}; see config.example.toml for the keys")
        values[key] = _coerce(value, hints[key], f"{section}.{key}", where)
    return cls(**values)


_SECRET_SOURCES = ("password", "token", "secret")


def _shown(key: str, value: object) -> str:
    """A value for an error message; never the value of a key that names where a secret is (it may be one)."""
    name = key.rpartition(".")[2]
    return "" if any(part in name for part in _SECRET_SOURCES) else f" ({value!r})"


def _coerce(value: object, hint: Any, key: str, where: str) -> object:
    origin = typing.get_origin(hint)
    if origin is tuple:  # a list of texts, e.g. web.gevraagde_handelingen
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: {key} must be a list of texts, e.g. [\"Terugbellen\", \"Afspraak maken\"]")
        return tuple(value)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            shown = _shown(key, value)
            what = f"is {value!r}" if shown else "has a value that is not allowed"
            raise ConfigError(f"{where}: {key} {what}; it must be one of {choices}")
        return value
    expected: tuple[type, ...] = (int, float) if hint is float else (hint,)
    if isinstance(value, bool) and hint is not bool:
        expected = ()
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: {key} must be {hint.__name__}, not {type(value).__name__}{_shown(key, value)}")
    if hint is float:
        return float(value)  # type: ignore[arg-type]
    return value


def _check_security(config: Config) -> None:
    """Plain-text IMAP or SMTP leaks the mailbox password; allow it only to a server on this machine."""
    for mailbox in config.mailboxes:
        if mailbox.kind == "imap":
            if not mailbox.host:
                raise ConfigError(f"{config.source}: mailbox {mailbox.name!r} is kind imap but has no host")
            if mailbox.security == "none" and not is_loopback(mailbox.host):
                raise ConfigError(
                    f"{config.source}: mailbox {mailbox.name!r} uses security = \"none\" to {mailbox.host}; "
                    "plain text is only allowed to a loopback host; use tls or starttls"
                )
    smtp = config.smtp
    if smtp.kind == "smtp":
        if not smtp.host:
            raise ConfigError(f"{config.source}: [smtp] kind smtp needs a host")
        if smtp.security == "none" and not is_loopback(smtp.host):
            raise ConfigError(
                f"{config.source}: [smtp] uses security = \"none\" to {smtp.host}; "
                "plain text is only allowed to a loopback host; use tls or starttls"
            )


def _check_database(database: DatabaseConfig, where: str) -> None:
    """A password belongs in KCC_DATABASE_URL or a password file, never in the configuration file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database.url)
    except ArgumentError:
        raise ConfigError(f"{where}: database.url is not a database URL; e.g. postgresql+psycopg://kcc@db/kcc or "
                          "sqlite:///var/kcc-mail.db") from None
    if url.password:
        raise ConfigError(
            f"{where}: database.url holds a password; put the whole URL in the environment variable "
            "KCC_DATABASE_URL, or the password alone in a file named by database.password_file"
        )


_POSITIVE = {
    "storage": ("max_mail_bytes",),
    "mailbox": ("port", "poll_interval", "batch_size", "commit_group_mails", "commit_group_ms", "timeout"),
    "smtp": ("port", "timeout", "data_timeout"),
    "replies": ("deliver_until_hours", "lease_seconds", "relay_interval"),
}


def _check_values(config: Config, where: str) -> None:
    """Values that cannot work are refused at start, not when the first reply goes out."""
    sections: list[tuple[str, object]] = [("storage", config.storage), ("smtp", config.smtp),
                                          ("replies", config.replies)]
    sections += [(f"mailbox {m.name}", m) for m in config.mailboxes]
    for label, section in sections:
        for name in _POSITIVE[label.split()[0]]:
            if getattr(section, name) <= 0:
                raise ConfigError(f"{where}: {label}.{name} must be more than 0, not {getattr(section, name)}")
    for label, port in [("smtp", config.smtp.port), *((f"mailbox {m.name}", m.port) for m in config.mailboxes)]:
        if port > 65535:
            raise ConfigError(f"{where}: {label}.port must be a port number (1–65535), not {port}")
    sender = config.smtp.from_address
    local, at, domain = sender.partition("@")
    if not at or not local or "." not in domain or any(not c.isprintable() or c.isspace() or c in '<>,;"'
                                                        for c in sender):
        raise ConfigError(
            f"{where}: smtp.from_address {sender!r} is not one plain e-mail address (no spaces, line breaks or "
            "names); write it as info@gemeente.nl and the name in smtp.from_name"
        )
    if any(c in config.smtp.from_name for c in "\r\n\x00"):
        raise ConfigError(f"{where}: smtp.from_name has a line break; write the sender's name on one line")
    worst = config.smtp.timeout + config.smtp.data_timeout
    if config.smtp.kind == "smtp" and config.replies.lease_seconds <= worst:
        raise ConfigError(
            f"{where}: replies.lease_seconds ({config.replies.lease_seconds:g}) must be more than smtp.timeout + "
            f"smtp.data_timeout ({worst:g}): a reply still being sent would otherwise count as uncertain; raise "
            "lease_seconds or lower the timeouts"
        )


def _check_monitoring(monitoring: MonitoringConfig, where: str) -> None:
    """Thresholds that cannot work: negative, a warning after its critical, or a heartbeat that always looks late."""
    for item in dataclasses.fields(monitoring):
        if getattr(monitoring, item.name) < 0:
            raise ConfigError(f"{where}: monitoring.{item.name} must be 0 (off) or more")
    if monitoring.heartbeat_interval <= 0:
        raise ConfigError(f"{where}: monitoring.heartbeat_interval must be more than 0 seconds")
    for check in ("poll", "review", "outbox_pending", "export_pending"):
        warning = getattr(monitoring, f"{check}_warning_minutes")
        critical = getattr(monitoring, f"{check}_critical_minutes")
        if warning and critical and warning > critical:
            raise ConfigError(
                f"{where}: monitoring.{check}_warning_minutes ({warning:g}) is more than "
                f"{check}_critical_minutes ({critical:g}); the warning must come first"
            )
    critical_seconds = monitoring.heartbeat_critical_seconds
    if critical_seconds and critical_seconds <= monitoring.heartbeat_interval:
        raise ConfigError(
            f"{where}: monitoring.heartbeat_critical_seconds ({critical_seconds:g}) must be more than "
            f"heartbeat_interval ({monitoring.heartbeat_interval:g}), or a live service would look dead"
        )


MAX_EXPORT_CONCURRENCY = 32


def check_export(openklant: OpenKlantConfig, export: ExportConfig, where: str) -> None:
    """An export switched on must be able to reach its register safely, and its lease outlast a request."""
    for key in ("interval", "lease_seconds", "batch_size", "retry_max_seconds", "concurrency"):
        if getattr(export, key) <= 0:
            raise ConfigError(f"{where}: export.{key} must be more than 0, not {getattr(export, key)}")
    if export.concurrency > MAX_EXPORT_CONCURRENCY:
        raise ConfigError(f"{where}: export.concurrency {export.concurrency} is more than {MAX_EXPORT_CONCURRENCY}; "
                          "a register serves a few parallel requests well, more only queue there. Choose 1 to "
                          f"{MAX_EXPORT_CONCURRENCY}")
    if openklant.timeout <= 0:
        raise ConfigError(f"{where}: openklant.timeout must be more than 0, not {openklant.timeout}")
    prefix = openklant.referentienummer_prefix
    if not (1 <= len(prefix) <= 4 and prefix.isascii() and prefix.isalpha()):
        raise ConfigError(
            f"{where}: openklant.referentienummer_prefix {prefix!r} must be 1 to 4 letters, e.g. \"KM\": with it "
            "kcc-mail's referentienummers cannot collide with those of KISS or another writer to Open Klant"
        )
    if export.lease_seconds <= 4 * openklant.timeout:
        raise ConfigError(
            f"{where}: export.lease_seconds ({export.lease_seconds:g}) must be more than 4 × openklant.timeout "
            f"({openklant.timeout:g}): a job still being exported would otherwise be taken by another exporter"
        )
    if not openklant.enabled:
        return
    if not openklant.url.startswith("https://") and not is_loopback(_url_host(openklant.url)):
        raise ConfigError(
            f"{where}: openklant.url must be the https:// address of the Klantinteracties API, e.g. "
            "https://openklant.gemeente.nl/klantinteracties/api/v1 (plain http only on loopback)"
        )
    if not (openklant.token_env or openklant.token_file):
        raise ConfigError(
            f"{where}: openklant.enabled needs the API token: name its environment variable in openklant.token_env "
            "or its file in openklant.token_file"
        )


def check_documenten(documenten: DocumentenConfig, openklant: OpenKlantConfig, where: str) -> None:
    """Open Zaak refuses a document without an RSIN and a published informatieobjecttype: say so at start."""
    if not documenten.enabled:
        return
    if not openklant.enabled:
        raise ConfigError(f"{where}: documenten.url is set but openklant.enabled is false; the documents go to the "
                          "Documenten API together with their klantcontact, so switch on [openklant] too")
    if not documenten.url.startswith("https://") and not is_loopback(_url_host(documenten.url)):
        raise ConfigError(f"{where}: documenten.url must be the https:// address of the Documenten API, e.g. "
                          "https://openzaak.gemeente.nl/documenten/api/v1 (plain http only on loopback)")
    if not documenten.client_id:
        raise ConfigError(f"{where}: documenten.client_id is needed: the client id Open Zaak knows kcc-mail by")
    if not (documenten.secret_env or documenten.secret_file):
        raise ConfigError(f"{where}: the Documenten API needs the client's secret: name its environment variable "
                          "in documenten.secret_env or its file in documenten.secret_file")
    if not (len(documenten.bronorganisatie) == 9 and documenten.bronorganisatie.isdigit()):
        raise ConfigError(f"{where}: documenten.bronorganisatie must be the municipality's RSIN, 9 digits, e.g. "
                          "\"002220647\"")
    if not documenten.informatieobjecttype.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: documenten.informatieobjecttype must be the URL of a published "
                          "informatieobjecttype in the Catalogi API")
    if documenten.timeout <= 0:
        raise ConfigError(f"{where}: documenten.timeout must be more than 0, not {documenten.timeout}")
    if not 0 <= documenten.inline_max_bytes <= INLINE_MAX_BYTES_LIMIT:
        raise ConfigError(
            f"{where}: documenten.inline_max_bytes must be a number of bytes from 0 to {INLINE_MAX_BYTES_LIMIT} "
            f"(64 MiB), not {documenten.inline_max_bytes}; larger documents go through bestandsdelen anyway, "
            "so 4194304 (4 MiB, the default) suits most registers")
