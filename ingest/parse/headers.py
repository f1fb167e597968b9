"""Header values as clean text: unfolding, RFC 2047 words, raw 8-bit, Message-IDs, the Date and addresses.

Everything returned here is one line without CR, LF or NUL, so no header value can inject a header
downstream or break a database text column.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ingest.parse.addresses import mailboxes
from ingest.parse.charsets import decode_bytes
from ingest.parse.context import ParseContext, clean_line
from ingest.parse.payload import decode_base64, payload_bytes

SYNTHETIC_ID_DOMAIN = "kcc-mail.invalid"
MAX_MESSAGE_ID_CHARS = 995  # RFC 5322 line limit minus "<>": longer ids are junk and break unique indexes


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+?)\?([QqBb])\?([^?]*?)\?=")


def header_text(value: str, ctx: ParseContext, name: str) -> str:
    """A header value as one clean line: unfolded, RFC 2047 words and raw 8-bit decoded, no CR/LF/NUL."""
    if "\n" in value or "\r" in value:
        value = _LINE_BREAK.sub(" ", _FOLD.sub("", value))
    text = _decode_words(value, ctx, name) if "=?" in value else _decode_8bit(value, ctx, name)
    return clean_line(text).strip()


def _decode_8bit(value: str, ctx: ParseContext, name: str) -> str:
    if value.isascii():
        return value
    return decode_bytes(payload_bytes(value), None, ctx, f"header {name}")


def _decode_words(value: str, ctx: ParseContext, name: str) -> str:
    """RFC 2047: whitespace between encoded words is dropped and adjacent words in one charset are joined
    as bytes before decoding, because mailers split multibyte characters across words."""
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset, ctx, f"header {name}"))
            pending.clear()
            pending_charset = None

    position = 0
    for word in _ENCODED_WORD.finditer(value):
        gap = value[position:word.start()]
        if gap and not (pending_charset is not None and gap.isspace()):
            flush()
            out.append(_decode_8bit(gap, ctx, name))
        charset = word.group(1).split("*", 1)[0]
        encoded = payload_bytes(word.group(3))
        if word.group(2) in "Qq":
            chunk = binascii.a2b_qp(encoded, header=True)
        else:
            chunk = decode_base64(encoded, ctx, f"header {name}")
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset
        pending.extend(chunk)
        position = word.end()
    flush()
    if position < len(value):
        out.append(_decode_8bit(value[position:], ctx, name))
    return "".join(out)


_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def message_ids(value: str) -> tuple[str, ...]:
    """All ``<id>`` tokens of a Message-ID/In-Reply-To/References value, whitespace removed."""
    if not value:
        return ()
    ids = (_WHITESPACE.sub("", found) for found in _BRACKETED_ID.findall(value))
    return tuple(f"<{clean_line(i)}>" for i in ids if i and len(i) <= MAX_MESSAGE_ID_CHARS)


def message_id_or_synthetic(value: str, raw: bytes, ctx: ParseContext) -> tuple[str, bool]:
    ids = message_ids(value)
    if ids:
        return ids[0], False
    bare = clean_line(_WHITESPACE.sub("", value)).strip("<>")
    if bare and len(bare) <= MAX_MESSAGE_ID_CHARS:
        ctx.note("Message-ID without angle brackets: brackets added")
        return f"<{bare}>", False
    if bare:
        ctx.note(f"Message-ID longer than {MAX_MESSAGE_ID_CHARS} characters: replaced by a synthetic id")
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@{SYNTHETIC_ID_DOMAIN}>", True


def mail_date(value: str | None, received_at: datetime | None, ctx: ParseContext) -> tuple[datetime | None, bool]:
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


def _addresses(values: list[str], ctx: ParseContext) -> list[tuple[str, str]]:
    """(display name, address) pairs; unparseable entries are dropped, domains lower-cased."""
    if not values:
        return []
    pairs: list[tuple[str, str]] = []
    for value in values:
        for box in mailboxes(_LINE_BREAK.sub(" ", _FOLD.sub("", value))):
            normal = _normal_address(_decode_8bit(box.address, ctx, "address"))
            if normal:
                pairs.append((header_text(box.phrase, ctx, "address name"), normal))
    return pairs


def _normal_address(address: str) -> str:
    """`local@domain` with the domain in lower case, or "" when this is not one address (two @, brackets left)."""
    address = clean_line(_WHITESPACE.sub("", address)).strip("<>")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c in address for c in '<>,;:"()[]\\'):
        return ""
    return f"{local}@{domain.lower()}"


def address_list(values: list[str], ctx: ParseContext) -> tuple[str, ...]:
    return tuple(address for _name, address in _addresses(values, ctx))


def sender(values: list[str], ctx: ParseContext) -> tuple[str, str]:
    pairs = _addresses(values, ctx)
    if pairs:
        return pairs[0]
    if not values:
        return "", ""
    text = header_text(values[0], ctx, "From")
    found = _ADDRESS_FALLBACK.search(text)
    if found:
        ctx.note("From header not in RFC 5322 form: address taken from its text")
        return "", _normal_address(found.group(0))
    return text, ""
