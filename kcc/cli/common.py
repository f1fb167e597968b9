"""What every `kcc-mail` command shares: the lazily built application, the one error table, common options.

The application (and with it SQLAlchemy, the mail parser and the adapters) is imported when a command first asks
for it, not when the command line is read: `kcc-mail --help` then starts in a fraction of the time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kcc.errors import ConfigurationError, KccError, NotAllowed, NotFound, PeerUnreachable, Refused

if TYPE_CHECKING:
    from kcc.bootstrap import App
    from kcc.config import Config

EXIT_CODES: tuple[tuple[type[KccError], int], ...] = (
    (ConfigurationError, 2),  # a restart cannot fix it: systemd's RestartPreventExitStatus=2
    (PeerUnreachable, 1),
    (NotFound, 1),
    (NotAllowed, 1),
    (Refused, 1),
)
"""Each kind of the error family (kcc.errors) and its exit code; the web app has the same table for HTTP."""


def exit_code(exc: KccError) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


class Context:
    """Loads the configuration and builds the application only when a command needs them."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._app: App | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from kcc.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def app(self, *, schema_must_be_current: bool = True) -> App:
        if self._app is None:
            from kcc.bootstrap import build_app

            self._app = build_app(self.config)
            if schema_must_be_current:
                self._app.require_current_schema()
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


class KccGroup(click.Group):
    """Turns the errors a user can act on into one clear line and an exit code, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except KccError as exc:
            from kcc.cli.output import safe

            click.echo(f"kcc-mail: {safe(str(exc))}", err=True)
            sys.exit(exit_code(exc))
        except DBAPIError as exc:
            from kcc.logs import describe

            click.echo(
                f"kcc-mail: the database failed during this command ({describe(exc)}). A decision is stored "
                "completely or not at all, but if the connection broke while it was being committed it may be "
                "stored: check with `kcc-mail queue show ID` before deciding again, and `kcc-mail check` for "
                "the database.",
                err=True,
            )
            sys.exit(2)


ID = click.IntRange(1, 2**63 - 1)
"""A mail or outbox id: a positive number the databases can hold (SQLite's integers are 64-bit)."""
REFERENCE = click.STRING
"""A klantcontact or interne taak as people name it: its uuid, its id, or (a klantcontact) its referentienummer."""
LIMIT_OPTION = click.option("--limit", type=click.IntRange(min=1), default=None,
                            help="At most this many [default: 500, and everything with --json].")
OFFSET_OPTION = click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
                             help="Skip this many first (the next page).")


def page_limit(limit: int | None, as_json: bool, default: int = 500) -> int | None:
    """A list shows `default` rows on a terminal, all of them as JSON unless a limit is asked for."""
    return limit if limit is not None else (None if as_json else default)


AS_OPTION = click.option(
    "--as", "as_medewerker", envvar="KCC_MEDEWERKER", required=True,
    help="The employee who decides (e-mail or identificator); default from KCC_MEDEWERKER.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print Klantinteracties API v2 shaped JSON.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))

