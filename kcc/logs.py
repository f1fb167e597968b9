"""Logging for operators: one line per event, text or JSON, ids instead of mail contents, never a secret.

Use cases log ids (mailbox, mail, outbox); subjects and addresses stay out of INFO and above. As a last guard,
every secret kcc-mail has read is masked in every log line, whatever library wrote it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from kcc.secrets import known_secrets
from store.engine import describe_error

CONTEXT_FIELDS = ("mailbox", "mail", "outbox")


class SecretMask(logging.Filter):
    """Replaces any secret read by kcc-mail (passwords, tokens) in the formatted message with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known_secrets()
        if secrets:
            message = record.getMessage()
            masked = message
            for secret in secrets:
                masked = masked.replace(secret, "***")
            if masked != message:
                record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr at `level` as `text` or `json`; the secret mask sits on the handler, so it sees everything."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretMask())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":  # the schema check's "Context impl …" lines are noise to an operator
        logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    start = logging.getLogger("kcc.start")  # `kcc-mail run` says once what it watches, whatever the level
    start.setLevel(min(logging.INFO, root.level))


QUIET_LIBRARIES = ("imapclient", "imaplib", "mail.log", "sqlalchemy.engine", "sqlalchemy.pool")
"""Libraries whose INFO and DEBUG lines carry mail: imapclient writes every FETCH literal (address, subject, body),
aiosmtpd's `mail.log` the envelope, SQLAlchemy's engine the statements. They log at WARNING whatever level kcc-mail
runs at; kcc-mail's own DEBUG lines name the IMAP steps (`mailbox=info > UID FETCH BODY.PEEK[]`) instead."""


def log_failure(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """One ERROR line naming the kind of failure; the traceback only at DEBUG (it may quote mail data)."""
    logger.error("%s: %s", message, describe(exc))
    logger.debug("%s", message, exc_info=exc)


def describe(exc: BaseException) -> str:
    """The error's type and its first line; a database error's driver error type, never its statement."""
    return describe_error(exc)
