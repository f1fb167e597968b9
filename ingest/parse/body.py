"""The body walk: every part becomes visible body text or an attachment, so nothing in a mail is lost.

Also picks one alternative of ``multipart/alternative``, repairs multiparts with a broken boundary and turns
HTML into text.
"""

from __future__ import annotations

import html as html_lib
import re
from email import policy as email_policy
from email.message import Message
from email.parser import Parser
from typing import Any

import inscriptis

from ingest.parse.attachments import add_attachment
from ingest.parse.context import ParseContext, clean_text
from ingest.parse.html_text import TREE_MAX_CHARS, streamed_text
from ingest.parse.model import Attachment, ParseError
from ingest.parse.payload import flatten, part_text, raw_payload
from ingest.parse.reports import delivery_report
from ingest.parse.structure import check_tree

Slot = tuple[str, str]  # ("plain" | "html", decoded text): one piece of the visible body


_BODY_TYPES = frozenset({"text/plain", "text/html"})


def _collect(part: Message, depth: int, slots: list[Slot], ctx: ParseContext) -> None:
    """Walk one part: body text goes to `slots`, everything else becomes an attachment (never lost).

    Recursion depth is safe here: `check_tree` has already bounded the nesting by `max_depth`.
    Attached messages (message/rfc822) are kept whole as attachments and not walked for body text.
    """
    ctx.check_time()
    ctype = part.get_content_type()
    if ctype.startswith("multipart/"):
        _collect_multipart(part, ctype, depth, slots, ctx)
    elif ctype.startswith("message/"):
        add_attachment(part, ctx)
    elif ctype in _BODY_TYPES and not _is_attachment(part):
        text = part_text(part, ctx, ctype)
        if ctype == "text/html":
            if ctx.html is None:
                ctx.html = text
            slots.append(("html", text))
        else:
            slots.append(("plain", text))
    else:
        add_attachment(part, ctx)


def _collect_multipart(part: Message, ctype: str, depth: int, slots: list[Slot], ctx: ParseContext) -> None:
    children = raw_payload(part)
    if not isinstance(children, list):
        children = _repair_multipart(part, ctype, depth, ctx)
    if not isinstance(children, list):
        ctx.note(f"{ctype} without readable parts: its body is kept as plain text")
        slots.append(("plain", part_text(part, ctx, ctype)))
        return
    if ctype == "multipart/report" and ctx.report is None:
        ctx.report = delivery_report(part, children, ctx)
    if ctype == "multipart/alternative":
        choices: list[list[Slot]] = []
        for child in children:
            choice: list[Slot] = []
            collect_guarded(child, depth + 1, choice, ctx)
            choices.append(choice)
        # the plain alternative, unless it is empty (some mailers send an empty one next to real HTML)
        with_plain = [c for c in choices if any(kind == "plain" and text.strip() for kind, text in c)]
        with_text = [c for c in choices if any(text.strip() for _kind, text in c)]
        slots.extend((with_plain or with_text or [[]])[0])
        return
    for child in children:
        collect_guarded(child, depth + 1, slots, ctx)


def collect_guarded(child: Any, depth: int, slots: list[Slot], ctx: ParseContext) -> None:
    """Collect one part; a part that breaks a library is kept as raw bytes rather than failing the mail."""
    if not isinstance(child, Message):
        return
    try:
        _collect(child, depth, slots, ctx)
    except (ParseError, RecursionError, MemoryError):
        raise
    except Exception as exc:
        ctx.note(f"a {child.get_content_type()} part could not be read ({type(exc).__name__}: {exc}): "
                 "kept as raw bytes")
        try:
            data = flatten(child, ctx.linesep)
        except Exception:  # the part cannot even be re-serialised; the .eml of the whole mail still has it
            return
        index = len(ctx.attachments) + 1
        ctx.attachments.append(Attachment.of(f"bijlage-{index}.bin", "application/octet-stream", data))


_GUESS_BOUNDARY = re.compile(r'^--([^\s"]{1,200}?)(?:--)?[ \t]*\r?$', re.MULTILINE)


def _repair_multipart(part: Message, ctype: str, depth: int, ctx: ParseContext) -> list[Message] | None:
    """A multipart without (a working) boundary: guess it from the first ``--...`` line and re-split."""
    payload = raw_payload(part)
    if not isinstance(payload, str):
        return None
    found = _GUESS_BOUNDARY.search(payload)
    if not found:
        return None
    boundary = found.group(1)
    reparsed = Parser(policy=email_policy.compat32).parsestr(
        f'Content-Type: {ctype}; boundary="{boundary}"\n\n{payload}'
    )
    payload_parts = raw_payload(reparsed)
    if not isinstance(payload_parts, list):
        return None
    children = [child for child in payload_parts if isinstance(child, Message)]
    if not children:
        return None
    ctx.parts -= 1  # the re-parsed container is this part, already counted
    check_tree(reparsed, ctx, depth)
    new_payload: list[Message | str] = list(children)
    part.set_payload(new_payload)
    part.set_param("boundary", boundary)
    ctx.note(f"{ctype} with a missing or wrong boundary parameter: boundary guessed from the body")
    return children


def _is_attachment(part: Message) -> bool:
    """A text part is body text unless it is marked as attachment or carries a file name."""
    return part.get_content_disposition() == "attachment" or bool(
        part.get_param("filename", None, "content-disposition") or part.get_param("name", None)
    )


def body_text(slots: list[Slot], ctx: ParseContext) -> str:
    texts = [text if kind == "plain" else _html_to_text(text, ctx) for kind, text in slots]
    if not any(t.strip() for t in texts) and ctx.tnef_body:
        texts = [ctx.tnef_body]
    if len(texts) == 1:
        return clean_text(texts[0])
    return clean_text("\n\n".join(t.strip("\n") for t in texts if t.strip()))


def _html_to_text(html: str, ctx: ParseContext) -> str:
    try:
        if len(html) > TREE_MAX_CHARS:
            ctx.note(f"HTML body of {len(html):,} characters: its text taken without layout "
                     f"(over {TREE_MAX_CHARS:,})")
            return streamed_text(html)
        return str(inscriptis.get_text(html))
    except Exception as exc:  # lxml/inscriptis on hostile HTML: fall back to stripping tags
        ctx.note(f"HTML could not be converted to text ({type(exc).__name__}): tags stripped instead")
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", html))
