"""Attachments: a part becomes an `Attachment` with a safe file name; winmail.dat (TNEF) is unpacked.

File names are display data from the sender, so `safe_filename` makes them harmless (no path, no control or
bidi characters) before anything stores or shows them.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from tnefparse.tnef import TNEF

from ingest.parse.charsets import decode_bytes, is_utf8
from ingest.parse.context import ParseContext, clean_line
from ingest.parse.headers import header_text
from ingest.parse.model import Attachment
from ingest.parse.payload import message_part_bytes, part_bytes, payload_bytes

MAX_FILENAME_CHARS = 255


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


def add_attachment(part: Message, ctx: ParseContext) -> None:
    ctype = part.get_content_type()
    data = message_part_bytes(part, ctx) if ctype.startswith("message/") else part_bytes(part, ctx, ctype)
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


def _raw_filename(part: Message, ctx: ParseContext) -> str:
    """The decoded file name (RFC 2231 first, then RFC 2047 words, then raw 8-bit); '' when none."""
    shadow = _with_decoded_8bit_parameters(part, ctx)
    value = shadow.get_param("filename", None, "content-disposition") or shadow.get_param("name", None)
    if not value:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as latin-1 code points)
        charset, _language, text = value
        data = str(text).encode("latin-1", "surrogateescape")
        return clean_line(decode_bytes(data, charset or None, ctx, "attachment name"))
    return header_text(str(value), ctx, "attachment name")


def _with_decoded_8bit_parameters(part: Message, ctx: ParseContext) -> Message:
    """The part's Content-Disposition and Content-Type with raw 8-bit bytes decoded (UTF-8, else the mail's charset).

    compat32 turns a header with 8-bit bytes into U+FFFD before get_param sees it, so `ciële.txt` sent raw would be
    stored as `ci��le.txt`; decoded first, the parameter parser gets the real text.
    """
    headers = [(name, value) for name, value in part.raw_items()
               if name.lower() in ("content-disposition", "content-type")]
    if all(value.isascii() for _name, value in headers):
        return part
    shadow = Message()
    for name, value in headers:
        raw = payload_bytes(value)
        shadow[name] = clean_line(decode_bytes(raw, None, ctx, f"header {name}")) if not value.isascii() else value
    return shadow


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


def _content_id(part: Message, ctx: ParseContext) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    text = header_text(str(value), ctx, "Content-ID").strip().strip("<>").strip()
    return text or None


def _unpack_tnef(container: Attachment, ctx: ParseContext) -> None:
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
        body = decode_bytes(body, None, ctx, "TNEF body")
    if isinstance(body, str) and body.strip() and ctx.tnef_body is None:
        ctx.tnef_body = body


def _tnef_name(item: Any) -> str:
    try:
        name = item.long_filename()
    except Exception:  # tnefparse decodes 8-bit names as utf-8 and raises on anything else
        name = getattr(item, "_name", b"")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace") if is_utf8(name) else name.decode("cp1252", "replace")
    return str(name).strip("\x00")


def _extension(name: str) -> str:
    _stem, dot, ext = name.rpartition(".")
    return "." + ext.lower() if dot else ""
