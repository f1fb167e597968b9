"""Body bytes of a part: the raw compat32 payload, transfer encodings, and re-serialised attached messages.

Kept apart from `charsets` because it deals in bytes: decoding those to text is one call (`part_text`).
"""

from __future__ import annotations

import base64
import binascii
import re
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from io import BytesIO
from typing import Any

from ingest.parse.charsets import crlf_is_plain_bytes, decode_bytes
from ingest.parse.context import ParseContext, clean_text

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UU_ENCODINGS = frozenset({"xuuencode", "uuencode", "uue", "xuue"})


def raw_payload(part: Message) -> Any:
    """The payload as parsed: a list of parts, or the body text with 8-bit bytes as surrogate escapes.

    ``Message.get_payload()`` would decode those bytes with the declared charset and errors='replace',
    losing them before we can decode them properly (and it raises nothing we could fall back on).
    """
    return getattr(part, "_payload", None)


def payload_bytes(payload: str) -> bytes:
    """compat32 keeps body bytes as ASCII text with surrogate escapes; turn them back into the bytes."""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # only if a caller put real non-ASCII text in; keep it as UTF-8
        return payload.encode("utf-8", "surrogateescape")


def _transfer_encoding(part: Message) -> str:
    """The Content-Transfer-Encoding, normalised so 'Base-64', '"base64"' and 'base64;' all match."""
    value = part.get("content-transfer-encoding")
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def part_bytes(part: Message, ctx: ParseContext, where: str) -> bytes:
    """The decoded body bytes of a leaf part; broken encodings decode as far as possible, noted."""
    payload = raw_payload(part)
    if isinstance(payload, list):
        return message_part_bytes(part, ctx)
    if not isinstance(payload, str):
        return b""
    encoding = _transfer_encoding(part)
    if encoding == "base64":
        return decode_base64(encoded_text(payload), ctx, where)
    if encoding == "quotedprintable":
        return binascii.a2b_qp(encoded_text(payload))
    data = payload_bytes(payload)
    if encoding in _UU_ENCODINGS:
        decoded = part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else data
    if encoding not in _IDENTITY_ENCODINGS:
        ctx.note(f"unknown Content-Transfer-Encoding in {where}: body kept undecoded")
    return data


def encoded_text(payload: str) -> str | bytes:
    """A base64 or quoted-printable body as binascii decodes it: an ASCII str as it is (binascii reads it in place,
    where payload_bytes would first copy a large attachment's whole encoded body), else its bytes."""
    return payload if payload.isascii() else payload_bytes(payload)


def decode_base64(data: bytes | str, ctx: ParseContext, where: str) -> bytes:
    """base64.b64decode (non-alphabet characters skipped); broken padding decodes as far as possible, noted."""
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    cleaned = _NOT_BASE64.sub(b"", data.encode("ascii") if isinstance(data, str) else data)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    ctx.note(f"broken base64 in {where}: decoded as far as possible")
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


def message_part_bytes(part: Message, ctx: ParseContext) -> bytes:
    """The bytes of an attached message (or report block), re-serialised from the parsed tree."""
    payload = raw_payload(part)
    if not isinstance(payload, list):
        return part_bytes(part, ctx, part.get_content_type())
    messages = [p for p in payload if isinstance(p, Message)]
    data = ctx.linesep.encode().join(flatten(m, ctx.linesep) for m in messages)
    encoding = _transfer_encoding(part)
    if encoding == "base64":  # not allowed for message/*, but sent: the "headers" were base64 lines
        return decode_base64(data, ctx, part.get_content_type())
    if encoding == "quotedprintable":
        return binascii.a2b_qp(data)
    return data


class _AsReceived(Compat32):
    """compat32 that writes each header as it was received instead of folding it anew.

    compat32 re-encodes every header through `email.header.Header`: a third of the parse time of a typical bounce,
    whose report parts are flattened, and it drops the whitespace before each fold. The attached original is
    evidence of what was sent; the received text is both faster and true to it.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if not isinstance(value, str):  # a Header object set by code
            return super().fold_binary(name, value)
        try:  # a parsed header is ASCII, its 8-bit bytes surrogate escapes
            return f"{name}: {value}{self.linesep}".encode("ascii", "surrogateescape")
        except UnicodeEncodeError:  # real non-ASCII text (a header set by code, not parsed): let compat32 encode it
            return super().fold_binary(name, value)


_AS_RECEIVED = _AsReceived()


def flatten(msg: Message, linesep: str) -> bytes:
    """The message's bytes: its headers as received, its body as parsed."""
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_AS_RECEIVED)
    generator.flatten(msg, linesep=linesep)
    return out.getvalue()


def part_text(part: Message, ctx: ParseContext, where: str) -> str:
    data = part_bytes(part, ctx, where)
    charset = part.get_content_charset()
    if b"\r" in data and crlf_is_plain_bytes(charset):
        data = data.replace(b"\r\n", b"\n")  # here, not on the text: `clean_text` then copies nothing
    return clean_text(decode_bytes(data, charset, ctx, where))
