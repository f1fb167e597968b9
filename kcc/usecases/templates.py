"""The reply templates a functional administrator keeps: listed and checked, for the CLI and the web app."""

from __future__ import annotations

from kcc.config import Config
from kcc.usecases.reply import ReplyRefused
from replies.render import TemplateError
from replies.templates import TemplateInfo, reply_templates


def list_templates(config: Config) -> list[TemplateInfo]:
    """Every reply template in the configured folder; a broken one is a refusal that names the file."""
    try:
        return reply_templates(config.replies.templates_path()).list()
    except TemplateError as exc:
        raise ReplyRefused(str(exc)) from exc
