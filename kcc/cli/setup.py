"""`kcc-mail init` and `kcc-mail check`: a working installation in two commands."""

from __future__ import annotations

import sys

import click

from kcc.cli.common import Context
from kcc.usecases import check as checks
from store.schema import upgrade


@click.command()
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


@click.command()
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
