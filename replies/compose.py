"""Compose the reply to a customer's mail: data in, the exact bytes to send out.

Pure on purpose: no clock (``now`` is a parameter), no randomness (the caller makes the Message-ID, e.g. with
:func:`new_message_id` and a uuid4), no I/O. The bytes are final: the outbox stores them and the relay sends the
same bytes with the same Message-ID on every attempt.

Header safety (DESIGN §4): every value that reaches a header — subject, names, addresses, Message-IDs, template
variables in a subject — is reduced to one line (CR, LF and other control characters become spaces) before it
reaches the message, addresses must be exactly one plain address, and the headers this module writes are folded
here rather than by :mod:`email`: Python 3.11's header folder can drop or add spaces when it folds encoded words,
which would change a customer's name or subject. Our folds are checked to be continuation lines, and the finished
header block is checked to hold each header once and nothing else.
"""

from __future__ import annotations

import email.policy
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime

from replies.render import RenderedReply

QUOTE_MAX_LINES = 200
QUOTE_MAX_BYTES = 32 * 1024
"""The customer's text is quoted up to this many lines and bytes (UTF-8; one 20 MB line is one line), whichever
comes first; the whole mail is kept with the klantcontact anyway."""

MAX_REFERENCES = 11
"""References keeps the thread's first id and the last ten, so the header stays short (RFC 5322 §3.6.4)."""

_FOLD_AT = 76
_MAX_ID_CHARS = 250
_MAX_ADDRESS_CHARS = 254
_MAX_PLAIN_WORD_CHARS = 60

# The policy SMTP (CRLF, 78 columns) with one change: headers we fold ourselves are written as we folded them.
_POLICY = email.policy.SMTP.clone(refold_source="none")

_MAANDEN = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)  # fmt: skip

_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_REPLY_PREFIXES = re.compile(
    r"^(?:\s*(?:re|antw|antwoord|aw|sv|vs|odp|res|rif|ynt|atb)\s*(?:\[\d+\]|\(\d+\))?\s*[:：])+\s*",
    re.IGNORECASE,
)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_PLAIN_PHRASE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
_MESSAGE_ID = re.compile(rf"<[!-;=?-~]{{1,{_MAX_ID_CHARS}}}>")  # printable ASCII without "<", ">" and space
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,100}")


class ComposeError(Exception):
    """The reply cannot be composed safely (e.g. the reply address is not one plain address); answer by hand."""


@dataclass(frozen=True, slots=True)
class OriginalMail:
    """What the reply needs from the customer's mail (from ``ingest.parse.ParsedMail`` and the intake row)."""

    message_id: str
    subject: str
    from_name: str
    from_address: str
    reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Sender:
    """The mailbox the reply comes from: its address and display name."""

    address: str
    name: str


@dataclass(frozen=True, slots=True)
class ComposedReply:
    """The finished reply: the exact bytes to send (CRLF) and what the outgoing klantcontact records."""

    message_id: str
    subject: str
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    text: str


def single_line(value: str) -> str:
    """A header value on one line: control characters (CR, LF, NUL, …) become spaces, white space runs one space."""
    return " ".join(_HEADER_CONTROL.sub(" ", _valid_unicode(value)).split())


def reply_subject(original_subject: str) -> str:
    """ "Re: " + the subject without the reply prefixes that mail programs pile up (Re:, AW:, Antw:, RE[2]:, …)."""
    subject = _REPLY_PREFIXES.sub("", single_line(original_subject), count=1)
    return f"Re: {subject or '(geen onderwerp)'}"


def new_message_id(domain: str, token: str) -> str:
    """Our own Message-ID, ``<kcc.TOKEN@DOMAIN>``; the caller passes a fresh uuid4 hex as the token."""
    if not _TOKEN.fullmatch(token):
        raise ComposeError(f"{token!r} cannot be used in a Message-ID: use letters, digits, '.', '_' or '-'")
    ascii_domain = _ascii_domain(domain.strip())
    if ascii_domain is None:
        raise ComposeError(f"{single_line(domain)!r} is not a domain name; check [replies] message_id_domain")
    return f"<kcc.{token}@{ascii_domain}>"


def dutch_datetime(moment: datetime) -> str:
    """A moment as Dutch text, e.g. "7 mei 2024 om 08:12" (for the quote line and the ``ontvangen_op`` value)."""
    return f"{moment.day} {_MAANDEN[moment.month - 1]} {moment.year} om {moment:%H:%M}"


def reply_references(original: OriginalMail) -> tuple[str, ...]:
    """The original's References plus its Message-ID: unusable ids dropped, duplicates once, first + last ten."""
    ids = _unique(i for i in map(_normal_id, (*original.references, original.message_id)) if i is not None)
    if len(ids) > MAX_REFERENCES:
        return (ids[0], *ids[len(ids) - MAX_REFERENCES + 1 :])
    return ids


def compose_reply(
    original: OriginalMail,
    rendered: RenderedReply,
    sender: Sender,
    *,
    message_id: str,
    now: datetime,
    automatic: bool = False,
    quote_original: bool = True,
) -> ComposedReply:
    """The reply as bytes to send: headers from the original (threading, recipient), the rendered text and HTML."""
    if now.tzinfo is None:
        raise ComposeError("now must be a timezone-aware datetime: the Date header needs a UTC offset")
    own_id = _own_message_id(message_id)
    from_address = _checked_address(sender.address, "the sender address", "check [smtp] from_address")
    to_name, to_address = _recipient(original)
    subject = single_line(rendered.subject or "") or reply_subject(original.subject)
    text = _text_body(rendered.text, original, quote_original)

    msg = EmailMessage(policy=_POLICY)
    _put(msg, "From", _mailbox("From", single_line(sender.name), from_address))
    _put(msg, "To", _mailbox("To", to_name, to_address))
    _put(msg, "Subject", _text_header("Subject", subject))
    _put(msg, "Date", format_datetime(now))
    _put(msg, "Message-ID", own_id)
    _put_thread(msg, original)
    _put(msg, "Auto-Submitted", "auto-replied" if automatic else "no")
    if automatic:
        _put(msg, "X-Auto-Response-Suppress", "All")  # asks Exchange not to answer our automatic reply
    page = None if rendered.html is None else _html_body(rendered.html, original, quote_original)
    _put_body(msg, text, page)

    data = msg.as_bytes()
    _check_header_block(data)
    return ComposedReply(
        message_id=own_id,
        subject=subject,
        envelope_from=from_address,
        recipients=(to_address,),
        data=data,
        text=text,
    )


def _put_thread(msg: EmailMessage, original: OriginalMail) -> None:
    """In-Reply-To and References, so the customer's mail program shows our reply in the same conversation."""
    original_id = _normal_id(original.message_id)
    if original_id is not None:
        _put(msg, "In-Reply-To", original_id)
    references = reply_references(original)
    if references:
        _put(msg, "References", _fold_words("References", references))


def _put_body(msg: EmailMessage, text: str, page: str | None) -> None:
    """text/plain, or multipart/alternative with text/html when the template has an HTML part."""
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_transfer_encoding(text))
    if page is not None:
        msg.make_alternative()
        msg.attach(_html_part(page))
    _put(msg, "Content-Language", "nl")  # after the body: email moves Content-* headers into the first part


# --- addresses and ids ---------------------------------------------------------------------------------------


def _recipient(original: OriginalMail) -> tuple[str, str]:
    """The first Reply-To address, else From; the customer's name only where it belongs to that address, and never
    a "name" that looks like an address (`boss@gemeente.nl <jan@example.nl>`): the customer would read it as one."""
    reply_to = next((address for address in original.reply_to if address.strip()), "")
    if reply_to:
        address = _checked_address(reply_to, "the customer's Reply-To address", "answer this mail by hand")
        same_person = address.lower() == original.from_address.strip().lower()
        return (_display_name(original.from_name) if same_person else ""), address
    if not original.from_address.strip():
        raise ComposeError(
            "the mail has no Reply-To and no From address, so there is no one to send a reply to; "
            "register the contact without a reply, or answer through another channel"
        )
    address = _checked_address(original.from_address, "the customer's From address", "answer this mail by hand")
    return _display_name(original.from_name), address


def _display_name(name: str) -> str:
    shown = single_line(name)
    return "" if "@" in shown else shown


def _checked_address(value: str, role: str, advice: str) -> str:
    """One plain address (``local@domain``, the domain in ASCII via IDNA) or a ComposeError saying what is wrong."""
    address = value.strip()
    problem = _address_problem(address)
    local, _at, domain = address.rpartition("@")
    ascii_domain = _ascii_domain(domain) if not problem else None
    if ascii_domain is None:
        problem = problem or f"{single_line(domain)!r} is not a valid domain name"
        raise ComposeError(f"{role} {single_line(value)!r} is not one e-mail address ({problem}); {advice}")
    return f"{local}@{ascii_domain}"


def _address_problem(address: str) -> str:
    if not address:
        return "it is empty"
    if any(char.isspace() for char in address) or _HEADER_CONTROL.search(address):
        return "it contains white space or a line break"
    if "," in address or ";" in address:
        return "it holds more than one address"
    if "<" in address or ">" in address or '"' in address:
        return "it contains angle brackets or quotes"
    if address.count("@") != 1:
        return "it needs exactly one @"
    if len(address) > _MAX_ADDRESS_CHARS:
        return f"it is longer than {_MAX_ADDRESS_CHARS} characters"
    local = address.partition("@")[0]
    if not local.isascii():
        return "it has non-ASCII characters before the @, which kcc-mail cannot send to"
    if not _LOCAL_PART.fullmatch(local):
        return "the part before the @ is not a plain mailbox name"
    return ""


def _ascii_domain(domain: str) -> str | None:
    """The domain in ASCII (IDNA for names like bücher.de) when it is a plain host name, else None."""
    try:
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    ok = len(ascii_domain) <= _MAX_ADDRESS_CHARS and _DOMAIN.fullmatch(ascii_domain)
    return ascii_domain if ok else None


def _own_message_id(message_id: str) -> str:
    normal = _normal_id(message_id)
    if normal is None or "@" not in normal:
        raise ComposeError(
            f"{single_line(message_id)!r} is not a Message-ID like <token@domain>; make one with new_message_id()"
        )
    return normal


def _normal_id(value: str) -> str | None:
    """A Message-ID in angle brackets, or None when it is not one printable token of sensible length."""
    token = value.strip()
    if not token.startswith("<"):
        token = f"<{token}>"
    return token if _MESSAGE_ID.fullmatch(token) else None


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# --- header values, folded here ------------------------------------------------------------------------------


def _put(msg: EmailMessage, name: str, value: str) -> None:
    """Store a header we folded; every line after the first must be a continuation (starts with a space)."""
    lines = value.split("\n")
    if not value.isascii() or "\r" in value or any(not line.startswith(" ") for line in lines[1:]):
        raise ComposeError(f"internal error: the {name} header was not folded safely; please report this")
    msg.set_raw(name, value)


def _text_header(name: str, text: str) -> str:
    """Free text (a subject) as a header value: plain ASCII folded at spaces, anything else as RFC 2047 words."""
    if _is_plain(text):
        return _fold_words(name, text.split(" "))
    return _encoded_words(name, text)


def _mailbox(name: str, display_name: str, address: str) -> str:
    """``Name <address>`` with the name as atoms, a quoted string or encoded words; the bare address without one."""
    if not display_name:
        return address
    if _is_plain(display_name):
        phrase = display_name if _PLAIN_PHRASE.fullmatch(display_name) else _quoted_string(display_name)
        return _fold_words(name, [*phrase.split(" "), f"<{address}>"])  # a quoted string may fold at its spaces
    phrase = _encoded_words(name, display_name)
    last_line = phrase.rpartition("\n")[2]
    width = len(last_line) + (0 if "\n" in phrase else len(name) + 2)
    joint = " " if width + len(address) + 3 <= _FOLD_AT else "\n "
    return f"{phrase}{joint}<{address}>"


def _is_plain(text: str) -> bool:
    """True for printable ASCII that needs no encoding: no "=?" (it would read as an encoded word), no huge word."""
    words = text.split(" ")
    return text.isascii() and text.isprintable() and "=?" not in text and max(map(len, words)) <= _MAX_PLAIN_WORD_CHARS


def _quoted_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded_words(name: str, text: str) -> str:
    """RFC 2047 encoded words in UTF-8, folded between words; the legacy encoder folds without losing spaces."""
    return Header(text, "utf-8", maxlinelen=_FOLD_AT, header_name=name).encode(linesep="\n")


def _fold_words(name: str, words: Sequence[str]) -> str:
    """Words joined by single spaces, breaking the line before a word that would pass the fold width."""
    folded = ""
    width = len(name) + 2
    for word in words:
        if not folded:
            folded, width = word, width + len(word)
        elif width + 1 + len(word) > _FOLD_AT:
            folded, width = f"{folded}\n {word}", 1 + len(word)
        else:
            folded, width = f"{folded} {word}", width + 1 + len(word)
    return folded


def _check_header_block(data: bytes) -> None:
    """Last line of defence: the top-level header block holds each header once and no header we did not write."""
    allowed = {
        b"from", b"to", b"subject", b"date", b"message-id", b"in-reply-to", b"references", b"auto-submitted",
        b"x-auto-response-suppress", b"content-language", b"mime-version", b"content-type",
        b"content-transfer-encoding",
    }  # fmt: skip
    block = data.partition(b"\r\n\r\n")[0]
    names = [line.partition(b":")[0].lower() for line in block.split(b"\r\n") if not line.startswith((b" ", b"\t"))]
    if b"\n" in block.replace(b"\r\n", b"") or len(names) != len(set(names)) or not set(names) <= allowed:
        raise ComposeError("internal error: the reply's headers are not what was composed; please report this")


# --- bodies --------------------------------------------------------------------------------------------------


def _text_body(answer: str, original: OriginalMail, quote_original: bool) -> str:
    """The text part: the rendered answer, then (when configured) the customer's text quoted with "> "."""
    lines = _body_lines(answer)
    quoted = _quoted_lines(original) if quote_original else []
    if quoted:
        lines += ["", _quote_intro(original), *quoted]
    return "\n".join(lines) + "\n"


def _quoted_lines(original: OriginalMail) -> list[str]:
    lines, cut = _quotable(original.text)
    quoted = [(">" if line.startswith(">") else "> ") + line if line else ">" for line in lines]
    if cut:
        quoted.append(f"> {cut}")
    return quoted


def _quotable(text: str) -> tuple[list[str], str]:
    """The lines of `text` to quote, within QUOTE_MAX_LINES and QUOTE_MAX_BYTES, and a note when it was cut."""
    data = _valid_unicode(text).encode("utf-8")
    cut_bytes = len(data) > QUOTE_MAX_BYTES
    if cut_bytes:
        text = data[:QUOTE_MAX_BYTES].decode("utf-8", "ignore")
    lines = _body_lines(text)
    if len(lines) > QUOTE_MAX_LINES:
        return lines[:QUOTE_MAX_LINES], f"[… {len(lines) - QUOTE_MAX_LINES} regels niet geciteerd]"
    if cut_bytes:
        return lines, "[… de rest van de mail is niet geciteerd]"
    return lines, ""


def _quote_intro(original: OriginalMail) -> str:
    name, address = single_line(original.from_name), single_line(original.from_address)
    who = f"{name} <{address}>" if name and address else (address or name or "de afzender")
    return f"Op {dutch_datetime(original.received_at)} schreef {who}:"


def _html_body(page: str, original: OriginalMail, quote_original: bool) -> str:
    """The HTML part: the rendered page with the customer's text, escaped, in a blockquote before </body>."""
    lines, cut = _quotable(original.text) if quote_original else ([], "")
    if not lines:
        return page
    shown = "<br>\n".join(html.escape(line) for line in lines)
    if cut:
        shown += f"<br>\n{html.escape(cut)}"
    block = (
        f"<p>{html.escape(_quote_intro(original))}</p>\n"
        '<blockquote type="cite" style="margin: 0 0 0 0.8ex; border-left: 2px solid #ccc; padding-left: 1ex;">\n'
        f"{shown}\n</blockquote>\n"
    )
    end = page.lower().rfind("</body>")
    return page[:end] + block + page[end:] if end >= 0 else page + "\n" + block


def _html_part(page: str) -> EmailMessage:
    """The text/html alternative; without the MIME-Version that add_alternative would repeat inside the part."""
    part = EmailMessage(policy=_POLICY)
    part.set_content(page, subtype="html", charset="utf-8", cte=_transfer_encoding(page))
    del part["MIME-Version"]
    return part


def _body_lines(text: str) -> list[str]:
    """Text as lines without control characters or trailing blanks, so the bytes are clean and CRLF-able."""
    lines = [_BODY_CONTROL.sub("", line).rstrip() for line in _valid_unicode(text).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _transfer_encoding(text: str) -> str:
    """7bit for short-lined ASCII, else quoted-printable: the bytes pass any relay, with or without 8BITMIME."""
    plain = text.isascii() and all(len(line) <= _FOLD_AT for line in text.splitlines())
    return "7bit" if plain else "quoted-printable"


def _valid_unicode(text: str) -> str:
    """Lone surrogates (from undecodable mail bytes) become "?", so encoding to UTF-8 cannot fail."""
    return text.encode("utf-8", "replace").decode("utf-8")
