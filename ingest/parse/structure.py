"""The checks around the one parse: repair of the mail's start, and the bounds on the parsed tree.

The repair runs before parsing because the stdlib loses the whole header on a BOM or leading blank lines;
the tree check runs right after it, before any decoding work, so a hostile mail fails fast on `ParseLimits`.
"""

from __future__ import annotations

import codecs
import re
from email.message import Message

from ingest.parse.charsets import charset_hint
from ingest.parse.context import ParseContext
from ingest.parse.model import MailLimitExceeded, UnparseableMail
from ingest.parse.payload import raw_payload

_LEADING_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n|\n|\r))+")
_OBSOLETE_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)  # "Subject  : x" (RFC 5322 obs)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def repair_start(raw: bytes, ctx: ParseContext) -> bytes:
    """Reject empty input; repair what makes the stdlib lose the whole header (BOM, blank lines, obs names)."""
    data = raw
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        ctx.note("byte order mark before the header: removed")
    if not data.strip():
        raise UnparseableMail(f"empty mail: {len(raw)} bytes, no header and no body")
    blank = _LEADING_BLANK_LINES.match(data)
    if blank:
        data = data[blank.end():]
        ctx.note("blank lines before the header: removed")
    end = header_end(data)
    if _OBSOLETE_HEADER_NAME.search(data, 0, end):
        data = _OBSOLETE_HEADER_NAME.sub(rb"\1:", data[:end]) + data[end:]
        ctx.note("whitespace between header name and colon (obsolete syntax): removed")
    return data


def header_end(data: bytes) -> int:
    found = _BLANK_LINE.search(data)
    return found.start() if found else len(data)


def check_tree(msg: Message, ctx: ParseContext, depth: int = 0) -> None:
    """Enforce depth/part/time limits over a (sub)tree (iteratively), note the parser's defects and
    pick the charset hint for undeclared 8-bit text."""
    limits = ctx.limits
    stack: list[tuple[Message, int, bool]] = [(msg, depth, False)]
    while stack:
        part, depth, in_attached = stack.pop()
        ctx.parts += 1
        if ctx.parts > limits.max_parts:
            raise MailLimitExceeded(
                f"the mail has more than {limits.max_parts} MIME parts (ParseLimits.max_parts)"
            )
        if depth > limits.max_depth:
            raise MailLimitExceeded(
                f"the MIME structure is nested more than {limits.max_depth} levels deep "
                "(ParseLimits.max_depth)"
            )
        ctx.check_time()
        _note_parser_defects(part, in_attached, ctx)
        if ctx.charset_hint is None and not in_attached:
            ctx.charset_hint = charset_hint(part.get_content_charset())
        payload = raw_payload(part)
        if isinstance(payload, list):
            inner = in_attached or part.get_content_maintype() == "message"
            stack.extend((child, depth + 1, inner) for child in reversed(payload) if isinstance(child, Message))


def _note_parser_defects(part: Message, in_attached: bool, ctx: ParseContext) -> None:
    for defect in part.defects:
        text = _DEFECT_TEXT.get(type(defect).__name__)
        if text is None:
            text = f"MIME defect: {type(defect).__name__}"
        if text:
            ctx.note(f"in an attached message: {text}" if in_attached else text)


_DEFECT_TEXT = {
    "CloseBoundaryNotFoundDefect": "missing closing boundary: the last part runs to the end of the mail",
    "StartBoundaryNotFoundDefect": "multipart boundary not found in the body",
    "NoBoundaryInMultipartDefect": "multipart without boundary parameter",
    "MultipartInvariantViolationDefect": "",  # always comes with one of the two above
    "FirstHeaderLineIsContinuationDefect": "first header line starts with whitespace: line ignored",
    "MissingHeaderBodySeparatorDefect": "a line without colon inside a header block: taken as start of body",
    "MisplacedEnvelopeHeaderDefect": "'From ' envelope line inside a header block: ignored",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with a content-transfer-encoding: ignored",
}


def check_header_size(msg: Message, ctx: ParseContext) -> None:
    size = sum(len(str(name)) + len(str(value)) + 4 for name, value in msg.raw_items())
    if size > ctx.limits.max_header_bytes:
        raise MailLimitExceeded(
            f"the header block is {size} bytes, more than {ctx.limits.max_header_bytes} "
            "(ParseLimits.max_header_bytes)"
        )
