"""What every `kcc-mail` command shares: the lazily built application, error handling and common options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from kcc.config import Config, ConfigError, load_config
from kcc.logs import configure_logging, describe
from kcc.wiring import App, build_app
from store.schema import SchemaOutOfDate, require_current

# Errors a user can act on: printed as one line with exit code 1 instead of a traceback. Command modules add theirs.
REFUSALS: list[type[Exception]] = []


def refusals(*types: type[Exception]) -> None:
    REFUSALS.extend(types)


class Context:
    """Loads the configuration and builds the application only when a command needs them."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._app: App | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def app(self, *, schema_must_be_current: bool = True) -> App:
        if self._app is None:
            self._app = build_app(self.config)
            if schema_must_be_current:
                require_current(self._app.engine)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()



class KccGroup(click.Group):
    """Turns the errors a user can fix into one clear line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, SchemaOutOfDate) as exc:
            click.echo(f"kcc-mail: {exc}", err=True)
            sys.exit(2)
        except tuple(REFUSALS) as exc:
            click.echo(f"kcc-mail: {exc}", err=True)
            sys.exit(1)
        except DBAPIError as exc:
            click.echo(
                f"kcc-mail: the database failed during this command ({describe(exc)}). A decision is stored "
                "completely or not at all, but if the connection broke while it was being committed it may be "
                "stored: check with `kcc-mail queue show ID` before deciding again, and `kcc-mail check` for "
                "the database.",
                err=True,
            )
            sys.exit(2)


@click.group(cls=KccGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), envvar="KCC_CONFIG",
    help="Configuration file (default: ./kcc-mail.toml if present, else built-in defaults).",
)
@click.option(
    "--log-level", default="WARNING", show_default=True, envvar="KCC_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format", default="text", show_default=True, envvar="KCC_LOG_FORMAT", type=click.Choice(["text", "json"]),
    help="One line per event, as text or as JSON.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str) -> None:
    """kcc-mail: the KCC's e-mail intake and reply service (VNG Klantinteracties)."""
    configure_logging(log_level, log_format)
    context = Context(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


AS_OPTION = click.option(
    "--as", "as_medewerker", envvar="KCC_MEDEWERKER", required=True,
    help="The employee who decides (e-mail or identificator); default from KCC_MEDEWERKER.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print Klantinteracties API v2 shaped JSON.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))
