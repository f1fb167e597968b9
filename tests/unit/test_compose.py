"""replies.compose: reply headers, threading, quoting, CRLF bytes, and no header injection from any value.

Every test parses the produced bytes back with the standard library, as a receiving mail program would.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import pytest

from replies.compose import (
    MAX_REFERENCES,
    QUOTE_MAX_LINES,
    ComposedReply,
    ComposeError,
    OriginalMail,
    Sender,
    compose_reply,
    dutch_datetime,
    new_message_id,
    reply_references,
    reply_subject,
    single_line,
)
from replies.render import RenderedReply
from replies.templates import ReplyTemplates

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "replies"
CEST = timezone(timedelta(hours=2))
NOW = datetime(2024, 5, 8, 10, 30, tzinfo=CEST)
OUR_ID = "<kcc.5f0c1d2e3a4b4c5d8e9f00112233aabb@gemeente-voorbeeld.nl>"
SENDER = Sender(address="info@gemeente-voorbeeld.nl", name="Gemeente Voorbeeld")

ORIGINAL = OriginalMail(
    message_id="<a1b2c3@ziggo.nl>",
    subject="Afval niet opgehaald in de Lindenstraat",
    from_name="Fatima el Amrani",
    from_address="fatima.elamrani@ziggo.nl",
    reply_to=(),
    references=("<eerste@ziggo.nl>",),
    text="Beste meneer/mevrouw,\n\nSinds twee weken is de container niet geleegd.\n\nMet vriendelijke groet,\nFatima",
    received_at=datetime(2024, 5, 7, 8, 12, tzinfo=CEST),
)

TEXT_ONLY = RenderedReply(
    subject=None, text="Beste Fatima el Amrani,\n\nDe container wordt morgen geleegd.\n", html=None
)
WITH_HTML = RenderedReply(
    subject=None,
    text=TEXT_ONLY.text,
    html="<!DOCTYPE html>\n<html><body>\n<p>Beste Fatima el Amrani,</p>\n</body></html>\n",
)

OUR_HEADERS = {"from", "to", "subject", "date", "message-id", "in-reply-to", "references", "auto-submitted"}


def compose(
    original: OriginalMail = ORIGINAL,
    rendered: RenderedReply = TEXT_ONLY,
    sender: Sender = SENDER,
    **options: bool,
) -> ComposedReply:
    return compose_reply(original, rendered, sender, message_id=OUR_ID, now=NOW, **options)


def parse(reply: ComposedReply) -> EmailMessage:
    message = email.message_from_bytes(reply.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_names(reply: ComposedReply) -> Counter[str]:
    return Counter(name.lower() for name in parse(reply))


def header_block_lines(reply: ComposedReply) -> list[bytes]:
    return reply.data.partition(b"\r\n\r\n")[0].split(b"\r\n")


def assert_headers_intact(reply: ComposedReply) -> None:
    """Each header once, and none that the composer did not write (no Bcc, Cc, X-…)."""
    names = header_names(reply)
    assert all(count == 1 for count in names.values()), names
    allowed = OUR_HEADERS | {"content-language", "mime-version", "content-type", "content-transfer-encoding"}
    assert set(names) <= allowed, set(names) - allowed
    starts = [line.partition(b":")[0].lower() for line in header_block_lines(reply) if not line.startswith(b" ")]
    assert sorted(starts) == sorted(name.encode() for name in names)


def display_name(reply: ComposedReply, header: str) -> str:
    """The display name as an RFC 2047 decoder reads it: unfolded, white space between encoded words ignored.

    Python 3.11's own address parser keeps that white space, so it reads a name that needs more than one encoded
    word with stray spaces; mail programs (and email.header) follow the RFC.
    """
    raw = email.message_from_bytes(reply.data, policy=email.policy.compat32)[header]
    [(name, _address)] = getaddresses([re.sub(r"\r?\n(?=[ \t])", "", str(raw))])
    return str(make_header(decode_header(name)))


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


# --- headers --------------------------------------------------------------------------------------------------


def test_a_reply_has_every_header_the_issue_asks_for() -> None:
    reply = compose()
    message = parse(reply)

    assert message["From"].addresses[0].display_name == "Gemeente Voorbeeld"
    assert message["From"].addresses[0].addr_spec == "info@gemeente-voorbeeld.nl"
    assert message["To"].addresses[0].addr_spec == "fatima.elamrani@ziggo.nl"
    assert message["To"].addresses[0].display_name == "Fatima el Amrani"
    assert message["Subject"] == "Re: Afval niet opgehaald in de Lindenstraat"
    assert message["Message-ID"] == OUR_ID
    assert message["In-Reply-To"] == "<a1b2c3@ziggo.nl>"
    assert message["References"] == "<eerste@ziggo.nl> <a1b2c3@ziggo.nl>"
    assert message["Auto-Submitted"] == "no"
    assert message["Content-Language"] == "nl"
    assert message["X-Auto-Response-Suppress"] is None
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert_headers_intact(reply)


def test_the_composed_reply_describes_the_envelope() -> None:
    reply = compose()

    assert reply.message_id == OUR_ID
    assert reply.subject == "Re: Afval niet opgehaald in de Lindenstraat"
    assert reply.envelope_from == "info@gemeente-voorbeeld.nl"
    assert reply.recipients == ("fatima.elamrani@ziggo.nl",)


def test_an_automatic_reply_is_marked_auto_replied() -> None:
    message = parse(compose(automatic=True))

    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_the_reply_goes_to_the_first_reply_to_address() -> None:
    original = dataclasses.replace(ORIGINAL, reply_to=("secretariaat@bedrijf.nl", "ander@bedrijf.nl"))
    reply = compose(original)
    to = parse(reply)["To"].addresses

    assert reply.recipients == ("secretariaat@bedrijf.nl",)
    assert [(a.display_name, a.addr_spec) for a in to] == [("", "secretariaat@bedrijf.nl")]


def test_a_reply_to_that_is_the_sender_keeps_the_name() -> None:
    original = dataclasses.replace(ORIGINAL, reply_to=("Fatima.ElAmrani@ziggo.nl",))

    assert parse(compose(original))["To"].addresses[0].display_name == "Fatima el Amrani"


def test_the_templates_subject_wins_over_re() -> None:
    rendered = dataclasses.replace(TEXT_ONLY, subject="Ontvangstbevestiging: Afval")

    assert parse(compose(rendered=rendered))["Subject"] == "Ontvangstbevestiging: Afval"


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Afval", "Re: Afval"),
        ("Re: Afval", "Re: Afval"),
        ("RE: Re: re:Afval", "Re: Afval"),
        ("Antw: AW: Sv: Odp: Afval", "Re: Afval"),
        ("RE[2]: Re(3): Afval", "Re: Afval"),
        ("Re : Afval", "Re: Afval"),
        ("  re:   Afval  ", "Re: Afval"),
        ("Fwd: Afval", "Re: Fwd: Afval"),
        ("Re: Fwd: Re: Afval", "Re: Fwd: Re: Afval"),
        ("Resultaat: goed", "Re: Resultaat: goed"),
        ("Reactie op brief", "Re: Reactie op brief"),
        ("", "Re: (geen onderwerp)"),
        ("Re:", "Re: (geen onderwerp)"),
        ("Afval\r\nBcc: kwaad@example.org", "Re: Afval Bcc: kwaad@example.org"),
    ],
)
def test_reply_subject_does_not_pile_up_prefixes(original: str, expected: str) -> None:
    assert reply_subject(original) == expected


def test_new_message_id_is_on_our_domain() -> None:
    assert new_message_id("gemeente-voorbeeld.nl", "5f0c1d2e") == "<kcc.5f0c1d2e@gemeente-voorbeeld.nl>"
    assert new_message_id("bücher.nl", "x1") == "<kcc.x1@xn--bcher-kva.nl>"


@pytest.mark.parametrize(("domain", "token"), [("evil.nl>\r\nBcc: x", "a"), ("", "a"), ("nl", "a b"), ("nl", "")])
def test_new_message_id_refuses_what_is_not_an_id(domain: str, token: str) -> None:
    with pytest.raises(ComposeError):
        new_message_id(domain, token)


@pytest.mark.parametrize("message_id", ["", "kcc.1@x.nl\r\nBcc: kwaad@example.org", "<zonder-apenstaart>", "<a b@c>"])
def test_our_message_id_must_be_one_id(message_id: str) -> None:
    with pytest.raises(ComposeError, match="is not a Message-ID"):
        compose_reply(ORIGINAL, TEXT_ONLY, SENDER, message_id=message_id, now=NOW)


def test_references_keep_the_first_and_the_last_ten() -> None:
    thread = tuple(f"<bericht{i}@ziggo.nl>" for i in range(30))
    original = dataclasses.replace(ORIGINAL, references=(*thread, thread[5]), message_id="<laatste@ziggo.nl>")

    references = reply_references(original)

    assert len(references) == MAX_REFERENCES
    assert references[0] == "<bericht0@ziggo.nl>"
    assert references[-1] == "<laatste@ziggo.nl>"
    assert references[1:] == (*thread[-9:], "<laatste@ziggo.nl>")
    folded = parse(compose(original))["References"]
    assert folded.split() == list(references)


def test_references_drop_duplicates_and_unusable_ids() -> None:
    original = dataclasses.replace(
        ORIGINAL,
        references=("<a@x>", "<a@x>", "<kapot\r\nBcc: kwaad@example.org>", "<" + "x" * 300 + "@lang>", "zonder@haken"),
    )

    assert reply_references(original) == ("<a@x>", "<zonder@haken>", "<a1b2c3@ziggo.nl>")


def test_without_an_original_message_id_there_is_no_in_reply_to() -> None:
    original = dataclasses.replace(ORIGINAL, message_id="", references=())
    reply = compose(original)
    names = header_names(reply)

    assert "in-reply-to" not in names and "references" not in names
    assert_headers_intact(reply)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ComposeError, match="timezone-aware"):
        compose_reply(ORIGINAL, TEXT_ONLY, SENDER, message_id=OUR_ID, now=datetime(2024, 5, 8, 10, 30))


def test_the_date_keeps_its_offset() -> None:
    message = parse(compose_reply(ORIGINAL, TEXT_ONLY, SENDER, message_id=OUR_ID, now=NOW.astimezone(UTC)))

    assert message["Date"] == "Wed, 08 May 2024 08:30:00 +0000"


# --- bodies ---------------------------------------------------------------------------------------------------


def test_a_text_only_template_gives_a_text_plain_message_with_the_quote() -> None:
    reply = compose()
    message = parse(reply)

    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = text_part(message).replace("\r\n", "\n")
    assert body == reply.text
    assert body.startswith(TEXT_ONLY.text)
    assert "\nOp 7 mei 2024 om 08:12 schreef Fatima el Amrani <fatima.elamrani@ziggo.nl>:\n" in body
    assert "> Sinds twee weken is de container niet geleegd.\n>\n> Met vriendelijke groet,\n> Fatima\n" in body
    assert body.index("De container wordt morgen geleegd") < body.index("> Sinds twee weken")


def test_with_html_the_message_is_multipart_alternative() -> None:
    message = parse(compose(rendered=WITH_HTML))

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Content-Language"] == "nl"
    html = html_part(message)
    assert '<blockquote type="cite"' in html
    assert "Sinds twee weken is de container niet geleegd." in html
    assert html.index("<blockquote") < html.index("</body>")


def test_the_quote_in_html_is_escaped() -> None:
    original = dataclasses.replace(ORIGINAL, text="<script>alert(1)</script> & <b>vet</b>", from_name="Kwaad <script>")
    html = html_part(parse(compose(original, WITH_HTML)))

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;vet&lt;/b&gt;" in html


def test_quoting_can_be_switched_off() -> None:
    reply = compose(rendered=WITH_HTML, quote_original=False)
    message = parse(reply)

    assert reply.text == TEXT_ONLY.text
    assert "Sinds twee weken" not in html_part(message)
    assert "<blockquote" not in html_part(message)


def test_a_long_original_is_quoted_up_to_the_limit() -> None:
    original = dataclasses.replace(ORIGINAL, text="\n".join(f"regel {i}" for i in range(QUOTE_MAX_LINES + 50)))
    reply = compose(original)

    assert f"> regel {QUOTE_MAX_LINES - 1}\n" in reply.text
    assert f"> regel {QUOTE_MAX_LINES}\n" not in reply.text
    assert reply.text.endswith("> [… 50 regels niet geciteerd]\n")


def test_an_empty_original_is_not_quoted() -> None:
    assert compose(dataclasses.replace(ORIGINAL, text=" \n\n")).text == TEXT_ONLY.text


def test_hostile_body_characters_do_not_break_the_message() -> None:
    original = dataclasses.replace(ORIGINAL, text="NUL\x00 hier, surrogaat \udce9, bel \x07, CR\rLF\n")
    reply = compose(original)

    assert "\x00" not in reply.text and "\x07" not in reply.text
    assert "> NUL hier, surrogaat ?, bel , CR\n> LF\n" in reply.text


def test_every_line_ends_in_crlf() -> None:
    for reply in (compose(), compose(rendered=WITH_HTML), compose(automatic=True)):
        assert re.search(rb"(?<!\r)\n", reply.data) is None
        assert re.search(rb"\r(?!\n)", reply.data) is None
        assert reply.data.endswith(b"\r\n")


def test_the_bytes_are_seven_bit_clean() -> None:
    original = dataclasses.replace(ORIGINAL, text="Één vraag over de café-vergunning — graag", from_name="Zoë Çelik")
    reply = compose(original, WITH_HTML)

    assert reply.data.isascii()
    assert "> Één vraag over de café-vergunning — graag" in text_part(parse(reply))


def test_the_shipped_antwoord_template_composes_into_a_complete_reply() -> None:
    context: dict[str, object] = {
        "organisatie": "Gemeente Voorbeeld",
        "handtekening": "",
        "klant_naam": ORIGINAL.from_name,
        "onderwerp": ORIGINAL.subject,
        "referentienummer": "2024000123",
        "ontvangen_op": dutch_datetime(ORIGINAL.received_at),
        "tekst": "De container wordt morgen geleegd. <Excuses>",
    }
    rendered = ReplyTemplates(SHIPPED).render("antwoord", context)
    reply = compose(rendered=rendered)
    message = parse(reply)

    text = text_part(message)
    assert "Beste Fatima el Amrani," in text and "De container wordt morgen geleegd. <Excuses>" in text
    assert "Klantcontactcentrum Gemeente Voorbeeld" in text and "2024000123" in text
    assert "De container wordt morgen geleegd. &lt;Excuses&gt;" in html_part(message)
    assert_headers_intact(reply)


def test_dutch_datetime() -> None:
    assert dutch_datetime(datetime(2024, 12, 1, 9, 5)) == "1 december 2024 om 09:05"


# --- header injection -----------------------------------------------------------------------------------------

NASTY = [
    "Vraag\r\nBcc: kwaad@example.org",
    "Vraag\nBcc: kwaad@example.org",
    "Vraag\rBcc: kwaad@example.org",
    "Vraag\r\n\r\nNu begint de body",
    "Vraag\x00\x0b\x0c\x1c\x85\u2028Bcc: kwaad@example.org",
    "Vraag\r\n Bcc: kwaad@example.org",
    "=?utf-8?q?Vraag=0D=0ABcc:_kwaad@example.org?=",
    "Vraag é\r\nBcc: kwaad@example.org " + "ä" * 80,
]


@pytest.mark.parametrize("subject", NASTY)
def test_the_original_subject_cannot_add_a_header(subject: str) -> None:
    reply = compose(dataclasses.replace(ORIGINAL, subject=subject))
    message = parse(reply)

    assert_headers_intact(reply)
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message["Subject"] == reply.subject == reply_subject(subject)
    assert message.get_content_type() == "text/plain"


@pytest.mark.parametrize("subject", NASTY)
def test_a_rendered_subject_cannot_add_a_header(subject: str) -> None:
    reply = compose(rendered=dataclasses.replace(TEXT_ONLY, subject=subject))

    assert_headers_intact(reply)
    assert parse(reply)["Subject"] == single_line(subject)


@pytest.mark.parametrize("name", [*NASTY, 'Jansen, J. "Jan" <kwaad@example.org>', "=?utf-8?q?a?= <b@c>"])
def test_the_customers_name_cannot_add_a_header_or_an_address(name: str) -> None:
    reply = compose(dataclasses.replace(ORIGINAL, from_name=name))
    to = parse(reply)["To"].addresses

    assert_headers_intact(reply)
    assert len(to) == 1
    assert to[0].addr_spec == "fatima.elamrani@ziggo.nl"
    shown = single_line(name)
    assert display_name(reply, "To") == ("" if "@" in shown else shown), "a name like an address is left out"
    assert reply.recipients == ("fatima.elamrani@ziggo.nl",)


@pytest.mark.parametrize("name", NASTY)
def test_the_senders_name_cannot_add_a_header(name: str) -> None:
    reply = compose(sender=dataclasses.replace(SENDER, name=name))

    assert_headers_intact(reply)
    assert parse(reply)["From"].addresses[0].addr_spec == SENDER.address
    assert display_name(reply, "From") == single_line(name)


@pytest.mark.parametrize(
    "address",
    [
        "klant@example.nl\r\nBcc: kwaad@example.org",
        "klant@example.nl\nBcc: kwaad@example.org",
        "klant@example.nl, kwaad@example.org",
        "klant@example.nl;kwaad@example.org",
        "Klant <klant@example.nl>",
        "klant@example.nl>",
        '"klant"@example.nl',
        "klant example.nl",
        "klant",
        "klant@@example.nl",
        "klant@example.nl@kwaad.org",
        "klänt@example.nl",
        "klant@exa_mple.nl",
        "klant@[127.0.0.1]",
        ".klant@example.nl",
    ],
)
def test_a_reply_to_that_is_not_one_address_must_be_answered_by_hand(address: str) -> None:
    with pytest.raises(ComposeError, match=r"Reply-To address .* is not one e-mail address .*answer this mail by hand"):
        compose(dataclasses.replace(ORIGINAL, reply_to=(address,)))


def test_a_bad_from_address_must_be_answered_by_hand() -> None:
    with pytest.raises(ComposeError, match="From address .* answer this mail by hand"):
        compose(dataclasses.replace(ORIGINAL, from_address="fatima@ziggo.nl\r\nBcc: kwaad@example.org"))


def test_a_mail_without_any_address_cannot_be_answered() -> None:
    with pytest.raises(ComposeError, match="no Reply-To and no From address"):
        compose(dataclasses.replace(ORIGINAL, from_address="", reply_to=("  ",)))


def test_a_bad_sender_address_points_at_the_configuration() -> None:
    with pytest.raises(ComposeError, match=r"sender address .*check \[smtp\] from_address"):
        compose(sender=Sender(address="info@gemeente.nl\r\nBcc: x@y.nl", name="KCC"))


def test_an_international_domain_is_sent_in_ascii() -> None:
    reply = compose(dataclasses.replace(ORIGINAL, reply_to=("klant@bücher.de",)))

    assert reply.recipients == ("klant@xn--bcher-kva.de",)
    assert parse(reply)["To"].addresses[0].addr_spec == "klant@xn--bcher-kva.de"


def test_a_var_in_the_template_subject_cannot_add_a_header(tmp_path: Path) -> None:
    (tmp_path / "zaak.toml").write_text('subject = "Uw zaak {{ zaaknummer }}"\nvariables = ["zaaknummer"]\n')
    (tmp_path / "zaak.txt.j2").write_text("Over zaak {{ zaaknummer }}.\n")
    context = {"zaaknummer": "Z-1\r\nBcc: kwaad@example.org\r\nX-Extra: ja"}

    reply = compose(rendered=ReplyTemplates(tmp_path).render("zaak", context))
    message = parse(reply)

    assert_headers_intact(reply)
    assert message["Bcc"] is None and message["X-Extra"] is None
    assert message["Subject"] == "Uw zaak Z-1 Bcc: kwaad@example.org X-Extra: ja"


# --- long and non-ASCII headers -------------------------------------------------------------------------------


def test_a_long_non_ascii_subject_is_encoded_folded_and_decodes_to_the_same_text() -> None:
    subject = "Bezwaar tegen de aanslag afvalstoffenheffing 2024 — één vraag over kwijtschelding voor mijn moeder"
    assert len(subject) > 78
    reply = compose(dataclasses.replace(ORIGINAL, subject=subject))

    lines = header_block_lines(reply)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    continuation = [line for line in lines[start + 1 :] if line.startswith(b" ")]
    assert b"=?utf-8?" in lines[start]
    assert continuation, "a long subject is folded over more than one line"
    assert all(len(line) <= 78 for line in lines)
    assert parse(reply)["Subject"] == "Re: " + subject


@pytest.mark.parametrize(
    "subject",
    [
        "café Ééé Ééé straat — Zoeterwoude-Rijndijk Ééé café " * 3,
        "Ğ " + "x" * 90 + " over Müller Ğ afvalstoffenheffing Zoeterwoude-Rijndijk Ğ 中文 café de café",
        "Een heel lange vraag in gewoon ASCII over de vergunning voor een dakkapel aan de achterkant van ons huis",
        "x" * 300,
        "a=?b c",
    ],
)
def test_long_subjects_and_names_decode_back_exactly(subject: str) -> None:
    reply = compose(dataclasses.replace(ORIGINAL, subject=subject, from_name=subject[:70].strip()))
    message = parse(reply)

    assert message["Subject"] == reply_subject(subject)
    assert display_name(reply, "To") == subject[:70].strip()
    assert all(len(line) <= 78 for line in header_block_lines(reply))
    assert_headers_intact(reply)


def test_a_name_with_specials_is_quoted() -> None:
    reply = compose(dataclasses.replace(ORIGINAL, from_name='Jansen, J. "Jan"'))

    assert b'To: "Jansen, J. \\"Jan\\"" <fatima.elamrani@ziggo.nl>\r\n' in reply.data


def test_a_short_non_ascii_name_reads_back_in_pythons_own_parser_too() -> None:
    reply = compose(dataclasses.replace(ORIGINAL, from_name="Zoë Çelik-Öztürk"))

    assert parse(reply)["To"].addresses[0].display_name == "Zoë Çelik-Öztürk"


def test_random_hostile_values_never_add_a_header() -> None:
    pieces = ["\r\n", "\n", "\r", "\x00", "\x85", "\u2028", "\t", " ", ":", ",", "<", ">", '"', "\\", "=?", "?=", "é"]
    pieces += ["中文", "Bcc: kwaad@example.org", "Re:", "AW:", "x" * 70, "Fatima", "(", ")", ";", "@"]
    rng = random.Random(20240508)
    for _ in range(300):
        subject, name, sender_name = ("".join(rng.choices(pieces, k=rng.randint(0, 25))) for _ in range(3))
        reply = compose(
            dataclasses.replace(ORIGINAL, subject=subject, from_name=name),
            sender=dataclasses.replace(SENDER, name=sender_name),
        )

        assert_headers_intact(reply)
        assert re.search(rb"(?<!\r)\n", reply.data) is None
        assert parse(reply)["Subject"] == reply_subject(subject)
        shown = single_line(name)
        assert display_name(reply, "To") == ("" if "@" in shown else shown)
        assert display_name(reply, "From") == single_line(sender_name)
