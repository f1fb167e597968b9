"""SMTP connections: TLS, STARTTLS or plain-on-loopback, with password or XOAUTH2 authentication."""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Mapping

from kcc.config import SmtpConfig, resolve_secret


class SmtpConnectError(Exception):
    """The SMTP server could not be reached or refused our login; the message says which and what to check."""


def connect(
    config: SmtpConfig, *, ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None
) -> smtplib.SMTP:
    """Open an authenticated connection; certificates are always verified."""
    context = ssl_context or ssl.create_default_context()
    where = f"SMTP server {config.host}:{config.port}"
    try:
        client: smtplib.SMTP
        if config.security == "tls":
            client = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        client.ehlo()
        if config.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if config.username:
            _login(client, config, environ)
        return client
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpConnectError(
            f"{where} refused the login of {config.username} ({exc.smtp_code}); check the password or token"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpConnectError(f"{where} cannot be reached: {exc}; check host, port and security") from None


def _login(client: smtplib.SMTP, config: SmtpConfig, environ: Mapping[str, str] | None) -> None:
    if config.auth == "xoauth2":
        token = resolve_secret(config.token_env, config.token_file, "[smtp] token", environ)
        blob = base64.b64encode(f"user={config.username}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        code, reply = client.docmd("AUTH", f"XOAUTH2 {blob}")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    password = resolve_secret(config.password_env, config.password_file, "[smtp] password", environ)
    client.login(config.username, password)
