"""The reply templates in a folder: found, described by their sidecars, checked, compiled once per process.

A reply template ``NAME`` is three files in the templates folder (see ``templates/replies/README.md``):

- ``NAME.toml`` (required) — the sidecar that makes ``NAME`` a reply template, with the optional keys
  ``description`` (text), ``subject`` (a Jinja pattern; empty means "Re: <original subject>"), ``variables``
  (the names the employee passes with ``--var``) and ``defaults`` (a table of text values for some of them).
- ``NAME.txt.j2`` (required) — the text/plain body.
- ``NAME.html.j2`` (optional) — a text/html alternative.

Files without a sidecar (such as ``base.txt.j2``) are layouts that reply templates extend; they cannot be sent.
This module is the I/O half; rendering itself, in the budgeted sandbox, is replies.render.
"""

from __future__ import annotations

import builtins
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, Template, TemplateNotFound, TemplateSyntaxError

from replies.render import (
    RENDER_SECONDS,
    BudgetedSandbox,
    RenderedReply,
    TemplateError,
    _Budget,
    one_line,
    run,
    tidy_text,
)

SIDECAR_KEYS: tuple[str, ...] = ("description", "subject", "variables", "defaults")

_TEMPLATE_NAME = re.compile(r"[a-z0-9_-]{1,64}")
SUBJECTS_KEPT = 64  # compiled subject patterns kept per folder
_VARIABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What a reply template is for and what it needs, read from its sidecar ``NAME.toml``."""

    name: str
    subject: str
    variables: tuple[str, ...]
    description: str
    has_html: bool
    defaults: tuple[tuple[str, str], ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        """The variables the employee must give: the declared ones without a default."""
        with_default = {key for key, _value in self.defaults}
        return tuple(name for name in self.variables if name not in with_default)


class ReplyTemplates:
    """The reply templates in one folder; every call sees the files as they are now, so edits apply without a restart.

    Sidecars are read on every call; compiled templates are kept and recompiled when their file changed
    (Jinja's auto_reload), because compiling them took a fifth of a reply decision.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._env = BudgetedSandbox(FileSystemLoader(directory))
        self._subjects: dict[str, Template] = {}

    def list(self) -> builtins.list[TemplateInfo]:
        """Every reply template in the folder, by name; a broken sidecar is an error, not a silent omission."""
        return [self.info(name) for name in self._names()]

    def names(self) -> builtins.list[str]:
        """The names of the reply templates in the folder (each has a NAME.toml), sorted."""
        return self._names()

    def info(self, name: str) -> TemplateInfo:
        """The sidecar of template `name`, checked: known keys, right types, and the text template present."""
        self._check_name(name)
        sidecar = self.directory / f"{name}.toml"
        if not sidecar.is_file():
            raise self._unknown(name)
        settings = _read_sidecar(sidecar)
        if not (self.directory / f"{name}.txt.j2").is_file():
            raise TemplateError(f"{sidecar} has no text template beside it: create {name}.txt.j2 in {self.directory}")
        return TemplateInfo(
            name=name,
            subject=_text_setting(settings, "subject", sidecar),
            variables=_variables_setting(settings, sidecar),
            description=_text_setting(settings, "description", sidecar),
            has_html=(self.directory / f"{name}.html.j2").is_file(),
            defaults=_defaults_setting(settings, sidecar),
        )

    def check_vars(self, name: str, given: Iterable[str]) -> None:
        """Refuse ``--var`` names the template does not declare, so a typo is not silently ignored."""
        info = self.info(name)
        unknown = sorted(set(given) - set(info.variables))
        if unknown:
            declared = ", ".join(info.variables) or "none"
            raise TemplateError(
                f"template {name!r} has no variable {', '.join(unknown)}; it declares: {declared} (see {name}.toml)"
            )

    def check(self, name: str) -> TemplateInfo:
        """Compile every part of template `name` without rendering it, so an administrator can test an edit."""
        info = self.info(name)
        self._compile_subject(info)
        for filename in _body_files(info):
            self._load(filename)
        return info

    def render(self, name: str, context: Mapping[str, object]) -> RenderedReply:
        """Render template `name`: missing variables are reported first, then any template error is explained."""
        info = self.info(name)
        values = {**dict(info.defaults), **context}
        _check_required(info, values)
        self._env.budget = _Budget(RENDER_SECONDS)
        subject_template = self._compile_subject(info)
        subject = ""
        if subject_template is not None:
            subject = one_line(self._run(subject_template, values, info, f"{name}.toml (subject)"))
        text = tidy_text(self._run(self._load(f"{name}.txt.j2"), values, info, f"{name}.txt.j2"))
        html = self._run(self._load(f"{name}.html.j2"), values, info, f"{name}.html.j2") if info.has_html else None
        return RenderedReply(subject=subject or None, text=text, html=html)

    def _names(self) -> builtins.list[str]:
        if not self.directory.is_dir():
            raise TemplateError(
                f"the template folder {self.directory} does not exist; set [replies] templates_dir to the folder "
                "that holds the reply templates, or leave it empty for the templates that ship with kcc-mail"
            )
        return sorted(path.stem for path in self.directory.glob("*.toml") if _TEMPLATE_NAME.fullmatch(path.stem))

    def _check_name(self, name: str) -> None:
        if not _TEMPLATE_NAME.fullmatch(name):
            raise TemplateError(
                f"{name!r} is not a template name: names use only a-z, 0-9, '_' and '-' (at most 64 characters); "
                f"available templates: {self._available()}"
            )

    def _unknown(self, name: str) -> TemplateError:
        if (self.directory / f"{name}.txt.j2").is_file():
            return TemplateError(
                f"{name!r} in {self.directory} is a layout, not a reply template (it has no {name}.toml); "
                f"available templates: {self._available()}"
            )
        return TemplateError(f"no template {name!r} in {self.directory}; available templates: {self._available()}")

    def _available(self) -> str:
        try:
            return ", ".join(self._names()) or "none"
        except TemplateError:
            return "none (the folder does not exist)"

    def _compile_subject(self, info: TemplateInfo) -> Template | None:
        if not info.subject.strip():
            return None
        if (compiled := self._subjects.get(info.subject)) is not None:
            return compiled
        try:
            compiled = self._env.from_string(info.subject)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"{self.directory / (info.name + '.toml')}: the subject pattern {info.subject!r} is not valid Jinja: "
                f"{exc.message}; fix the subject line"
            ) from None
        if len(self._subjects) >= SUBJECTS_KEPT:
            self._subjects.clear()
        self._subjects[info.subject] = compiled
        return compiled

    def _load(self, filename: str) -> Template:
        try:
            return self._env.get_template(filename)
        except TemplateSyntaxError as exc:
            raise _syntax_error(exc, self.directory) from None
        except TemplateNotFound as exc:
            raise TemplateError(
                f"{filename} refers to {exc.name!r}, which is not in {self.directory}; "
                "fix the name in its extends/include line or add the file"
            ) from None

    def _run(self, template: Template, values: Mapping[str, object], info: TemplateInfo, part: str) -> str:
        return run(self._env, template, values, info.name, part, lambda exc: _syntax_error(exc, self.directory),
                   self.directory)
@lru_cache(maxsize=8)
def reply_templates(directory: Path) -> ReplyTemplates:
    """The process's ReplyTemplates for `directory`, so compiled templates are reused from one decision to the next."""
    return ReplyTemplates(directory)


def _body_files(info: TemplateInfo) -> tuple[str, ...]:
    html = (f"{info.name}.html.j2",) if info.has_html else ()
    return (f"{info.name}.txt.j2", *html)


def _syntax_error(exc: TemplateSyntaxError, directory: Path) -> TemplateError:
    where = exc.filename or str(directory / (exc.name or "?"))
    return TemplateError(f"{where}, line {exc.lineno}: {exc.message}; fix the template")


def _read_sidecar(sidecar: Path) -> dict[str, object]:
    try:
        settings = tomllib.loads(sidecar.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{sidecar} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{sidecar} cannot be read: {exc}") from None
    unknown = sorted(set(settings) - set(SIDECAR_KEYS))
    if unknown:
        raise TemplateError(
            f"{sidecar} has unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(SIDECAR_KEYS)}"
        )
    return settings


def _text_setting(settings: Mapping[str, object], key: str, sidecar: Path) -> str:
    value = settings.get(key, "")
    if not isinstance(value, str):
        raise TemplateError(f'{sidecar}: {key} must be text in quotes, e.g. {key} = "…"')
    return value


def _variables_setting(settings: Mapping[str, object], sidecar: Path) -> tuple[str, ...]:
    value = settings.get("variables", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TemplateError(f'{sidecar}: variables must be a list of names, e.g. variables = ["afdeling"]')
    names = tuple(str(item) for item in value)
    bad = [name for name in names if not _VARIABLE_NAME.fullmatch(name)]
    if bad:
        raise TemplateError(
            f"{sidecar}: {', '.join(map(repr, bad))} cannot be a variable name; use a-z, 0-9 and '_', "
            "starting with a letter or '_'"
        )
    if len(set(names)) != len(names):
        raise TemplateError(f"{sidecar}: a variable is listed twice in variables")
    return names


def _defaults_setting(settings: Mapping[str, object], sidecar: Path) -> tuple[tuple[str, str], ...]:
    value = settings.get("defaults", {})
    if not isinstance(value, dict):
        raise TemplateError(f'{sidecar}: defaults must be a table, e.g. defaults = {{ termijn_werkdagen = "5" }}')
    declared = _variables_setting(settings, sidecar)
    pairs: list[tuple[str, str]] = []
    for key, default in value.items():
        if key not in declared:
            raise TemplateError(f"{sidecar}: defaults names {key!r}, which is not listed in variables; add it there")
        if isinstance(default, bool) or not isinstance(default, str | int):
            raise TemplateError(f'{sidecar}: the default of {key} must be text, e.g. {key} = "5"')
        pairs.append((key, str(default)))
    return tuple(pairs)


def _check_required(info: TemplateInfo, values: Mapping[str, object]) -> None:
    missing = [name for name in info.required if _is_blank(values.get(name))]
    if missing:
        how = " ".join(f"--var {name}=…" for name in missing)
        raise TemplateError(f"template {info.name!r} needs {', '.join(missing)}: pass {how}")


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
