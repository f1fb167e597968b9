"""Reachability checks for `kcc-mail check`: can we talk to the database, each mailbox, the SMTP server, and
(when the export is on) Open Klant and the Documenten API with the configured credentials?"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, text

from ingest.sources.base import MailSource, SourceError
from kcc.config import Config, ConfigError, MailboxConfig
from kcc.registers.documenten import DocumentenClient
from kcc.registers.http import RegisterError
from kcc.registers.klantinteracties import KlantinteractiesClient
from replies.smtp import SmtpConnectError, SmtpSettings, connect
from store.schema import SchemaOutOfDate, require_current


class Parts(Protocol):
    """What the checks need of the application (kcc.bootstrap.App has it)."""

    config: Config
    engine: Engine

    def source(self, mailbox: MailboxConfig) -> MailSource: ...

    def smtp_settings(self) -> SmtpSettings: ...

    def klantinteracties(self) -> KlantinteractiesClient: ...

    def documenten(self) -> DocumentenClient: ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    part: str
    ok: bool
    detail: str


def prepare_local_folders(config: Config) -> list[str]:
    """Create the Maildir and outgoing folders of the laptop defaults, so `init && run` needs nothing else."""
    done = []
    for mailbox in config.mailboxes:
        if mailbox.kind == "maildir":
            for sub in ("new", "cur", "tmp"):
                Path(mailbox.path, sub).mkdir(parents=True, exist_ok=True)
            done.append(f"mailbox {mailbox.name}: Maildir ready at {mailbox.path}")
    if config.smtp.kind == "directory":
        Path(config.smtp.directory).mkdir(parents=True, exist_ok=True)
        done.append(f"outgoing mail: .eml files in {config.smtp.directory}")
    return done


def check_all(app: Parts) -> list[CheckResult]:
    return [check_database(app), *(check_mailbox(app, m.name) for m in app.config.mailboxes), check_smtp(app),
            *check_registers(app)]


def check_database(app: Parts) -> CheckResult:
    url = app.engine.url.render_as_string(hide_password=True)
    try:
        with app.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        require_current(app.engine)
    except SchemaOutOfDate as exc:
        return CheckResult("database", False, str(exc))
    except Exception as exc:  # any driver error means: cannot connect
        return CheckResult("database", False, f"{url}: cannot connect: {type(exc).__name__}: {exc}")
    return CheckResult("database", True, f"{url}: connected, schema up to date")


def check_mailbox(app: Parts, name: str) -> CheckResult:
    mailbox = app.config.mailbox(name)
    part = f"mailbox {name}"
    if mailbox.kind == "lmtp":  # nothing to connect to: the MTA connects to `kcc-mail run`
        count = len(mailbox.recipients)
        return CheckResult(part, True, f"LMTP on {mailbox.listen} for {count} recipient{'s' if count != 1 else ''}: "
                                       "`kcc-mail run` listens there, the MTA delivers")
    try:
        source = app.source(mailbox)
        try:
            status = source.open()
        finally:
            source.close()
    except (SourceError, ConfigError) as exc:
        return CheckResult(part, False, str(exc))
    where = mailbox.path if mailbox.kind == "maildir" else f"{mailbox.host}:{mailbox.port} {mailbox.folder}"
    return CheckResult(part, True, f"{where}: connected, {status.exists} mails in the folder")


def check_smtp(app: Parts) -> CheckResult:
    smtp = app.config.smtp
    if smtp.kind == "directory":
        folder = Path(smtp.directory)
        if folder.is_dir() and os.access(folder, os.W_OK):
            return CheckResult("smtp", True, f"directory {folder}: writable")
        return CheckResult("smtp", False, f"directory {folder} is missing or not writable; run `kcc-mail init`")
    try:
        client = connect(app.smtp_settings())
        client.quit()
    except (SmtpConnectError, ConfigError) as exc:
        return CheckResult("smtp", False, str(exc))
    return CheckResult("smtp", True, f"{smtp.host}:{smtp.port}: connected")


def check_registers(app: Parts) -> list[CheckResult]:
    """One authenticated read of each register the export sends to; nothing is written there.

    The informatieobjecttype is not fetched: it lives in the Catalogi API, which may want other credentials; a
    wrong one is refused at the first document, with Open Zaak's words in `kcc-mail export list --failed`.
    """
    config = app.config
    if not config.openklant.enabled:
        return [CheckResult("openklant", True, "export off ([openklant] enabled = false): everything stays local")]
    results = [_check_register("openklant", config.openklant.url, app.klantinteracties, "klantcontacten", {},
                               "klantcontacten")]
    if config.documenten.enabled:
        results.append(_check_register(
            "documenten", config.documenten.url, app.documenten, "enkelvoudiginformatieobjecten",
            {"bronorganisatie": config.documenten.bronorganisatie},
            f"documents of bronorganisatie {config.documenten.bronorganisatie}"))
    return results


def _check_register(part: str, url: str, client: Callable[[], KlantinteractiesClient | DocumentenClient],
                    resource: str, params: dict[str, str], what: str) -> CheckResult:
    try:
        with client() as api:
            count = api.count(resource, params)
    except (RegisterError, ConfigError) as exc:
        return CheckResult(part, False, f"{url}: {exc}")
    return CheckResult(part, True, f"{url}: connected, credentials accepted, {count} {what}")
