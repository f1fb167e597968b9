"""Turn the raw bytes of one mail into a `ParsedMail`: pure (no I/O), defensive and bounded.

Mail from the internet is broken as a rule, so every repair or fallback is written down in
`ParsedMail.defects` instead of failing. Only two things raise (both a `ParseError`, which the caller turns
into a quarantine reason code):

* `UnparseableMail` (``unparseable``): empty input, or data without any header line (not a mail at all);
* `MailLimitExceeded` (``limits``): more nesting, parts, header bytes or time than `ParseLimits` allows.

The parser is the standard library's ``email`` package with the ``compat32`` policy: its feed parser accepts
any byte sequence, records defects instead of raising, and keeps the original bytes of every header and body
reachable (8-bit data is carried as surrogate escapes). That makes one parse enough. mail-parser is not used
here: it parses with the same stdlib parser underneath, adds work this service does not need, and fails on
inputs this module has to survive (a multipart without closing boundary). Decoding (transfer encodings,
charsets, RFC 2047/2231 words) is done here, with fallbacks, because the stdlib's ``policy.default`` accessors
raise on unknown charsets and missing boundaries.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import html as html_lib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser, Parser
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache
from io import BytesIO
from typing import Any, ClassVar

import inscriptis
from tnefparse.tnef import TNEF

__all__ = [
    "DEFAULT_LIMITS",
    "Attachment",
    "DeliveryReport",
    "MailLimitExceeded",
    "ParseError",
    "ParseLimits",
    "ParsedMail",
    "UnparseableMail",
    "parse_mail",
    "safe_filename",
]

SYNTHETIC_ID_DOMAIN = "kcc-mail.invalid"
MAX_DEFECTS = 50
MAX_FILENAME_CHARS = 255
MAX_MESSAGE_ID_CHARS = 995  # RFC 5322 line limit minus "<>": longer ids are junk and break unique indexes


# --------------------------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep one hostile mail from stalling or exhausting the intake loop."""

    max_depth: int = 50  # nesting of multipart and message/* containers, top level = 0
    max_parts: int = 1000  # MIME parts in the whole tree, attached messages included
    max_seconds: float = 10.0  # checked at every part boundary
    max_header_bytes: int = 1_048_576  # size of the top-level header block


DEFAULT_LIMITS = ParseLimits()


class ParseError(Exception):
    """The mail cannot become a `ParsedMail`; the caller stores it in quarantine with `reason_code`."""

    reason_code: ClassVar[str] = "unparseable"


class MailLimitExceeded(ParseError):
    """The mail goes beyond a `ParseLimits` bound (nesting, parts, header size, time)."""

    reason_code: ClassVar[str] = "limits"


class UnparseableMail(ParseError):
    """The data is not a mail at all (empty, no header), or a library failed in a way no fallback covers."""

    reason_code: ClassVar[str] = "unparseable"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached file. `filename` is display data, safe to show and store, never a path to trust.

    `content_id` is stored without angle brackets (as HTML ``cid:`` references use it). `unpacked_from`
    names the container (``winmail.dat``) a file was unpacked from; the container itself is kept too.
    """

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    sha256: str
    inline: bool = False
    content_id: str | None = None
    unpacked_from: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def of(
        cls,
        filename: str,
        content_type: str,
        data: bytes,
        *,
        inline: bool = False,
        content_id: str | None = None,
        unpacked_from: str | None = None,
    ) -> Attachment:
        """Build an attachment, computing its sha256 so the two can never disagree."""
        return cls(
            filename, content_type, data, hashlib.sha256(data).hexdigest(), inline, content_id, unpacked_from
        )


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The machine-readable parts of a ``multipart/report`` (RFC 6522): what the classifier needs.

    `status` is the text of the ``message/delivery-status`` (or feedback-report, disposition-notification)
    part; `original_headers` the header block of the returned message (``message/rfc822`` or
    ``text/rfc822-headers``), one ``Name: value`` per line.
    """

    report_type: str
    status: str
    original_headers: str


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """Everything intake, classification and review need from one mail; all strings are free of NUL."""

    message_id: str
    message_id_synthetic: bool
    from_name: str
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    date: datetime | None
    date_from_header: bool
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    content_type: str
    defects: tuple[str, ...]
    report: DeliveryReport | None = None

    def header(self, name: str) -> str | None:
        """The first top-level header called `name` (case-insensitive), decoded; None when absent."""
        key = name.lower()
        return next((value for hname, value in self.headers if hname.lower() == key), None)

    def header_values(self, name: str) -> tuple[str, ...]:
        """All top-level headers called `name` (case-insensitive), decoded, in mail order."""
        key = name.lower()
        return tuple(value for hname, value in self.headers if hname.lower() == key)


# ------------------------------------------------------------------------------------------- entry point


def parse_mail(
    raw: bytes, *, received_at: datetime | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedMail:
    """Parse one mail. Raises only `ParseError` subclasses; every other failure is converted into one."""
    ctx = _Context(limits)
    try:
        return _parse(bytes(raw), received_at, ctx)
    except ParseError:
        raise
    except RecursionError as exc:
        raise MailLimitExceeded(
            "the MIME structure is nested too deeply for the parser (RecursionError); "
            "the mail is kept in quarantine as it is"
        ) from exc
    except MemoryError as exc:
        raise MailLimitExceeded("not enough memory to parse this mail; it is kept in quarantine") from exc
    except Exception as exc:
        raise UnparseableMail(
            f"the mail parser failed unexpectedly ({type(exc).__name__}: {exc}); "
            "the mail is kept in quarantine, please report it with the quarantine id"
        ) from exc


# --------------------------------------------------------------------------------------- parse pipeline


_Slot = tuple[str, str]  # ("plain" | "html", decoded text): one piece of the visible body


class _Context:
    """Mutable state of one parse: limits, clock, the defect notes and what the body walk collects."""

    __slots__ = (
        "attachments",
        "charset_hint",
        "deadline",
        "defects",
        "html",
        "limits",
        "linesep",
        "parts",
        "report",
        "tnef_body",
    )

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.parts = 0
        self.defects: list[str] = []
        self.attachments: list[Attachment] = []
        self.html: str | None = None
        self.report: DeliveryReport | None = None
        self.tnef_body: str | None = None
        self.linesep = "\r\n"
        self.charset_hint: str | None = None  # for raw 8-bit headers and undeclared parts

    def note(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < MAX_DEFECTS:
            self.defects.append(_clean_line(text))

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise MailLimitExceeded(
                f"parsing took longer than {self.limits.max_seconds:g} s (ParseLimits.max_seconds)"
            )


def _parse(raw: bytes, received_at: datetime | None, ctx: _Context) -> ParsedMail:
    data = _repair_start(raw, ctx)
    msg = _parse_tree(data)
    if not msg.keys():
        raise UnparseableMail(
            "no header found: the data does not start with 'Name: value' header lines, so it is not "
            "an RFC 5322 mail (a plain text file or an Outlook .msg file?)"
        )
    ctx.linesep = "\r\n" if b"\r\n" in data[: _header_end(data) + 2] else "\n"
    _check_tree(msg, ctx)
    _check_header_size(msg, ctx)

    raw_headers = [(str(name), str(value)) for name, value in msg.raw_items()]
    headers = tuple((_header_text(name, ctx, "header name"), _header_text(value, ctx, name))
                    for name, value in raw_headers)
    first = _first_values(raw_headers)

    slots: list[_Slot] = []
    _collect_guarded(msg, 0, slots, ctx)
    message_id, synthetic = _message_id(first.get("message-id", ""), raw, ctx)
    date, from_header = _mail_date(first.get("date"), received_at, ctx)
    from_name, from_address = _sender(_all_values(raw_headers, "from"), ctx)

    return ParsedMail(
        message_id=message_id,
        message_id_synthetic=synthetic,
        from_name=from_name,
        from_address=from_address,
        to=_address_list(_all_values(raw_headers, "to"), ctx),
        cc=_address_list(_all_values(raw_headers, "cc"), ctx),
        reply_to=_address_list(_all_values(raw_headers, "reply-to"), ctx),
        subject=_header_text(first.get("subject", ""), ctx, "Subject"),
        date=date,
        date_from_header=from_header,
        in_reply_to=next(iter(_message_ids(first.get("in-reply-to", ""))), None),
        references=_message_ids(first.get("references", "")),
        text=_body_text(slots, ctx),
        html=ctx.html,
        attachments=tuple(ctx.attachments),
        headers=headers,
        content_type=msg.get_content_type(),
        defects=tuple(ctx.defects),
        report=ctx.report,
    )


_LEADING_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n|\n|\r))+")
_OBSOLETE_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)  # "Subject  : x" (RFC 5322 obs)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _repair_start(raw: bytes, ctx: _Context) -> bytes:
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
    end = _header_end(data)
    if _OBSOLETE_HEADER_NAME.search(data, 0, end):
        data = _OBSOLETE_HEADER_NAME.sub(rb"\1:", data[:end]) + data[end:]
        ctx.note("whitespace between header name and colon (obsolete syntax): removed")
    return data


def _header_end(data: bytes) -> int:
    found = _BLANK_LINE.search(data)
    return found.start() if found else len(data)


def _parse_tree(data: bytes) -> Message:
    """One parse with the tolerant compat32 feed parser; it records defects instead of raising."""
    return BytesParser(policy=email_policy.compat32).parsebytes(data)


def _check_tree(msg: Message, ctx: _Context, depth: int = 0) -> None:
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
            ctx.charset_hint = _charset_hint(part.get_content_charset())
        payload = _raw_payload(part)
        if isinstance(payload, list):
            inner = in_attached or part.get_content_maintype() == "message"
            stack.extend((child, depth + 1, inner) for child in reversed(payload) if isinstance(child, Message))


def _note_parser_defects(part: Message, in_attached: bool, ctx: _Context) -> None:
    for defect in part.defects:
        text = _DEFECT_TEXT.get(type(defect).__name__)
        if text is None:
            text = f"MIME defect: {type(defect).__name__}"
        if text:
            ctx.note(f"in an attached message: {text}" if in_attached else text)


def _charset_hint(label: str | None) -> str | None:
    codec = _codec_for(label)[0] if label else None
    return None if codec in (None, "ascii", "utf-8") else codec


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


def _check_header_size(msg: Message, ctx: _Context) -> None:
    size = sum(len(str(name)) + len(str(value)) + 4 for name, value in msg.raw_items())
    if size > ctx.limits.max_header_bytes:
        raise MailLimitExceeded(
            f"the header block is {size} bytes, more than {ctx.limits.max_header_bytes} "
            "(ParseLimits.max_header_bytes)"
        )


def _first_values(raw_headers: list[tuple[str, str]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in raw_headers:
        first.setdefault(name.strip().lower(), value)
    return first


def _all_values(raw_headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for hname, value in raw_headers if hname.strip().lower() == name]


# ------------------------------------------------------------------------------------ body and parts


_BODY_TYPES = frozenset({"text/plain", "text/html"})
_REPORT_STATUS_TYPES = frozenset({
    "message/delivery-status",
    "message/global-delivery-status",
    "message/feedback-report",
    "message/disposition-notification",
    "message/global-disposition-notification",
})
_RETURNED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})


def _collect(part: Message, depth: int, slots: list[_Slot], ctx: _Context) -> None:
    """Walk one part: body text goes to `slots`, everything else becomes an attachment (never lost).

    Recursion depth is safe here: `_check_tree` has already bounded the nesting by `max_depth`.
    Attached messages (message/rfc822) are kept whole as attachments and not walked for body text.
    """
    ctx.check_time()
    ctype = part.get_content_type()
    if ctype.startswith("multipart/"):
        _collect_multipart(part, ctype, depth, slots, ctx)
    elif ctype.startswith("message/"):
        _add_attachment(part, ctx)
    elif ctype in _BODY_TYPES and not _is_attachment(part):
        text = _part_text(part, ctx, ctype)
        if ctype == "text/html":
            if ctx.html is None:
                ctx.html = text
            slots.append(("html", text))
        else:
            slots.append(("plain", text))
    else:
        _add_attachment(part, ctx)


def _collect_multipart(part: Message, ctype: str, depth: int, slots: list[_Slot], ctx: _Context) -> None:
    children = _raw_payload(part)
    if not isinstance(children, list):
        children = _repair_multipart(part, ctype, depth, ctx)
    if not isinstance(children, list):
        ctx.note(f"{ctype} without readable parts: its body is kept as plain text")
        slots.append(("plain", _part_text(part, ctx, ctype)))
        return
    if ctype == "multipart/report" and ctx.report is None:
        ctx.report = _delivery_report(part, children, ctx)
    if ctype == "multipart/alternative":
        choices: list[list[_Slot]] = []
        for child in children:
            choice: list[_Slot] = []
            _collect_guarded(child, depth + 1, choice, ctx)
            choices.append(choice)
        # the plain alternative, unless it is empty (some mailers send an empty one next to real HTML)
        with_plain = [c for c in choices if any(kind == "plain" and text.strip() for kind, text in c)]
        with_text = [c for c in choices if any(text.strip() for _kind, text in c)]
        slots.extend((with_plain or with_text or [[]])[0])
        return
    for child in children:
        _collect_guarded(child, depth + 1, slots, ctx)


def _collect_guarded(child: Any, depth: int, slots: list[_Slot], ctx: _Context) -> None:
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
            data = _flatten(child, ctx.linesep)
        except Exception:  # the part cannot even be re-serialised; the .eml of the whole mail still has it
            return
        index = len(ctx.attachments) + 1
        ctx.attachments.append(Attachment.of(f"bijlage-{index}.bin", "application/octet-stream", data))


_GUESS_BOUNDARY = re.compile(r'^--([^\s"]{1,200}?)(?:--)?[ \t]*\r?$', re.MULTILINE)


def _repair_multipart(part: Message, ctype: str, depth: int, ctx: _Context) -> list[Message] | None:
    """A multipart without (a working) boundary: guess it from the first ``--...`` line and re-split."""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return None
    found = _GUESS_BOUNDARY.search(payload)
    if not found:
        return None
    boundary = found.group(1)
    reparsed = Parser(policy=email_policy.compat32).parsestr(
        f'Content-Type: {ctype}; boundary="{boundary}"\n\n{payload}'
    )
    payload_parts = _raw_payload(reparsed)
    if not isinstance(payload_parts, list):
        return None
    children = [child for child in payload_parts if isinstance(child, Message)]
    if not children:
        return None
    ctx.parts -= 1  # the re-parsed container is this part, already counted
    _check_tree(reparsed, ctx, depth)
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


def _body_text(slots: list[_Slot], ctx: _Context) -> str:
    texts = [text if kind == "plain" else _html_to_text(text, ctx) for kind, text in slots]
    if not any(t.strip() for t in texts) and ctx.tnef_body:
        texts = [ctx.tnef_body]
    if len(texts) == 1:
        return _clean_text(texts[0])
    return _clean_text("\n\n".join(t.strip("\n") for t in texts if t.strip()))


def _html_to_text(html: str, ctx: _Context) -> str:
    try:
        return str(inscriptis.get_text(html))
    except Exception as exc:  # lxml/inscriptis on hostile HTML: fall back to stripping tags
        ctx.note(f"HTML could not be converted to text ({type(exc).__name__}): tags stripped instead")
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", html))


# ------------------------------------------------------------------------------------------- attachments


_DEFAULT_EXTENSIONS = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "message/delivery-status": ".txt",
    "application/pdf": ".pdf",
    "application/ms-tnef": ".dat",
    "application/pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/pgp-signature": ".asc",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
}
_TYPES_BY_EXTENSION = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".htm": "text/html",
    ".html": "text/html",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".eml": "message/rfc822",
    ".zip": "application/zip",
}


def _add_attachment(part: Message, ctx: _Context) -> None:
    ctype = part.get_content_type()
    data = _message_part_bytes(part, ctx) if ctype.startswith("message/") else _part_bytes(part, ctx, ctype)
    index = len(ctx.attachments) + 1
    raw_name = _raw_filename(part, ctx)
    filename = safe_filename(raw_name, ctype, index)
    if raw_name and filename != raw_name.strip():
        ctx.note(f"attachment name with a path, control characters or leading dots: stored as {filename!r}")
    disposition = part.get_content_disposition()
    content_id = _content_id(part, ctx)
    attachment = Attachment.of(
        filename,
        ctype,
        data,
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        content_id=content_id,
    )
    ctx.attachments.append(attachment)
    if ctype == "application/ms-tnef" or filename.lower() == "winmail.dat":
        _unpack_tnef(attachment, ctx)


def _raw_filename(part: Message, ctx: _Context) -> str:
    """The decoded file name (RFC 2231 first, then RFC 2047 words, then raw 8-bit); '' when none."""
    value = part.get_param("filename", None, "content-disposition") or part.get_param("name", None)
    if not value:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as latin-1 code points)
        charset, _language, text = value
        data = str(text).encode("latin-1", "surrogateescape")
        return _clean_line(_decode_bytes(data, charset or None, ctx, "attachment name"))
    return _header_text(str(value), ctx, "attachment name")


_UNSAFE_NAME_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_PATH_SEPARATORS = re.compile(r"[\\/]")


def safe_filename(name: str, content_type: str = "application/octet-stream", index: int = 1) -> str:
    """A file name that is data, not a path: last path component, no control/bidi chars, no leading dots.

    At most 255 characters (the extension is kept when the name is cut). An empty result becomes
    ``bijlage-<index><ext>`` (``bericht-<index>.eml`` for an attached message).
    """
    cleaned = _UNSAFE_NAME_CHARS.sub("", name)
    components = [c for c in _PATH_SEPARATORS.split(cleaned) if c.strip(" .")]
    cleaned = components[-1].strip().lstrip(".").strip() if components else ""
    if len(cleaned) > MAX_FILENAME_CHARS:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            cleaned = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip() + "." + ext
        else:
            cleaned = cleaned[:MAX_FILENAME_CHARS]
    if cleaned:
        return cleaned
    if content_type in ("message/rfc822", "message/global"):
        return f"bericht-{index}.eml"
    return f"bijlage-{index}{_DEFAULT_EXTENSIONS.get(content_type, '.bin')}"


def _content_id(part: Message, ctx: _Context) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    text = _header_text(str(value), ctx, "Content-ID").strip().strip("<>").strip()
    return text or None


def _unpack_tnef(container: Attachment, ctx: _Context) -> None:
    """Add the files inside a winmail.dat next to it; on any failure keep only the container."""
    try:
        tnef = TNEF(container.data, do_checksum=False)
        files = [(_tnef_name(item), bytes(item.data or b"")) for item in tnef.attachments]
        body = tnef.body
    except Exception as exc:  # tnefparse on broken data raises anything from ValueError to IndexError
        ctx.note(f"TNEF attachment {container.filename!r} could not be unpacked "
                 f"({type(exc).__name__}: {exc}): kept as it is")
        return
    for name, data in files:
        index = len(ctx.attachments) + 1
        ctype = _TYPES_BY_EXTENSION.get(_extension(name), "application/octet-stream")
        ctx.attachments.append(Attachment.of(
            safe_filename(name, ctype, index), ctype, data, unpacked_from=container.filename
        ))
    if isinstance(body, bytes):
        body = _decode_bytes(body, None, ctx, "TNEF body")
    if isinstance(body, str) and body.strip() and ctx.tnef_body is None:
        ctx.tnef_body = body


def _tnef_name(item: Any) -> str:
    try:
        name = item.long_filename()
    except Exception:  # tnefparse decodes 8-bit names as utf-8 and raises on anything else
        name = getattr(item, "_name", b"")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace") if _is_utf8(name) else name.decode("cp1252", "replace")
    return str(name).strip("\x00")


def _extension(name: str) -> str:
    _stem, dot, ext = name.rpartition(".")
    return "." + ext.lower() if dot else ""


# ------------------------------------------------------------------------------ delivery reports (DSN)


def _delivery_report(part: Message, children: list[Any], ctx: _Context) -> DeliveryReport:
    """Collect a report's machine-readable parts; a missing report-type is taken from the status part."""
    declared = part.get_param("report-type", "")
    report_type = declared.strip().strip('"').lower() if isinstance(declared, str) else ""
    statuses: list[str] = []
    original = ""
    for child in children:
        if not isinstance(child, Message):
            continue
        ctype = child.get_content_type()
        if ctype in _REPORT_STATUS_TYPES:  # normally one; some MTAs send several
            statuses.append(_clean_text(_decode_bytes(_message_part_bytes(child, ctx), "utf-8", ctx, ctype)))
            report_type = report_type or ctype.removeprefix("message/").removeprefix("global-")
        elif not original and ctype in _RETURNED_MESSAGE_TYPES:
            original = _returned_headers(child, ctx)
    return DeliveryReport(report_type=report_type, status="\n\n".join(statuses), original_headers=original)


def _returned_headers(part: Message, ctx: _Context) -> str:
    payload = _raw_payload(part)
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return "\n".join(
            f"{_header_text(str(n), ctx, 'header name')}: {_header_text(str(v), ctx, str(n))}"
            for n, v in payload[0].raw_items()
        )
    return _part_text(part, ctx, part.get_content_type())


# ---------------------------------------------------------------------------- transfer encodings, text


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UU_ENCODINGS = frozenset({"xuuencode", "uuencode", "uue", "xuue"})


def _raw_payload(part: Message) -> Any:
    """The payload as parsed: a list of parts, or the body text with 8-bit bytes as surrogate escapes.

    ``Message.get_payload()`` would decode those bytes with the declared charset and errors='replace',
    losing them before we can decode them properly (and it raises nothing we could fall back on).
    """
    return getattr(part, "_payload", None)


def _payload_bytes(payload: str) -> bytes:
    """compat32 keeps body bytes as ASCII text with surrogate escapes; turn them back into the bytes."""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # only if a caller put real non-ASCII text in; keep it as UTF-8
        return payload.encode("utf-8", "surrogateescape")


def _transfer_encoding(part: Message) -> str:
    """The Content-Transfer-Encoding, normalised so 'Base-64', '"base64"' and 'base64;' all match."""
    value = part.get("content-transfer-encoding")
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def _part_bytes(part: Message, ctx: _Context, where: str) -> bytes:
    """The decoded body bytes of a leaf part; broken encodings decode as far as possible, noted."""
    payload = _raw_payload(part)
    if isinstance(payload, list):
        return _message_part_bytes(part, ctx)
    if not isinstance(payload, str):
        return b""
    encoding = _transfer_encoding(part)
    data = _payload_bytes(payload)
    if encoding == "base64":
        return _decode_base64(data, ctx, where)
    if encoding == "quotedprintable":
        return binascii.a2b_qp(data)
    if encoding in _UU_ENCODINGS:
        decoded = part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else data
    if encoding not in _IDENTITY_ENCODINGS:
        ctx.note(f"unknown Content-Transfer-Encoding in {where}: body kept undecoded")
    return data


def _decode_base64(data: bytes, ctx: _Context, where: str) -> bytes:
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        pass
    cleaned = _NOT_BASE64.sub(b"", data)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    ctx.note(f"broken base64 in {where}: decoded as far as possible")
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


def _message_part_bytes(part: Message, ctx: _Context) -> bytes:
    """The bytes of an attached message (or report block), re-serialised from the parsed tree."""
    payload = _raw_payload(part)
    if not isinstance(payload, list):
        return _part_bytes(part, ctx, part.get_content_type())
    messages = [p for p in payload if isinstance(p, Message)]
    data = ctx.linesep.encode().join(_flatten(m, ctx.linesep) for m in messages)
    encoding = _transfer_encoding(part)
    if encoding == "base64":  # not allowed for message/*, but sent: the "headers" were base64 lines
        return _decode_base64(data, ctx, part.get_content_type())
    if encoding == "quotedprintable":
        return binascii.a2b_qp(data)
    return data


def _flatten(msg: Message, linesep: str) -> bytes:
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=email_policy.compat32)
    generator.flatten(msg, linesep=linesep)
    return out.getvalue()


def _part_text(part: Message, ctx: _Context, where: str) -> str:
    data = _part_bytes(part, ctx, where)
    return _clean_text(_decode_bytes(data, part.get_content_charset(), ctx, where))


# --------------------------------------------------------------------------------------------- charsets


_CHARSET_SUPERSETS = {  # what mail clients really mean by these labels (as browsers decode them)
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-8859-1": "cp1252",
    "us-ascii": "ascii",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
}
_ASCII_CODECS = frozenset({"ascii"})
_NOT_ASCII_COMPATIBLE = ("utf-7", "utf-16", "utf-32", "iso2022", "hz")  # ASCII bytes mean other text
_MEANINGLESS_CHARSETS = frozenset({"unknown-8bit", "x-unknown", "unknown", "default", "charset"})


@lru_cache(maxsize=256)
def _codec_for(charset: str) -> tuple[str | None, str]:
    """(Python codec or None, note): resolves labels Python lacks (x-mac-cyrillic) to their codec."""
    label = charset.strip().strip("\"'").lower()
    if label in _MEANINGLESS_CHARSETS:
        return None, ""
    label = _CHARSET_SUPERSETS.get(label, label)
    if _is_text_codec(label):
        return codecs.lookup(label).name, ""
    for candidate in (label.removeprefix("x-"), label.replace("-", ""), label.replace("_", "-")):
        if candidate != label and _is_text_codec(candidate):
            name = codecs.lookup(candidate).name
            return name, f"non-standard charset {charset.strip()!r} read as {name}"
    return None, ""


def _is_text_codec(name: str) -> bool:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return False
    return bool(getattr(info, "_is_text_encoding", True))  # refuse bytes-to-bytes codecs (zlib, base64)


def _decode_bytes(data: bytes, charset: str | None, ctx: _Context, where: str) -> str:
    """Decode with the declared charset. Unknown, missing or wrong charsets fall back to utf-8 (the most
    common mislabel), then to the charset the mail declares elsewhere, then to windows-1252; each noted."""
    if not charset:
        if data.isascii():
            return data.decode("ascii")
        return _guess_decode(data, ctx, f"8-bit text without charset in {where}", quiet_utf8=True)
    codec, note = _codec_for(charset)
    if data.isascii() and (codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE)):
        return data.decode("ascii")
    if codec is None:
        return _guess_decode(data, ctx, f"unknown charset {charset.strip()!r} in {where}")
    if note:
        ctx.note(f"{note} in {where}")
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        pass
    if codec == "cp1252":  # the five bytes windows-1252 leaves undefined: read as iso-8859-1 controls
        return data.decode("latin-1")
    if codec in _ASCII_CODECS or (not codec.startswith(_NOT_ASCII_COMPATIBLE) and _is_utf8(data)):
        return _guess_decode(data, ctx, f"8-bit text not in its declared charset {charset.strip()!r} in {where}")
    if codec == "utf-8":  # mostly UTF-8 with pasted windows-1252 pieces: keep both readable
        ctx.note(f"invalid utf-8 bytes in {where}: read as windows-1252")
        return data.decode("utf-8", _CP1252_FOR_INVALID)
    ctx.note(f"invalid {charset.strip()} bytes in {where}: replaced by U+FFFD")
    return data.decode(codec, "replace")


def _cp1252_for_invalid(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: decode the bytes a codec rejects as windows-1252 instead of dropping them."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start:error.end].decode("cp1252", "replace"), error.end


_CP1252_FOR_INVALID = "kcc-mail-cp1252-for-invalid"
codecs.register_error(_CP1252_FOR_INVALID, _cp1252_for_invalid)


def _guess_decode(data: bytes, ctx: _Context, what: str, *, quiet_utf8: bool = False) -> str:
    """utf-8, else the mail's own charset hint, else windows-1252 (which never fails)."""
    if _is_utf8(data):
        if not quiet_utf8:
            ctx.note(f"{what}: decoded as utf-8")
        return data.decode("utf-8")
    hint = ctx.charset_hint
    if hint:
        try:
            text = data.decode(hint)
        except UnicodeDecodeError:
            pass
        else:
            ctx.note(f"{what}: decoded as {hint}, the charset declared elsewhere in the mail")
            return text
    ctx.note(f"{what}: decoded as windows-1252")
    return data.decode("cp1252", "replace")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -------------------------------------------------------------------------------------------- headers


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+?)\?([QqBb])\?([^?]*?)\?=")
_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _header_text(value: str, ctx: _Context, name: str) -> str:
    """A header value as one clean line: unfolded, RFC 2047 words and raw 8-bit decoded, no CR/LF/NUL."""
    if "\n" in value or "\r" in value:
        value = _LINE_BREAK.sub(" ", _FOLD.sub("", value))
    text = _decode_words(value, ctx, name) if "=?" in value else _decode_8bit(value, ctx, name)
    return _clean_line(text).strip()


def _decode_8bit(value: str, ctx: _Context, name: str) -> str:
    if value.isascii():
        return value
    return _decode_bytes(_payload_bytes(value), None, ctx, f"header {name}")


def _decode_words(value: str, ctx: _Context, name: str) -> str:
    """RFC 2047: whitespace between encoded words is dropped and adjacent words in one charset are joined
    as bytes before decoding, because mailers split multibyte characters across words."""
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset, ctx, f"header {name}"))
            pending.clear()
            pending_charset = None

    position = 0
    for word in _ENCODED_WORD.finditer(value):
        gap = value[position:word.start()]
        if gap and not (pending_charset is not None and gap.isspace()):
            flush()
            out.append(_decode_8bit(gap, ctx, name))
        charset = word.group(1).split("*", 1)[0]
        encoded = _payload_bytes(word.group(3))
        if word.group(2) in "Qq":
            chunk = binascii.a2b_qp(encoded, header=True)
        else:
            chunk = _decode_base64(encoded, ctx, f"header {name}")
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset
        pending.extend(chunk)
        position = word.end()
    flush()
    if position < len(value):
        out.append(_decode_8bit(value[position:], ctx, name))
    return "".join(out)


def _clean_text(text: str) -> str:
    """Body text for a database text column: no NUL or lone surrogates, and \\n line ends."""
    if not text.isascii() or "\x00" in text:
        text = _UNSAFE_TEXT.sub("\ufffd", text)
    return text.replace("\r\n", "\n") if "\r" in text else text


def _clean_line(text: str) -> str:
    """Header-safe text: `_clean_text` plus no CR/LF, so it can never inject a header downstream."""
    text = _clean_text(text)
    return text.replace("\r", " ").replace("\n", " ") if ("\n" in text or "\r" in text) else text


_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def _message_ids(value: str) -> tuple[str, ...]:
    """All ``<id>`` tokens of a Message-ID/In-Reply-To/References value, whitespace removed."""
    if not value:
        return ()
    ids = (_WHITESPACE.sub("", found) for found in _BRACKETED_ID.findall(value))
    return tuple(f"<{_clean_line(i)}>" for i in ids if i and len(i) <= MAX_MESSAGE_ID_CHARS)


def _message_id(value: str, raw: bytes, ctx: _Context) -> tuple[str, bool]:
    ids = _message_ids(value)
    if ids:
        return ids[0], False
    bare = _clean_line(_WHITESPACE.sub("", value)).strip("<>")
    if bare and len(bare) <= MAX_MESSAGE_ID_CHARS:
        ctx.note("Message-ID without angle brackets: brackets added")
        return f"<{bare}>", False
    if bare:
        ctx.note(f"Message-ID longer than {MAX_MESSAGE_ID_CHARS} characters: replaced by a synthetic id")
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@{SYNTHETIC_ID_DOMAIN}>", True


def _mail_date(value: str | None, received_at: datetime | None, ctx: _Context) -> tuple[datetime | None, bool]:
    """The Date header as an aware datetime in UTC; else `received_at` (naive values are taken as UTC).

    Converted to UTC here, where a failure is a defect: "31 Dec 9999 23:59:59 -1200" is a valid datetime whose
    UTC moment lies after the year 9999, and would otherwise fail later, when the row is written.
    """
    if value is not None and value.strip():
        try:
            parsed = parsedate_to_datetime(_LINE_BREAK.sub(" ", value).strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            ctx.note("Date header not readable: the receive time is used instead")
        else:
            try:
                return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC), True
            except OverflowError:
                ctx.note("Date header outside the years 1-9999 in UTC: the receive time is used instead")
    if received_at is not None and received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return received_at, False


_ADDRESS_FALLBACK = re.compile(r"[^\s<>()\[\]\"',;:\\@]+@[^\s<>()\[\]\"',;:\\@]+")


def _addresses(values: list[str], ctx: _Context) -> list[tuple[str, str]]:
    """(display name, address) pairs; unparseable entries are dropped, domains lower-cased."""
    if not values:
        return []
    unfolded = [_LINE_BREAK.sub(" ", _FOLD.sub("", v)) for v in values]
    pairs: list[tuple[str, str]] = []
    for name, address in getaddresses(unfolded):
        normal = _normal_address(_decode_8bit(address, ctx, "address"))
        if normal:
            pairs.append((_header_text(name, ctx, "address name"), normal))
    return pairs


def _normal_address(address: str) -> str:
    address = _clean_line(_WHITESPACE.sub("", address)).strip("<>")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return ""
    return f"{local}@{domain.lower()}"


def _address_list(values: list[str], ctx: _Context) -> tuple[str, ...]:
    return tuple(address for _name, address in _addresses(values, ctx))


def _sender(values: list[str], ctx: _Context) -> tuple[str, str]:
    pairs = _addresses(values, ctx)
    if pairs:
        return pairs[0]
    if not values:
        return "", ""
    text = _header_text(values[0], ctx, "From")
    found = _ADDRESS_FALLBACK.search(text)
    if found:
        ctx.note("From header not in RFC 5322 form: address taken from its text")
        return "", _normal_address(found.group(0))
    return text, ""
