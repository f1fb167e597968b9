"""Charset labels and byte decoding: mail declares charsets wrongly or not at all, so decoding never fails.

Labels are resolved to the codec mail clients really mean (as browsers decode them); bytes that do not fit
fall back to utf-8, the charset the mail declares elsewhere, then windows-1252. Every fallback is noted.
"""

from __future__ import annotations

import codecs
from functools import lru_cache

from ingest.parse.context import ParseContext

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


@lru_cache(maxsize=64)
def crlf_is_plain_bytes(charset: str | None) -> bool:
    """Is CR LF the bytes 0D 0A in this charset, never part of another character? Then line ends can be made \n
    on the bytes, before decoding: a large body is then not copied once more as text (up to 4 bytes a character).
    """
    if not charset:
        return True  # read as us-ascii, utf-8 or windows-1252
    codec, _ = _codec_for(charset)
    if codec is None or codec.startswith(_NOT_ASCII_COMPATIBLE):
        return False
    try:
        return "\r\n".encode(codec) == b"\r\n" and "\n".encode(codec) == b"\n"
    except (LookupError, UnicodeError):
        return False


def decode_bytes(data: bytes, charset: str | None, ctx: ParseContext, where: str) -> str:
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
    if codec in _ASCII_CODECS or (not codec.startswith(_NOT_ASCII_COMPATIBLE) and is_utf8(data)):
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


def _guess_decode(data: bytes, ctx: ParseContext, what: str, *, quiet_utf8: bool = False) -> str:
    """utf-8, else the mail's own charset hint, else windows-1252 (which never fails)."""
    if is_utf8(data):
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


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def charset_hint(label: str | None) -> str | None:
    """The codec of a declared charset, as hint for undeclared 8-bit text; None when it adds nothing."""
    codec = _codec_for(label)[0] if label else None
    return None if codec in (None, "ascii", "utf-8") else codec
