"""The entry point: `parse_mail` runs the pipeline and turns every unexpected failure into a `ParseError`.

The pipeline: repair the start, parse once, check the bounds, then read headers and walk the body.
"""

from __future__ import annotations

from datetime import datetime
from email import policy as email_policy
from email.feedparser import BytesFeedParser
from email.message import Message

from ingest.parse.body import Slot, body_text, collect_guarded
from ingest.parse.context import ParseContext
from ingest.parse.headers import address_list, header_text, mail_date, message_id_or_synthetic, message_ids, sender
from ingest.parse.model import DEFAULT_LIMITS, MailLimitExceeded, ParsedMail, ParseError, ParseLimits, UnparseableMail
from ingest.parse.structure import check_header_size, check_tree, header_end, repair_start


def parse_mail(
    raw: bytes, *, received_at: datetime | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedMail:
    """Parse one mail. Raises only `ParseError` subclasses; every other failure is converted into one."""
    ctx = ParseContext(limits)
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


def _parse(raw: bytes, received_at: datetime | None, ctx: ParseContext) -> ParsedMail:
    data = repair_start(raw, ctx)
    msg = _parse_tree(data)
    if not msg.keys():
        raise UnparseableMail(
            "no header found: the data does not start with 'Name: value' header lines, so it is not "
            "an RFC 5322 mail (a plain text file or an Outlook .msg file?)"
        )
    ctx.linesep = "\r\n" if b"\r\n" in data[: header_end(data) + 2] else "\n"
    check_tree(msg, ctx)
    check_header_size(msg, ctx)

    raw_headers = [(str(name), str(value)) for name, value in msg.raw_items()]
    headers = tuple((header_text(name, ctx, "header name"), header_text(value, ctx, name))
                    for name, value in raw_headers)
    first = _first_values(raw_headers)

    content_type = msg.get_content_type()
    slots: list[Slot] = []
    collect_guarded(msg, 0, slots, ctx)
    del msg  # the parsed tree holds the whole mail as text once more; its parts are taken out now
    message_id, synthetic = message_id_or_synthetic(first.get("message-id", ""), raw, ctx)
    date, from_header = mail_date(first.get("date"), received_at, ctx)
    from_name, from_address = sender(_all_values(raw_headers, "from"), ctx)

    return ParsedMail(
        message_id=message_id,
        message_id_synthetic=synthetic,
        from_name=from_name,
        from_address=from_address,
        to=address_list(_all_values(raw_headers, "to"), ctx),
        cc=address_list(_all_values(raw_headers, "cc"), ctx),
        reply_to=address_list(_all_values(raw_headers, "reply-to"), ctx),
        subject=header_text(first.get("subject", ""), ctx, "Subject"),
        date=date,
        date_from_header=from_header,
        in_reply_to=next(iter(message_ids(first.get("in-reply-to", ""))), None),
        references=message_ids(first.get("references", "")),
        text=body_text(slots, ctx),
        html=ctx.html,
        attachments=tuple(ctx.attachments),
        headers=headers,
        content_type=content_type,
        defects=tuple(ctx.defects),
        report=ctx.report,
    )


PARSE_CHUNK_BYTES = 8192
"""What `BytesParser.parsebytes` feeds its feed parser at a time (8192 characters of one byte each)."""


def _parse_tree(data: bytes) -> Message:
    """One parse with the tolerant compat32 feed parser; it records defects instead of raising.

    The bytes are fed in the chunks `BytesParser.parsebytes` would feed, so the parse is the same; parsebytes first
    decodes the whole mail into one str and copies that into a StringIO (four bytes a character), which for a
    large mail was most of intake's peak memory: five times the mail.
    """
    parser = BytesFeedParser(policy=email_policy.compat32)
    for start in range(0, len(data), PARSE_CHUNK_BYTES):
        parser.feed(data[start:start + PARSE_CHUNK_BYTES])
    return parser.close()


def _first_values(raw_headers: list[tuple[str, str]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in raw_headers:
        first.setdefault(name.strip().lower(), value)
    return first


def _all_values(raw_headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for hname, value in raw_headers if hname.strip().lower() == name]
