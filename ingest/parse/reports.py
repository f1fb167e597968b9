"""Delivery reports (DSN, RFC 6522 ``multipart/report``): the machine-readable parts the classifier needs."""

from __future__ import annotations

from email.message import Message
from typing import Any

from ingest.parse.charsets import decode_bytes
from ingest.parse.context import ParseContext, clean_text
from ingest.parse.headers import header_text
from ingest.parse.model import DeliveryReport
from ingest.parse.payload import message_part_bytes, part_text, raw_payload

_REPORT_STATUS_TYPES = frozenset({
    "message/delivery-status",
    "message/global-delivery-status",
    "message/feedback-report",
    "message/disposition-notification",
    "message/global-disposition-notification",
})
_RETURNED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})


def delivery_report(part: Message, children: list[Any], ctx: ParseContext) -> DeliveryReport:
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
            statuses.append(clean_text(decode_bytes(message_part_bytes(child, ctx), "utf-8", ctx, ctype)))
            report_type = report_type or ctype.removeprefix("message/").removeprefix("global-")
        elif not original and ctype in _RETURNED_MESSAGE_TYPES:
            original = _returned_headers(child, ctx)
    return DeliveryReport(report_type=report_type, status="\n\n".join(statuses), original_headers=original)


def _returned_headers(part: Message, ctx: ParseContext) -> str:
    payload = raw_payload(part)
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return "\n".join(
            f"{header_text(str(n), ctx, 'header name')}: {header_text(str(v), ctx, str(n))}"
            for n, v in payload[0].raw_items()
        )
    return part_text(part, ctx, part.get_content_type())
