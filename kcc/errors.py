"""The one error family the entry points know: what went wrong, in a message that says what to do.

Use cases raise one of the five kinds (or a subclass naming the domain); errors of the layers below them
(templates, mailbox, SMTP, schema) are translated where a use case meets them. The CLI maps a kind to an exit
code, the web app to an HTTP status, each in one table, so a new error needs no registration anywhere.
"""

from __future__ import annotations


class KccError(Exception):
    """Base of every error a user or operator can act on; the message names the object and the remedy."""


class Refused(KccError):
    """A rule refuses the request (already decided, flagged mail, bad input); nothing was changed."""


class NotFound(KccError):
    """The mail, klantcontact, task or outbox message asked for does not exist."""


class NotAllowed(KccError):
    """The signed-in person lacks the role (or the afdeling) this needs; nothing was shown or changed."""


class ConfigurationError(KccError):
    """The configuration or the installation cannot work as it is (a key, a secret, the database schema)."""


class PeerUnreachable(KccError):
    """A server kcc-mail talks to (IMAP, SMTP, a register) cannot be reached or refused the login."""


class ConfigError(ConfigurationError):
    """The configuration file (or a secret it names) cannot be used; the message says where and what to change."""
