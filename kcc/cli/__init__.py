"""The `kcc-mail` command: thin wrappers that parse arguments, call one use case and present its outcome.

Each command lives in the module of its area and is imported only when it runs (or when its own --help is
asked), so `kcc-mail poll --once` does not pay for the web app, the batch tools or the status judgement.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import click

from kcc.cli.common import Context, KccGroup

# name → (module, attribute, one line of help): the one list of commands, in the order `--help` shows them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("kcc.cli.setup", "init", "Create or upgrade the database schema and the local folders."),
    "check": ("kcc.cli.setup", "check", "Validate the configuration and say whether each part can be reached."),
    "run": ("kcc.cli.intake", "run", "Run the service: intake, relay, bounces, heartbeat and the web screen."),
    "web": ("kcc.cli.intake", "web", "Serve only the web screen (the KCC's review, tasks and beheer pages)."),
    "poll": ("kcc.cli.poll", "poll", "Fetch new mail from the mailboxes into the review queue."),
    "queue": ("kcc.cli.intake", "queue", "The review queue: stored mails waiting for a decision."),
    "register": ("kcc.cli.review", "register_command", "Register a mail as klantcontact with a task or nothing."),
    "reply": ("kcc.cli.replies", "reply_command", "Answer the customer (both klantcontacten and the message)."),
    "dismiss": ("kcc.cli.review", "dismiss_command", "Not a customer contact: no klantcontact, reason recorded."),
    "tasks": ("kcc.cli.review", "tasks", "Interne taken: list, show, complete, reopen, reroute."),
    "contacts": ("kcc.cli.review", "contacts", "Registered klantcontacten."),
    "templates": ("kcc.cli.replies", "templates", "Reply templates: list and preview."),
    "relay": ("kcc.cli.outbox", "relay", "Send the queued replies."),
    "outbox": ("kcc.cli.outbox", "outbox", "Replies waiting, sent, failed or uncertain."),
    "reprocess": ("kcc.cli.batch", "reprocess_command", "Parse stored mails again with the current parser."),
    "import": ("kcc.cli.batch", "import_command", "Import an mbox, a Maildir or .eml files into a mailbox."),
    "quarantine": ("kcc.cli.batch", "quarantine", "Mails the parser could not handle."),
    "purge": ("kcc.cli.batch", "purge_command", "Delete mail past its retention period, with its records."),
    "audit": ("kcc.cli.audit", "audit_command", "Who decided what and when: the audit trail, filtered."),
    "verify": ("kcc.cli.review", "verify_command", "Check that no klantcontact lacks its mail or follow-up."),
    "reconcile": ("kcc.cli.reconcile", "reconcile_command", "Compare the mails on the IMAP server with the database."),
    "export": ("kcc.cli.export", "export", "Export to Open Klant: run a round, status, failed jobs, retry."),
    "status": ("kcc.cli.status", "status", "Health for people, cron and Nagios/Icinga (exit 0, 1 or 2)."),
}


class LazyGroup(KccGroup):
    """Imports a command's module when that command is used; lists every command from COMMANDS without importing."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _help = entry
        import importlib

        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_module, _attribute, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), envvar="KCC_CONFIG",
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
    from kcc.logs import configure_logging

    configure_logging(log_level, log_format)
    context = Context(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


def main() -> None:
    """Every file kcc-mail creates (the SQLite database, exports, outgoing .eml files) is private: mail is
    personal data, whatever umask the shell or the service manager left."""
    os.umask(0o077)
    try:
        cli(prog_name="kcc-mail")
    finally:
        # Leaving the interpreter would walk every object once more to collect garbage (0.1-0.25 s with SQLAlchemy
        # and the tables loaded: a third of an empty `poll --once`). The command is done and its output written;
        # what is left is freed with the process.
        gc.freeze()
