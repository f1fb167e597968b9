"""The reply templates a functional administrator keeps: listed and checked, for the CLI and the web app."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class TemplateStatus:
    """One template as `templates list` shows it: what it needs, or what is wrong with it."""

    name: str
    info: TemplateInfo | None
    problem: str = ""


def survey_templates(config: Config) -> list[TemplateStatus]:
    """Every template compiled (sidecar, subject, text and HTML parts), each with its problem if it has one.

    A template with a syntax error is listed with that error, so it is found when it is edited, not when an
    employee answers a customer with it.
    """
    templates = reply_templates(config.replies.templates_path())
    try:
        names = templates.names()
    except TemplateError as exc:
        raise ReplyRefused(str(exc)) from exc
    found = []
    for name in names:
        try:
            found.append(TemplateStatus(name, templates.check(name)))
        except TemplateError as exc:
            found.append(TemplateStatus(name, None, str(exc)))
    return found
