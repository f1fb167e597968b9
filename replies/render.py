"""Rendering reply templates safely: a sandbox, and a budget of time, size and memory for every template.

Templates are edited by functional administrators, so they run in Jinja2's immutable sandbox with
``StrictUndefined``: a template cannot reach Python internals, cannot change the values it is given, and a
misspelt variable is an error instead of an empty gap in a letter to a citizen. HTML templates are autoescaped;
text templates are not (they are sent as text/plain, where escaping would show up as ``&amp;``).

A template is also code that can run away: ``{{ 'a' * 300000000 }}`` would fill the memory, two nested
``range(100000)`` loops never end. So every value a multiplication or power makes is bounded (MAX_VALUE_CHARS),
every rendered part is bounded (MAX_OUTPUT_CHARS), ``range`` checks the clock, and replies.render_worker runs the
whole render in a process of its own that is stopped after its time budget. The folder with the templates, their
sidecars and the compiled-template cache is replies.templates.

The standard context the caller passes (see :data:`STANDARD_CONTEXT`):

- ``organisatie`` — the organisation's name (``[organisatie] naam``);
- ``handtekening`` — the signature text; empty means the base layout signs with
  "Met vriendelijke groet, Klantcontactcentrum {organisatie}";
- ``klant_naam`` — the customer's display name, or empty (the layout then says "Beste heer/mevrouw");
- ``onderwerp`` — the subject of the customer's mail (the filter ``kaal`` takes its Re:/Fwd: prefixes off);
- ``referentienummer`` — the number of the customer's klantcontact;
- ``ontvangen_op`` — when the customer sent the mail (its Date, else when it arrived), as Dutch text;
- ``tekst`` — the employee's own text (used by ``antwoord``; empty for other templates);

plus the employee's ``--var name=value`` values. A declared variable without a default must be present and not
blank; a declared variable with a default may be left out or blank.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from markupsafe import Markup, escape

STANDARD_CONTEXT: tuple[str, ...] = (
    "organisatie",
    "handtekening",
    "klant_naam",
    "onderwerp",
    "referentienummer",
    "ontvangen_op",
    "tekst",
)

MAX_VALUE_CHARS = 1_000_000
"""The longest string or list a template may make with `*` (or the most digits with `**`)."""
MAX_OUTPUT_CHARS = 2_000_000
"""The most characters one rendered part (subject, text, HTML) may have."""
RENDER_SECONDS = 5.0
"""How long rendering one reply may take, all parts together."""

_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_BLANK_LINES = re.compile(r"\n{3,}")
_REPLY_PREFIXES = re.compile(r"^(?:\s*(?:re|aw|antw|fwd?|wg|doorst|tr|sv|vs)(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
# What a template's own code can do wrong at render time besides Jinja's errors (e.g. {{ 1 / 0 }}, huge ranges).
_RUNTIME_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError, MemoryError)


class TemplateError(Exception):
    """A reply template is missing, malformed, unsafe, too costly or lacks a value; the message says what to do."""


@dataclass(frozen=True, slots=True)
class RenderedReply:
    """A rendered template: the subject (None means "Re: <original subject>"), the text and the optional HTML."""

    subject: str | None
    text: str
    html: str | None


def alineas(value: object) -> Markup:
    """Plain text as HTML paragraphs, so an employee's line breaks survive in the HTML part; always escaped."""
    paragraphs = _PARAGRAPH_BREAK.split(str(value).strip().replace("\r\n", "\n"))
    html = (Markup("<br>\n").join(escape(line) for line in part.split("\n")) for part in paragraphs if part.strip())
    return Markup("\n").join(Markup("<p>{}</p>").format(part) for part in html)


def kaal(value: object) -> str:
    """A subject without the reply and forward prefixes mail programs pile up ("RE: Re: AW: Vraag" → "Vraag")."""
    return _REPLY_PREFIXES.sub("", " ".join(str(value).split()), count=1)


class _Budget:
    """The clock one render runs against; `range` and the output loop look at it."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateBudgetExceeded(f"rendering took longer than {self.seconds:g} s")


class TemplateBudgetExceeded(SecurityError):
    """A template used more time, memory or output than a reply may take."""


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded and a `range` that watches the clock."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, loader: BaseLoader | None = None) -> None:
        super().__init__(
            loader=loader,
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=True,
        )
        self.filters["alineas"] = alineas
        self.filters["kaal"] = kaal
        self.budget = _Budget(RENDER_SECONDS)
        self.globals["range"] = self._range

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            return operator.mul(left, right)
        if operator_name == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * _digits(left) > \
                    MAX_VALUE_CHARS:
                raise TemplateBudgetExceeded(f"{left} ** {right} would have more than {MAX_VALUE_CHARS} digits")
            return operator.pow(left, right)
        return super().call_binop(context, operator_name, left, right)

    def _range(self, *arguments: int) -> Iterator[int]:
        """The sandbox's range (at most 100,000 items), looking at the clock every 1,000 of them."""
        for index, value in enumerate(safe_range(*arguments)):
            if index % 1000 == 0:
                self.budget.check()
            yield value


def _check_repeat(sequence: Any, times: Any) -> None:
    counted = isinstance(times, int) and not isinstance(times, bool)
    repeats = counted and isinstance(sequence, str | bytes | list | tuple)
    if repeats and len(sequence) * times > MAX_VALUE_CHARS:
        raise TemplateBudgetExceeded(f"a value of {len(sequence)} × {times} characters is more than {MAX_VALUE_CHARS}")


def _digits(number: int) -> int:
    return max(1, len(str(abs(number))))


def run(
    env: BudgetedSandbox, template: Template, values: Mapping[str, object], name: str, part: str,
    syntax_error: Callable[[TemplateSyntaxError], TemplateError], directory: object,
) -> str:
    """Render one part within the budget; every way a template can fail becomes a TemplateError saying what to fix."""
    try:
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(values):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateBudgetExceeded(f"it produced more than {MAX_OUTPUT_CHARS} characters")
            env.budget.check()
            chunks.append(chunk)
        return "".join(chunks)
    except TemplateBudgetExceeded as exc:
        raise TemplateError(
            f"template {name!r} ({part}) was stopped: {exc}; a reply template may not loop or grow like that"
        ) from None
    except SecurityError as exc:
        raise TemplateError(
            f"template {name!r} ({part}) does something the sandbox forbids: {exc}; a template may only "
            "show the values it is given"
        ) from None
    except UndefinedError as exc:
        raise TemplateError(
            f"template {name!r} ({part}) uses a value that is not there: {exc.message}; declare it under "
            f"variables in {name}.toml and pass it with --var, or correct the spelling"
        ) from None
    except TemplateSyntaxError as exc:
        raise syntax_error(exc) from None
    except TemplateNotFound as exc:
        raise TemplateError(
            f"template {name!r} ({part}) includes {exc.name!r}, which is not in {directory}"
        ) from None
    except (JinjaTemplateError, *_RUNTIME_ERRORS) as exc:
        raise TemplateError(f"template {name!r} ({part}) failed: {type(exc).__name__}: {exc}; fix the template") \
            from None


def one_line(text: str) -> str:
    """A subject is one line: any line break or run of white space a pattern produced becomes one space."""
    return " ".join(text.split())


def tidy_text(text: str) -> str:
    """Text as a customer should see it: no trailing spaces, at most one empty line in a row, one final newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"
