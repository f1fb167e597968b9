"""The `kcc-mail` command: thin wrappers that parse arguments, call one use case and print its outcome.

Each command module registers its commands on the one `cli` group when imported.
"""

from __future__ import annotations

from kcc import cli_batch, cli_intake, cli_outbox, cli_replies, cli_review, cli_setup, cli_status
from kcc.cli_common import cli

COMMAND_MODULES = (cli_setup, cli_intake, cli_review, cli_replies, cli_outbox, cli_batch, cli_status)


def main() -> None:
    cli(prog_name="kcc-mail")
