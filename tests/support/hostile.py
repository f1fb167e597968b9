"""Hostile mails made from code, of every kind DESIGN.md §4 lists, so robustness tests need no files from outside.

`hostile_mails(n)` cycles through the kinds and makes each copy unique with one extra header, in the form an IMAP
server stores mail (CRLF, no NUL), so the bytes a test APPENDs are the bytes intake fetches.
"""

from __future__ import annotations

import base64
from collections.abc import Callable


def _plain(subject: str, body: str, extra: str = "") -> bytes:
    return (f"From: Karel <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nMessage-ID: <{abs(hash(subject))}@example.nl>\r\n{extra}"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def _missing_boundary() -> bytes:
    return (b"From: a@example.nl\r\nSubject: geen eindgrens\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ntekst\r\n"
            b"--b\r\nContent-Type: application/pdf; name=\"brief.pdf\"\r\n\r\n%PDF-1.4 afgebroken")


def _no_boundary_parameter() -> bytes:
    return (b"From: a@example.nl\r\nSubject: grens geraden\r\nContent-Type: multipart/mixed\r\n\r\n"
            b"--raad\r\nContent-Type: text/plain\r\n\r\nvraag\r\n--raad--\r\n")


def _unknown_charset() -> bytes:
    return (b"From: b@example.nl\r\nSubject: =?fakescii?q?onbekend_=E9?=\r\nContent-Type: text/plain; charset=uft-8"
            b"\r\n\r\n") + "Graag een afspraak, café.\r\n".encode("cp1252")


def _eight_bit_headers() -> bytes:
    return "From: José Müller <jose@example.nl>\r\nSubject: Aanvraag — spoed ë\r\n\r\nTekst\r\n".encode()


def _rfc2231_name() -> bytes:
    return (b"From: c@example.nl\r\nSubject: bijlage\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nzie bijlage\r\n"
            b"--x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename*=utf-8''aanvraag%20ci%C3%ABle.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--x--\r\n")


def _path_in_name() -> bytes:
    return (b"From: d@example.nl\r\nSubject: pad\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=p"
            b"\r\n\r\n--p\r\nContent-Type: text/plain\r\n\r\nx\r\n--p\r\nContent-Type: text/plain\r\n"
            b"Content-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\nroot:x:0:0\r\n--p--\r\n")


def _without_from_date_and_id() -> bytes:
    return b"Subject: alleen een onderwerp\r\n\r\nwie ben ik?\r\n"


def _nul_bytes() -> bytes:
    return _plain("Met NUL", "tekst met nul").replace(b"met nul", b"met \x00 nul")


def _deep_nesting(levels: int = 120) -> bytes:
    raw = b"From: e@example.nl\r\nSubject: diep\r\nMIME-Version: 1.0\r\n"
    raw += b"".join(b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i) for i in range(levels))
    return raw + b"Content-Type: text/plain\r\n\r\nbodem\r\n"


def _big_attachment(size: int = 2 * 1024 * 1024) -> bytes:
    data = base64.encodebytes(bytes(range(256)) * (size // 256)).replace(b"\n", b"\r\n")
    return (b"From: f@example.nl\r\nSubject: grote bijlage\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=g\r\n\r\n--g\r\nContent-Type: text/plain\r\n\r\nfoto\r\n"
            b"--g\r\nContent-Type: image/jpeg; name=foto.jpg\r\nContent-Transfer-Encoding: base64\r\n\r\n" + data +
            b"--g--\r\n")


def _bounce() -> bytes:
    return (b"From: Mail Delivery System <MAILER-DAEMON@mx.example.nl>\r\nTo: info@gemeente.nl\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
            b"--r\r\nContent-Type: text/plain\r\n\r\nniet afgeleverd\r\n"
            b"--r\r\nContent-Type: message/delivery-status\r\n"
            b"\r\nReporting-MTA: dns; mx.example.nl\r\n\r\nFinal-Recipient: rfc822; weg@example.nl\r\n"
            b"Action: failed\r\nStatus: 5.1.1\r\n--r--\r\n")


def _auto_reply() -> bytes:
    return _plain("Afwezig: Uw vraag", "Ik ben tot maandag afwezig.", "Auto-Submitted: auto-replied\r\n")


def _tnef() -> bytes:
    return (b"From: g@example.nl\r\nSubject: winmail\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
            b"boundary=w\r\n\r\n--w\r\nContent-Type: text/plain\r\n\r\nzie bijlage\r\n--w\r\n"
            b"Content-Type: application/ms-tnef; name=winmail.dat\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"eJ8+IgAAAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAA==\r\n--w--\r\n")


def _smime() -> bytes:
    return (b"From: h@example.nl\r\nSubject: ondertekend\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s"
            b"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nondertekende vraag\r\n--s\r\n"
            b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"MIIBAQYJKoZIhvcNAQcCoIIB8jCCAe4CAQExDzANBglghkgBZQMEAgEFADALBgkqhkiG9w0BBwE=\r\n--s--\r\n")


def _html_only() -> bytes:
    return (b"From: i@example.nl\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<p>Beste KCC,<script>alert(1)</script></p><img src=\"http://tracker.example/x.png\">\r\n")


def _empty() -> bytes:
    return b"\r\n\r\n"


KINDS: tuple[Callable[[], bytes], ...] = (
    lambda: _plain("Vraag over de afvalkalender", "Wanneer wordt het papier opgehaald?"),
    _missing_boundary, _no_boundary_parameter, _unknown_charset, _eight_bit_headers, _rfc2231_name,
    _path_in_name, _without_from_date_and_id, _nul_bytes, _deep_nesting, _bounce, _auto_reply, _tnef, _smime,
    _html_only, _empty,
)


def as_imap_stores_it(raw: bytes) -> bytes:
    """CRLF line ends and no NUL bytes, as an IMAP server keeps a mail (Dovecot turns NUL into 0x80)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").replace(b"\0", b"\x80")


def hostile_mails(count: int, tag: str = "X-Test-Seq", *, big_every: int = 0) -> list[bytes]:
    """`count` distinct mails cycling through every hostile kind; with `big_every`, each n-th one is 2 MB."""
    sources = [as_imap_stores_it(kind()) for kind in KINDS]
    mails = []
    for i in range(count):
        source = as_imap_stores_it(_big_attachment()) if big_every and i % big_every == big_every - 1 else \
            sources[i % len(sources)]
        mails.append(f"{tag}: {i}\r\n".encode() + source)
    return mails
