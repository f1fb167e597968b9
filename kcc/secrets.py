"""Secrets come from the environment or a file, never from the configuration file, and never reach a log.

Adapters get a secret as a provider (a callable read at every connect, so a rotated token file is picked up); the
provider remembers what it read, so the log handler (kcc.logs.SecretMask) can mask it wherever it appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kcc.errors import ConfigError

SecretProvider = Callable[[], str]
"""Returns the secret; raises ConfigError, saying what to set, when it is missing."""

_SECRETS: set[str] = set()
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def known_secrets() -> frozenset[str]:
    """Every secret read so far (at least 4 characters), so the log handler can mask them wherever they appear."""
    return frozenset(_SECRETS)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where one secret is kept: an environment variable or a file, named by the configuration key `key`."""

    env: str
    file: str
    what: str
    key: str = "password"

    def provider(self, environ: Mapping[str, str] | None = None) -> SecretProvider:
        return lambda: resolve_secret(self.env, self.file, self.what, environ, key=self.key)

    def source(self) -> str:
        """Where to look, for an error message: the variable's name or the file's path (never the secret)."""
        if self.env:
            return f"the environment variable named by {self.key}_env" if not _VARIABLE_NAME.fullmatch(self.env) \
                else f"${self.env}"
        return self.file or f"{self.key}_env / {self.key}_file"


def resolve_secret(
    env_name: str, file_name: str, what: str, environ: Mapping[str, str] | None = None, *, key: str = "password"
) -> str:
    """Read a secret from the named environment variable or file; the secret itself never enters the config.

    The variable's name is printed only when it looks like one: a secret pasted into `password_env` by mistake
    must not appear in an error message.
    """
    env = os.environ if environ is None else environ
    if env_name:
        value = env.get(env_name)
        if value:
            return _remember(value)
        if not _VARIABLE_NAME.fullmatch(env_name):
            raise ConfigError(
                f"{what}: {key}_env must name an environment variable (letters, digits and _), and its value does "
                f"not; put the {key} itself in the environment and name that variable in {key}_env"
            )
        raise ConfigError(f"{what}: environment variable {env_name} is not set; export it before starting kcc-mail")
    if file_name:
        try:
            return _remember(Path(file_name).read_text(encoding="utf-8").strip())
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: the secret file {file_name} is not UTF-8 text; write the {key} as text") \
                from None
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read secret file {file_name}: {exc.strerror}") from None
    raise ConfigError(f"{what}: no secret configured; set {key}_env or {key}_file")


def _remember(secret: str) -> str:
    if len(secret) >= 4:
        _SECRETS.add(secret)
    return secret
