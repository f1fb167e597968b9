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

This package exports only the public API below. Its modules, bottom-up: `model` (the public types), `context`
(per-parse state, text cleaning), `charsets`, `payload` (transfer encodings), `headers`, `structure` (start
repair, tree limits), `attachments`, `reports` (delivery reports), `body` (the body walk) and `mail` (the
entry point). Their names without a leading underscore are the package's internal API, not for callers.
"""

from __future__ import annotations

from ingest.parse.attachments import safe_filename
from ingest.parse.mail import parse_mail
from ingest.parse.model import (
    DEFAULT_LIMITS,
    Attachment,
    DeliveryReport,
    MailLimitExceeded,
    ParsedMail,
    ParseError,
    ParseLimits,
    UnparseableMail,
)

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
