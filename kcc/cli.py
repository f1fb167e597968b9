"""The `kcc-mail` command: thin wrappers that parse arguments, call one use case and print its outcome."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from kcc import check as checks
from kcc.config import Config, ConfigError, load_config
from kcc.wiring import App, build_app
from store.schema import SchemaOutOfDate, require_current, upgrade


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


@click.group(cls=KccGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), envvar="KCC_CONFIG",
    help="Configuration file (default: ./kcc-mail.toml if present, else built-in defaults).",
)
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """kcc-mail: the KCC's e-mail intake and reply service (VNG Klantinteracties)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context = Context(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


@cli.command()
@click.pass_obj
def init(context: Context) -> None:
    """Create or upgrade the database schema and the local folders the configuration names."""
    app = context.app(schema_must_be_current=False)
    before, after = upgrade(app.engine)
    url = app.engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"database {url}: schema is up to date ({after})")
    else:
        click.echo(f"database {url}: schema {'created' if before is None else 'upgraded from ' + before} at {after}")
    for line in checks.prepare_local_folders(app.config):
        click.echo(line)


@cli.command()
@click.pass_obj
def check(context: Context) -> None:
    """Validate the configuration and say, per part, whether kcc-mail can connect to it."""
    config = context.config
    click.echo(f"configuration {config.source}: valid")
    app = context.app(schema_must_be_current=False)
    results = checks.check_all(app)
    for result in results:
        click.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.part}: {result.detail}")
    if not all(r.ok for r in results):
        sys.exit(1)


def main() -> None:
    cli(prog_name="kcc-mail")
