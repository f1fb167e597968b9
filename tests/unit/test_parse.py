"""ingest.parse: real-world hostile mails from ../shared/corpus and hand-made edge cases.

Each test states what a KCC employee (or the database) would notice if parsing went wrong.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import struct
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.require import CORPUS, corpus_file, unavailable

from ingest.parse import (
    MailLimitExceeded,
    ParsedMail,
    ParseError,
    ParseLimits,
    UnparseableMail,
    parse_mail,
    safe_filename,
)

RECEIVED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def corpus(relative: str) -> bytes:
    return corpus_file(relative).read_bytes()


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p for p in CORPUS.rglob("*")
        if p.is_file() and "_meta" not in p.parts and p != CORPUS / "README.md"
    )


def mail(headers: str, body: bytes | str = "Hallo,\r\n\r\nMet vriendelijke groet,\r\nJan\r\n") -> bytes:
    """A CRLF mail from a header block written with plain newlines."""
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + b"\r\n\r\n" + data


BASIC_HEADERS = """From: Jan Jansen <jan@Example.NL>
To: info@gemeente.nl
Subject: Vraag over mijn aanvraag
Date: Mon, 06 May 2024 09:30:00 +0200
Message-ID: <vraag-1@example.nl>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8"""


def assert_database_safe(parsed: ParsedMail) -> None:
    """What the store needs: no NUL anywhere in text, one-line headers, safe file names, honest hashes."""
    texts = [parsed.text, parsed.html or "", parsed.subject, parsed.from_name, parsed.message_id]
    texts += [value for pair in parsed.headers for value in pair]
    texts += [a.filename for a in parsed.attachments] + list(parsed.defects)
    for text in texts:
        assert "\x00" not in text
        assert not re.search("[\ud800-\udfff]", text), "lone surrogates cannot be stored as UTF-8"
    for value in [parsed.subject, parsed.from_name, *(v for _n, v in parsed.headers)]:
        assert "\r" not in value and "\n" not in value
    assert parsed.message_id.startswith("<") and parsed.message_id.endswith(">")
    for attachment in parsed.attachments:
        name = attachment.filename
        assert name and len(name) <= 255
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert attachment.sha256 == hashlib.sha256(attachment.data).hexdigest()
        assert attachment.size == len(attachment.data)
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


# ------------------------------------------------------------------------------------- the whole corpus


@pytest.mark.corpus
def test_every_corpus_file_parses_or_raises_parse_error_quickly() -> None:
    files = corpus_files()
    if not files:
        unavailable(f"the shared corpus is not at {CORPUS} (expected beside the repository)")
    outcome: dict[str, Counter[str]] = {}
    for path in files:
        folder = path.relative_to(CORPUS).parts[0]
        started = time.monotonic()
        try:
            parsed = parse_mail(path.read_bytes(), received_at=RECEIVED)
        except ParseError as exc:
            result = type(exc).__name__
            assert str(exc), f"{path}: a ParseError must say what is wrong"
        else:
            result = "parsed"
            assert_database_safe(parsed)
        elapsed = time.monotonic() - started
        assert elapsed < 10.0, f"{path} took {elapsed:.1f} s"
        outcome.setdefault(folder, Counter())[result] += 1

    for folder, counts in sorted(outcome.items()):
        print(f"{folder:24} {dict(counts)}")
    for folder in ("flufl-bounce", "php-bounce-handler", "mikel-mail", "php-mime-mail-parser", "talon"):
        counts = outcome[folder]
        assert counts["parsed"] >= 0.95 * sum(counts.values()), f"{folder}: {dict(counts)}"
    mails = sum(c["parsed"] for f, c in outcome.items() if f != "reply-bodies")
    assert mails >= 450, "the corpus held 471 parseable mails when these tests were written"


@pytest.mark.corpus
def test_reply_bodies_without_header_are_unparseable_not_a_crash() -> None:
    bodies = [p for p in corpus_files() if "reply-bodies" in p.parts]
    if not bodies:
        unavailable(f"the shared corpus is not at {CORPUS}")
    results: Counter[str] = Counter()
    for path in bodies:
        try:
            parse_mail(path.read_bytes())
            results["parsed"] += 1
        except UnparseableMail:
            results["unparseable"] += 1
    assert results["unparseable"] >= 0.9 * len(bodies), "a bare body text has no header: not a mail"


# ------------------------------------------------------------------------------------------ file names


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        # RFC 2231 continuations (filename*0*=utf-8''...; filename*1*=...)
        ("mikel-mail/spec/fixtures/emails/multi_charset/japanese_attachment_long_name.eml",
         ["かきくけこかきくけこかきくけこかきくけこかきくけこ.txt"]),
        # RFC 2231 single value with charset
        ("php-mime-mail-parser/tests/mails/issue274.eml",
         ["Hello from SwiftMailer.docx", "Hello from SwiftMailer.pdf", "Hello from SwiftMailer.odt",
          "Cours-Tutoriels-Serge-Tahé-1568x268.png", "test-localhost.eml"]),
        ("django-mailbox/django_mailbox/tests/messages/message_with_utf8_attachment.eml",
         ["piłkochwyty.jpg", "odpowiedź Burmistrza.jpg"]),
        ("mikel-mail/spec/fixtures/emails/attachment_emails/attachment_with_quoted_filename.eml",
         ["Eelanalüüsi päring.jpg"]),
        # RFC 2047 words in KOI8-R inside a quoted parameter, folded over two lines
        ("django-mailbox/django_mailbox/tests/messages/message_with_koi8r_filename_attachments.eml",
         ["Пакет предложений HSE Career Fair 8 апреля 2016.pdf", "Ведомости.pdf",
          "Пакет предложений 2016.pptx"]),
    ],
)
@pytest.mark.corpus
def test_encoded_attachment_names_are_decoded(relative: str, expected: list[str]) -> None:
    parsed = parse_mail(corpus(relative))
    assert [a.filename for a in parsed.attachments] == expected


def test_path_in_attachment_name_becomes_a_plain_file_name() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="b1"'),
        "--b1\r\nContent-Type: text/plain\r\n\r\nZie bijlage.\r\n"
        "--b1\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\n"
        "root:x:0:0\r\n"
        "--b1\r\nContent-Type: application/octet-stream; name=\"..\\\\..\\\\Windows\\\\win.ini\"\r\n\r\nx\r\n"
        "--b1--\r\n",
    )
    parsed = parse_mail(raw)
    assert [a.filename for a in parsed.attachments] == ["passwd", "win.ini"]
    assert parsed.attachments[0].data == b"root:x:0:0"  # the CRLF before a boundary belongs to it
    assert parsed.text == "Zie bijlage."
    assert any("stored as 'passwd'" in d for d in parsed.defects)


@pytest.mark.corpus
def test_corpus_attachment_name_with_dot_dot_path_is_cut_to_its_last_part() -> None:
    parsed = parse_mail(corpus("php-mime-mail-parser/tests/mails/m0027"))  # name="1234/../../1234.txt"
    assert [a.filename for a in parsed.attachments] == ["1234.txt"]


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("..", "application/pdf", "bijlage-4.pdf"),
        ("", "message/rfc822", "bericht-4.eml"),
        ("", "application/x-unknown", "bijlage-4.bin"),
        (".htaccess", "text/plain", "htaccess"),
        ("C:\\Users\\jan\\brief.docx", "application/octet-stream", "brief.docx"),
        ("rapport\x00.pdf", "application/pdf", "rapport.pdf"),
        ("factuur\u202egnp.exe", "application/octet-stream", "factuurgnp.exe"),  # right-to-left override
        ("regel\r\nBcc: x@y.nl", "text/plain", "regelBcc: x@y.nl"),
    ],
)
def test_safe_filename(name: str, content_type: str, expected: str) -> None:
    assert safe_filename(name, content_type, 4) == expected


def test_safe_filename_cuts_long_names_but_keeps_the_extension() -> None:
    result = safe_filename("a" * 400 + ".pdf")
    assert len(result) == 255
    assert result.endswith("a.pdf")


# -------------------------------------------------------------------------------------------- charsets


def test_x_mac_cyrillic_text_is_readable_with_a_defect() -> None:
    body = "Здравствуйте, прошу перезвонить.\r\n".encode("mac_cyrillic")
    parsed = parse_mail(mail(BASIC_HEADERS.replace("charset=utf-8", "charset=x-mac-cyrillic"), body))
    assert parsed.text == "Здравствуйте, прошу перезвонить.\n"
    assert any("x-mac-cyrillic" in d for d in parsed.defects)


@pytest.mark.corpus
def test_corpus_x_mac_cyrillic_newsletter_parses_with_a_defect() -> None:
    parsed = parse_mail(corpus("php-mime-mail-parser/tests/mails/issue230"))
    assert parsed.text.startswith("ACADEMIC NEWSLETTER #11 | March 2019")
    assert any("x-mac-cyrillic" in d for d in parsed.defects)


@pytest.mark.parametrize(
    ("charset", "body", "expected", "decoded_as"),
    [
        ("uft-8", "Graag een afspraak voor een paspoort, café om de hoek.".encode(),
         "Graag een afspraak voor een paspoort, café om de hoek.", "utf-8"),
        ("fakescii", "Geachte heer, de brug is €5 duurder – waarom?".encode("cp1252"),
         "Geachte heer, de brug is €5 duurder – waarom?", "windows-1252"),
    ],
)
def test_unknown_charset_falls_back_with_a_defect(charset: str, body: bytes, expected: str, decoded_as: str) -> None:
    parsed = parse_mail(mail(BASIC_HEADERS.replace("charset=utf-8", f"charset={charset}"), body))
    assert parsed.text == expected
    assert f"unknown charset '{charset}' in text/plain: decoded as {decoded_as}" in parsed.defects


@pytest.mark.corpus
def test_us_ascii_declared_but_utf8_sent_is_read_as_utf8() -> None:
    raw = corpus("django-mailbox/django_mailbox/tests/messages/message_with_invalid_content_for_declared_encoding.eml")
    parsed = parse_mail(raw)
    assert "\ufffd" not in parsed.text
    assert any("not in its declared charset 'us-ascii'" in d for d in parsed.defects)


def test_utf8_text_with_pasted_windows_1252_keeps_both_readable() -> None:
    body = "Café gesloten.\r\n".encode() + "Det här är fel.\r\n".encode("cp1252")
    parsed = parse_mail(mail(BASIC_HEADERS, body))
    assert parsed.text == "Café gesloten.\nDet här är fel.\n"
    assert "invalid utf-8 bytes in text/plain: read as windows-1252" in parsed.defects


def test_raw_8bit_utf8_subject_decodes() -> None:
    raw = mail(BASIC_HEADERS.replace("Vraag over mijn aanvraag", "Vraag over café-vergunning €50"))
    assert parse_mail(raw).subject == "Vraag over café-vergunning €50"


def test_raw_8bit_latin1_subject_uses_the_charset_declared_for_the_body() -> None:
    head = BASIC_HEADERS.replace("charset=utf-8", "charset=iso-8859-15").encode("utf-8")
    head = head.replace(b"Vraag over mijn aanvraag", "Vraag over de kermis in Één".encode("iso-8859-15"))
    raw = head.replace(b"\n", b"\r\n") + b"\r\n\r\nTot ziens\r\n"
    parsed = parse_mail(raw)
    assert parsed.subject == "Vraag over de kermis in Één"


def test_rfc2047_words_split_inside_a_multibyte_character_are_joined() -> None:
    encoded = "Één aanvraag".encode()
    first, second = encoded[:1], encoded[1:]  # cut inside the two-byte "É"
    subject = (f"=?UTF-8?B?{base64.b64encode(first).decode()}?=\n "
               f"=?UTF-8?B?{base64.b64encode(second).decode()}?= =?iso-8859-1?Q?_voor_caf=E9?=")
    parsed = parse_mail(mail(BASIC_HEADERS.replace("Vraag over mijn aanvraag", subject)))
    assert parsed.subject == "Één aanvraag voor café"


def test_encoded_newline_in_subject_cannot_inject_a_header() -> None:
    subject = "=?utf-8?Q?Hallo=0D=0ABcc:_victim@example.com?="
    parsed = parse_mail(mail(BASIC_HEADERS.replace("Vraag over mijn aanvraag", subject)))
    assert parsed.subject == "Hallo Bcc: victim@example.com"
    assert parsed.header("Subject") == parsed.subject


# --------------------------------------------------------------------------------------- broken MIME


@pytest.mark.corpus
def test_missing_closing_boundary_keeps_the_text() -> None:
    parsed = parse_mail(corpus("flanker/tests/fixtures/messages/missing-final-boundary.eml"))
    assert parsed.text == "Some body"
    assert "missing closing boundary: the last part runs to the end of the mail" in parsed.defects


def test_multipart_without_boundary_parameter_is_split_on_a_guessed_boundary() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", "multipart/mixed"),
        "--grens\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMijn vraag staat hieronder.\r\n"
        "--grens\r\nContent-Type: application/pdf; name=\"brief.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "JVBERi0xLjQK\r\n--grens--\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.text == "Mijn vraag staat hieronder."
    assert [(a.filename, a.data) for a in parsed.attachments] == [("brief.pdf", b"%PDF-1.4\n")]
    assert any("boundary guessed" in d for d in parsed.defects)


def test_multipart_whose_boundary_never_appears_keeps_the_body_as_text() -> None:
    raw = mail(BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="nergens"'),
               "Gewoon tekst, geen delen.\r\n")
    parsed = parse_mail(raw)
    assert parsed.text == "Gewoon tekst, geen delen.\n"
    assert "multipart boundary not found in the body" in parsed.defects


def test_broken_base64_attachment_is_decoded_as_far_as_possible() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="b"'),
        "--b\r\nContent-Type: text/plain\r\n\r\nfoto\r\n"
        "--b\r\nContent-Type: image/png; name=a.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0K*Ggo\r\n--b--\r\n",  # 11 base64 characters (padding missing) and a '*'
    )
    parsed = parse_mail(raw)
    assert parsed.attachments[0].data == b"\x89PNG\r\n\x1a\n"
    assert "broken base64 in image/png: decoded as far as possible" in parsed.defects


def test_nul_bytes_never_reach_text_or_headers() -> None:
    raw = mail(BASIC_HEADERS.replace("Vraag over", "Vraag\x00over"), b"regel een\x00\x00regel twee\r\n")
    parsed = parse_mail(raw)
    assert parsed.subject == "Vraag\ufffdover mijn aanvraag"
    assert parsed.text == "regel een\ufffd\ufffdregel twee\n"
    assert_database_safe(parsed)


@pytest.mark.corpus
def test_corpus_mail_with_nul_bytes_is_database_safe() -> None:
    parsed = parse_mail(corpus("spamscope-mail-parser/tests/mails/mail_malformed_3"))
    assert parsed.subject == "Ahorre Dinero en su Recibo de Luz"
    assert "click aquí para darse de baja" in parsed.text
    assert_database_safe(parsed)


@pytest.mark.corpus
def test_outlook_msg_file_is_not_a_mail() -> None:
    with pytest.raises(UnparseableMail, match="no header found"):
        parse_mail(corpus("spamscope-mail-parser/tests/mails/mail_outlook_1"))


@pytest.mark.corpus
def test_leading_blank_lines_before_the_header_are_removed() -> None:
    parsed = parse_mail(corpus("php-bounce-handler/eml/exchange1.eml"))
    assert parsed.from_address == "postmaster@tecosroot.com"
    assert "blank lines before the header: removed" in parsed.defects


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n  ", b"\xef\xbb\xbf"])
def test_empty_input_is_unparseable(raw: bytes) -> None:
    with pytest.raises(UnparseableMail, match="empty mail"):
        parse_mail(raw)


def test_random_bytes_never_escape_as_another_exception() -> None:
    generator = random.Random(20240506)
    for _ in range(200):
        raw = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 400)))
        try:
            parsed = parse_mail(raw)
        except ParseError:
            continue
        assert_database_safe(parsed)


# ------------------------------------------------------------------------------------------- limits


def nested_multipart(levels: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nDiep verstopt\r\n"
    for level in range(levels):
        boundary = b"n%d" % level
        body = (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"
                + body + b"\r\n--" + boundary + b"--\r\n")
    return b"From: a@example.nl\r\nSubject: nest\r\n" + body


def test_200_level_nesting_exceeds_the_depth_limit() -> None:
    with pytest.raises(MailLimitExceeded, match="nested more than 50 levels"):
        parse_mail(nested_multipart(200))


def test_1000_level_nesting_ends_in_a_limit_not_a_recursion_error() -> None:
    started = time.monotonic()
    with pytest.raises(MailLimitExceeded):
        parse_mail(nested_multipart(1000))
    assert time.monotonic() - started < 10


def test_nesting_within_the_limit_parses() -> None:
    assert parse_mail(nested_multipart(40)).text == "Diep verstopt\n"


@pytest.mark.corpus
def test_endless_enclosed_mail_ends_in_a_limit() -> None:
    started = time.monotonic()
    with pytest.raises(MailLimitExceeded, match="more than 1000 MIME parts"):
        parse_mail(corpus("flanker/tests/fixtures/messages/enclosed-endless.eml"))
    assert time.monotonic() - started < 10


def test_part_header_and_time_limits_are_configurable() -> None:
    raw = nested_multipart(5)
    with pytest.raises(MailLimitExceeded, match="more than 3 MIME parts"):
        parse_mail(raw, limits=ParseLimits(max_parts=3))
    with pytest.raises(MailLimitExceeded, match="header block"):
        parse_mail(mail(BASIC_HEADERS + "\nX-Filler: " + "x" * 2000), limits=ParseLimits(max_header_bytes=1000))
    with pytest.raises(MailLimitExceeded, match="longer than 0 s"):
        parse_mail(raw, limits=ParseLimits(max_seconds=0.0))


def test_limit_errors_carry_their_quarantine_reason_code() -> None:
    assert MailLimitExceeded.reason_code == "limits"
    assert UnparseableMail.reason_code == "unparseable"
    assert issubclass(MailLimitExceeded, ParseError) and issubclass(UnparseableMail, ParseError)


# -------------------------------------------------------------------------------- identity and dates


def test_missing_message_id_gets_a_stable_synthetic_id() -> None:
    raw = mail(BASIC_HEADERS.replace("Message-ID: <vraag-1@example.nl>\n", ""))
    first, second = parse_mail(raw), parse_mail(raw)
    other = parse_mail(raw.replace(b"Jan\r\n", b"Piet\r\n"))
    assert first.message_id_synthetic and other.message_id_synthetic
    assert first.message_id == second.message_id == f"<{hashlib.sha256(raw).hexdigest()[:32]}@kcc-mail.invalid>"
    assert other.message_id != first.message_id


def test_message_id_is_canonical_with_brackets() -> None:
    raw = mail(BASIC_HEADERS.replace("<vraag-1@example.nl>", "  <vraag-1@\n example.nl>  "))
    parsed = parse_mail(raw)
    assert (parsed.message_id, parsed.message_id_synthetic) == ("<vraag-1@example.nl>", False)


def test_missing_date_falls_back_to_received_at() -> None:
    raw = mail(BASIC_HEADERS.replace("Date: Mon, 06 May 2024 09:30:00 +0200\n", ""))
    parsed = parse_mail(raw, received_at=RECEIVED)
    assert (parsed.date, parsed.date_from_header) == (RECEIVED, False)
    naive = parse_mail(raw, received_at=datetime(2024, 5, 6, 7, 8, 9))
    assert naive.date == RECEIVED
    assert parse_mail(raw).date is None


def test_unreadable_date_falls_back_to_received_at_with_a_defect() -> None:
    raw = mail(BASIC_HEADERS.replace("Mon, 06 May 2024 09:30:00 +0200", "volgende week dinsdag"))
    parsed = parse_mail(raw, received_at=RECEIVED)
    assert (parsed.date, parsed.date_from_header) == (RECEIVED, False)
    assert "Date header not readable: the receive time is used instead" in parsed.defects


def test_date_header_is_timezone_aware() -> None:
    parsed = parse_mail(mail(BASIC_HEADERS), received_at=RECEIVED)
    assert parsed.date == datetime(2024, 5, 6, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.date_from_header


def test_mail_without_from_date_and_message_id_is_still_a_mail() -> None:
    parsed = parse_mail(b"Subject: alleen een onderwerp\r\n\r\ntekst\r\n", received_at=RECEIVED)
    assert (parsed.from_address, parsed.from_name, parsed.subject) == ("", "", "alleen een onderwerp")
    assert parsed.message_id_synthetic and parsed.date == RECEIVED and parsed.text == "tekst\n"


# ------------------------------------------------------------------------------------ headers, body


def test_addresses_names_and_threading_headers() -> None:
    headers = BASIC_HEADERS.replace(
        "From: Jan Jansen <jan@Example.NL>", "From: =?utf-8?Q?Jos=C3=A9_de_Vries?= <Jose@Example.NL>"
    ).replace(
        "To: info@gemeente.nl",
        'To: "Gemeente, KCC" <info@Gemeente.NL>, balie@gemeente.nl\nCc: <cc@example.nl>\n'
        "Reply-To: antwoord@example.nl\nIn-Reply-To: <eerder-2@gemeente.nl>\n"
        "References: <eerder-1@gemeente.nl>\n <eerder-2@gemeente.nl>",
    )
    parsed = parse_mail(mail(headers))
    assert (parsed.from_name, parsed.from_address) == ("José de Vries", "Jose@example.nl")
    assert parsed.to == ("info@gemeente.nl", "balie@gemeente.nl")
    assert parsed.cc == ("cc@example.nl",)
    assert parsed.reply_to == ("antwoord@example.nl",)
    assert parsed.in_reply_to == "<eerder-2@gemeente.nl>"
    assert parsed.references == ("<eerder-1@gemeente.nl>", "<eerder-2@gemeente.nl>")
    assert parsed.header("from") == "José de Vries <Jose@Example.NL>"
    assert parsed.content_type == "text/plain"


def test_html_only_mail_gets_plain_text() -> None:
    raw = mail(BASIC_HEADERS.replace("text/plain", "text/html"),
               "<html><body><p>Beste KCC,</p><p>Mijn <b>afval</b> is niet opgehaald.</p></body></html>")
    parsed = parse_mail(raw)
    assert parsed.html is not None and "<b>afval</b>" in parsed.html
    assert "Beste KCC," in parsed.text and "Mijn afval is niet opgehaald." in parsed.text
    assert "<" not in parsed.text


def test_alternative_prefers_plain_and_keeps_html_and_footer() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="m"'),
        '--m\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        "--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlatte tekst\r\n"
        "--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML tekst</p>\r\n--a--\r\n"
        "--m\r\nContent-Type: text/plain\r\n\r\n-- \r\nvoettekst van de provider\r\n--m--\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.text == "Platte tekst\n\n-- \nvoettekst van de provider"
    assert parsed.html == "<p>HTML tekst</p>"
    assert parsed.attachments == ()


def test_attached_message_is_kept_whole_and_not_mixed_into_the_text() -> None:
    inner = b"From: oud@example.nl\r\nSubject: Oorspronkelijke vraag\r\n\r\nOude tekst\r\n"
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="m"'),
        b"--m\r\nContent-Type: text/plain\r\n\r\nZie doorgestuurd bericht.\r\n"
        b"--m\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--m--\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.text == "Zie doorgestuurd bericht."
    [attached] = parsed.attachments
    assert (attached.filename, attached.content_type) == ("bericht-1.eml", "message/rfc822")
    assert parse_mail(attached.data).subject == "Oorspronkelijke vraag"
    assert attached.data.rstrip(b"\r\n") == inner.rstrip(b"\r\n")


def test_attached_message_keeps_its_headers_as_received() -> None:
    """The attached original is evidence: its headers are not folded anew, re-encoded or decoded."""
    inner = (
        b"From: =?utf-8?q?J=C3=A9r=C3=B4me?= <oud@example.nl>\r\n"
        b"Subject: Een lange onderwerpregel die de afzender zelf \r\n\tna 'zelf ' heeft afgebroken\r\n"
        b"X-Acht-Bits: caf\xc3\xa9 op de hoek\r\n"
        b"Received: from mx.example.nl (mx.example.nl [192.0.2.1]) by mail.gemeente.nl with ESMTPS id 4Xyz; "
        b"Mon, 30 Nov 2026 10:00:00 +0100\r\n\r\nOude tekst\r\n"
    )
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="m"'),
        b"--m\r\nContent-Type: text/plain\r\n\r\nZie doorgestuurd bericht.\r\n"
        b"--m\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--m--\r\n",
    )
    [attached] = parse_mail(raw).attachments
    assert attached.data.rstrip(b"\r\n") == inner.rstrip(b"\r\n")


def test_inline_image_has_content_id_without_brackets() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/related; boundary="r"'),
        '--r\r\nContent-Type: text/html\r\n\r\n<img src="cid:logo@kcc">\r\n'
        "--r\r\nContent-Type: image/gif\r\nContent-ID: <logo@kcc>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "R0lGODlh\r\n--r--\r\n",
    )
    [image] = parse_mail(raw).attachments
    assert (image.filename, image.inline, image.content_id) == ("bijlage-1.gif", True, "logo@kcc")
    assert image.data == b"GIF89a"


# ------------------------------------------------------------------------------------------------- TNEF


def tnef_attribute(level: int, name: int, kind: int, data: bytes) -> bytes:
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def winmail_dat(filename: bytes, content: bytes) -> bytes:
    """A minimal TNEF stream written after [MS-OXTNEF]: version, one attachment with title and data.

    No TNEF sample exists in the corpus, the system or the tnefparse package, so the test builds one.
    """
    return (
        struct.pack("<IH", 0x223E9F78, 1)
        + tnef_attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x10000))  # attTnefVersion
        + tnef_attribute(2, 0x9002, 0x0006, b"\x01\x00" + b"\xff" * 4 + b"\x00" * 8)  # attAttachRendData
        + tnef_attribute(2, 0x8010, 0x0001, filename + b"\x00")  # attAttachTitle
        + tnef_attribute(2, 0x800F, 0x0006, content)  # attAttachData
    )


def mail_with_winmail(blob: bytes) -> bytes:
    return mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="t"'),
        "--t\r\nContent-Type: text/plain\r\n\r\nZie bijlage\r\n"
        '--t\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64.encodebytes(blob).decode().replace("\n", "\r\n") + "--t--\r\n",
    )


def test_winmail_dat_is_kept_and_unpacked() -> None:
    blob = winmail_dat(b"verslag.txt", b"Inhoud van het verslag")
    parsed = parse_mail(mail_with_winmail(blob))
    assert [(a.filename, a.content_type, a.unpacked_from) for a in parsed.attachments] == [
        ("winmail.dat", "application/ms-tnef", None),
        ("verslag.txt", "text/plain", "winmail.dat"),
    ]
    assert parsed.attachments[0].data == blob
    assert parsed.attachments[1].data == b"Inhoud van het verslag"


def test_broken_winmail_dat_is_kept_with_a_defect() -> None:
    parsed = parse_mail(mail_with_winmail(b"dit is geen TNEF"))
    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert any("could not be unpacked" in d for d in parsed.defects)


# -------------------------------------------------------------------------------------------- reports


@pytest.mark.corpus
def test_delivery_report_parts_are_exposed_for_the_classifier() -> None:
    parsed = parse_mail(corpus("flufl-bounce/data/dsn_01.txt"))
    assert parsed.report is not None
    assert parsed.report.report_type == "delivery-status"
    assert "Action: failed" in parsed.report.status
    assert "Message-id: <F1218V8zDv60gxapzha000001ae@hotmail.com>" in parsed.report.original_headers


# ------------------------------------------------------------------------- when a library fails anyway


def test_empty_plain_alternative_falls_back_to_the_html() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/alternative; boundary="a"'),
        "--a\r\nContent-Type: text/plain\r\n\r\n\r\n"
        "--a\r\nContent-Type: text/html\r\n\r\n<p>Alleen in HTML geschreven</p>\r\n--a--\r\n",
    )
    assert parse_mail(raw).text.strip() == "Alleen in HTML geschreven"


def test_html_converter_failure_falls_back_to_stripping_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(html: str) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("ingest.parse.body.inscriptis.get_text", broken)
    parsed = parse_mail(mail(BASIC_HEADERS.replace("text/plain", "text/html"), "<p>Beste&nbsp;KCC</p>"))
    assert parsed.text.strip() == "Beste\xa0KCC"
    assert "HTML could not be converted to text (RecursionError): tags stripped instead" in parsed.defects


def test_part_that_breaks_decoding_is_kept_as_raw_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.parse.body

    real = ingest.parse.body.part_text

    def fails_on_html(part: object, ctx: object, where: str) -> str:
        if where == "text/html":
            raise ValueError("kapot")
        return real(part, ctx, where)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest.parse.body, "part_text", fails_on_html)
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="m"'),
        "--m\r\nContent-Type: text/plain\r\n\r\nTekst\r\n--m\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--m--\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.text == "Tekst"
    [kept] = parsed.attachments
    assert kept.filename == "bijlage-1.bin" and b"<p>x</p>" in kept.data
    assert "a text/html part could not be read (ValueError: kapot): kept as raw bytes" in parsed.defects


def test_unexpected_library_error_becomes_unparseable_with_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(data: bytes) -> None:
        raise KeyError("boundary")

    monkeypatch.setattr("ingest.parse.mail._parse_tree", explode)
    with pytest.raises(UnparseableMail, match=r"KeyError: 'boundary'"):
        parse_mail(mail(BASIC_HEADERS))


# ------------------------------------------- the hostile kinds again, made here (a fresh clone has no corpus)


def test_made_missing_closing_boundary_keeps_the_text() -> None:
    raw = mail(BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="b"'),
               "--b\r\nContent-Type: text/plain\r\n\r\nSome body\r\n--b\r\nContent-Type: text/plain\r\n\r\n")
    parsed = parse_mail(raw)
    assert parsed.text == "Some body"
    assert "missing closing boundary: the last part runs to the end of the mail" in parsed.defects


def test_made_us_ascii_declared_but_utf8_sent_is_read_as_utf8() -> None:
    parsed = parse_mail(mail(BASIC_HEADERS.replace("utf-8", "us-ascii"), "Graag één afspraak, café.\r\n"))
    assert parsed.text == "Graag één afspraak, café.\n"
    assert any("not in its declared charset 'us-ascii'" in d for d in parsed.defects)


def test_made_outlook_msg_file_is_not_a_mail() -> None:
    ole2 = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504) + "Onderwerp: vraag".encode("utf-16-le")
    with pytest.raises(UnparseableMail, match="no header found"):
        parse_mail(ole2)


def test_made_leading_blank_lines_before_the_header_are_removed() -> None:
    parsed = parse_mail(b"\r\n\r\n \r\n" + mail(BASIC_HEADERS))
    assert parsed.from_address == "jan@example.nl"
    assert "blank lines before the header: removed" in parsed.defects


def test_made_endless_mail_of_many_parts_ends_in_a_limit() -> None:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\ndeel {n}\r\n" for n in range(1200))
    raw = mail(BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/mixed; boundary="b"'), parts + "--b--\r\n")
    started = time.monotonic()
    with pytest.raises(MailLimitExceeded, match="more than 1000 MIME parts"):
        parse_mail(raw)
    assert time.monotonic() - started < 10


def test_made_delivery_report_parts_are_exposed_for_the_classifier() -> None:
    raw = mail(
        BASIC_HEADERS.replace("text/plain; charset=utf-8", 'multipart/report; report-type=delivery-status; '
                                                           'boundary="r"'),
        "--r\r\nContent-Type: text/plain\r\n\r\nNiet afgeleverd.\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.nl\r\n\r\n"
        "Final-Recipient: rfc822; weg@example.nl\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--r\r\nContent-Type: message/rfc822\r\n\r\nFrom: info@gemeente.nl\r\nMessage-id: <antwoord-1@gemeente.nl>\r\n"
        "Subject: Uw vraag\r\n\r\ntekst\r\n--r--\r\n",
    )
    parsed = parse_mail(raw)
    assert parsed.report is not None and parsed.report.report_type == "delivery-status"
    assert "Action: failed" in parsed.report.status
    assert "Message-id: <antwoord-1@gemeente.nl>" in parsed.report.original_headers


@pytest.mark.parametrize(("encoded", "expected"), [
    ("ciële.txt".encode(), "ciële.txt"),  # raw UTF-8, as many mail programs send it
    ("ciële.txt".encode("cp1252"), "ciële.txt"),  # raw windows-1252: read as such, with a defect
])
def test_a_raw_8bit_attachment_name_is_decoded(encoded: bytes, expected: str) -> None:
    raw = (b"From: Jan <jan@example.nl>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\n"
           b'Content-Type: text/plain; name="' + encoded + b'"\r\nContent-Disposition: attachment; filename="'
           + encoded + b'"\r\n\r\ninhoud\r\n--b--\r\n')
    assert [a.filename for a in parse_mail(raw).attachments] == [expected]


def test_a_huge_html_body_still_gives_its_words_in_order_without_scripts() -> None:
    """Over the layout converter's bound the text is taken in one pass: every word kept, one block a line."""
    from ingest.parse.html_text import TREE_MAX_CHARS

    paragraph = "<p>Melding <b>lantaarnpaal</b> kapot in de Dorpsstraat&nbsp;&amp; omgeving.</p>\n"
    repeat = TREE_MAX_CHARS // len(paragraph) + 10
    html = ("<html><head><title>Nieuwsbrief<style>p { color: red }</style><body><h1>Klacht</h1>"  # no </head>
            + paragraph * repeat + "<script>stuur('geheim')</script><div>Groet,<br>Karel</div></body></html>")
    parsed = parse_mail(mail(BASIC_HEADERS.replace("text/plain", "text/html"), html))
    lines = parsed.text.split("\n")
    assert lines[:2] == ["Nieuwsbrief", "Klacht"], "an unclosed <title> or <head> hides nothing"
    assert lines[2:-2] == ["Melding lantaarnpaal kapot in de Dorpsstraat & omgeving."] * repeat
    assert lines[-2:] == ["Groet,", "Karel"]
    assert "geheim" not in parsed.text and "color" not in parsed.text
    assert any("without layout" in d for d in parsed.defects)
    assert parsed.html is not None and parsed.html.startswith("<html>")


@pytest.mark.parametrize(("charset", "name"), [("utf-8", "Zoë"), ("iso-8859-1", "Zoë"), ("utf-16", "Zoë අĊ")])
def test_line_ends_become_newlines_in_every_charset(charset: str, name: str) -> None:
    """CR LF is made \n on the bytes where the charset allows it, and on the text where it does not: in UTF-16
    "අĊ" is the bytes 85 0D 0A 01, which a replace on the bytes would break."""
    body = f"Beste gemeente,\r\nde lantaarnpaal is stuk.\r\nGroet, {name}\r\n".encode(charset)
    raw = mail(BASIC_HEADERS.replace("charset=utf-8", f"charset={charset}")
               + "\nContent-Transfer-Encoding: 8bit", body)
    assert parse_mail(raw).text == f"Beste gemeente,\nde lantaarnpaal is stuk.\nGroet, {name}\n"
