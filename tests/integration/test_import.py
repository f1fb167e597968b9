"""Importing mbox files, Maildirs and folders of .eml files on SQLite and PostgreSQL, as intake would store them."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from support.mails import customer_mail, with_attachment

from ingest.analysis import AnalyseSettings, ClassifyOptions
from ingest.sources.files import detect_format, read_mbox
from kcc.bootstrap import App
from kcc.usecases.mail_import import ImportSourceError, ImportSummary, import_path
from kcc.usecases.reprocess import Selection, reprocess
from store.blobs import get_blob
from store.mail import InboundMail

MTIME = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def new_mailbox() -> str:
    return f"mb-{uuid.uuid4().hex[:8]}"


def settings(app: App) -> AnalyseSettings:
    return AnalyseSettings(app.config.storage.max_mail_bytes, ClassifyOptions())


def run_import(app: App, path: Path, mailbox: str, fmt: str = "auto", *, dry_run: bool = False) -> ImportSummary:
    return import_path(app.uow, path, mailbox, settings(app), fmt=fmt, dry_run=dry_run)


def rows(app: App, mailbox: str) -> list[tuple[str, str, bytes, datetime, str]]:
    """(source key, state, raw bytes, received at, subject) of every mail stored in `mailbox`, oldest id first."""
    with app.uow() as uow:
        mails = uow.session.scalars(
            select(InboundMail).where(InboundMail.mailbox == mailbox).order_by(InboundMail.id)
        ).all()
        return [(m.source_key, m.state, get_blob(uow.session, m.raw_sha256), m.received_at, m.subject) for m in mails]


def write(path: Path, data: bytes, mtime: datetime = MTIME) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


# ----------------------------------------------------------------------------------------------- the corpus


def test_the_whole_corpus_imported_then_reimported_then_reprocessed_changes_nothing_twice(
    app: App, corpus: Path
) -> None:
    mailbox = new_mailbox()
    files = sorted(p for p in corpus.rglob("*") if p.is_file())

    first = run_import(app, corpus, mailbox)
    assert first.errors == 0
    assert first.read + first.skipped == len(files)
    assert first.read == first.stored + first.quarantined + first.duplicates
    skipped = {key for key, _ in first.skipped_names}
    assert len(skipped) == first.skipped
    for key in skipped:  # what is skipped is what the parser, too, finds no mail in
        analysis = settings(app).analyse((corpus / key).read_bytes(), MTIME)
        assert (analysis.reason, analysis.error[:15]) == ("unparseable", "no header found"), key

    stored = rows(app, mailbox)
    expected = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.relative_to(corpus).as_posix()
                not in skipped}
    assert len(stored) == first.stored + first.quarantined == len(expected)
    assert {hashlib.sha256(raw).hexdigest() for _, _, raw, _, _ in stored} == expected  # byte-exact
    assert {state for _, state, _, _, _ in stored} <= {"te_beoordelen", "quarantaine"}
    assert first.stored > 0.95 * len(stored)

    second = run_import(app, corpus, mailbox)
    assert second.line() == (
        f"read={first.read} stored=0 quarantined=0 duplicates={first.read} skipped={first.skipped} errors=0"
    )
    assert len(rows(app, mailbox)) == len(stored)

    again = reprocess(app.uow, Selection(states=None, mailbox=mailbox), settings(app))
    assert again.line() == (
        f"selected={len(stored)} reparsed={len(stored)} released=0 still_quarantined={first.quarantined} "
        f"unchanged={len(stored)} errors=0"
    )


# ----------------------------------------------------------------------------------------------------- mbox

ORIGINALS = [
    b"From: Karel <karel@example.nl>\nSubject: Eerste\n\nGoedemorgen,\n\nFrom the desk of the mayor: hello.\n"
    b">From a quoted reply\n>>From deeper\n> not >From the start\n\nFrom now on we open at 9:00.\n",
    b"From: Anna <anna@example.nl>\nSubject: Tweede\n\nKorte vraag.\n",
    b"From: Piet <piet@example.nl>\nSubject: Derde\n\nLaatste regel zonder lege regel erna\n",
]
ENVELOPES = [
    b"From karel@example.nl Wed Nov 23 08:15:00 2026\n",
    b"From anna@example.nl  Sat Jan  3 01:05:34 1996\n",
    b"From MAILER-DAEMON Thu, 26 Jan 2006 10:00:00 +0100\n",
]


def mboxrd_quote(mail: bytes) -> bytes:
    lines = mail.split(b"\n")
    return b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line for line in lines)


def mboxo_quote(mail: bytes) -> bytes:
    return b"\n".join(b">" + line if line.startswith(b"From ") else line for line in mail.split(b"\n"))


def mbox(originals: list[bytes], quote: object) -> bytes:
    assert callable(quote)
    return b"\n".join(envelope + quote(mail) for envelope, mail in zip(ENVELOPES, originals, strict=True))


def test_an_mboxrd_file_is_split_at_envelope_lines_and_unquoted_byte_exact(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    path = write(tmp_path / "archief.mbox", mbox(ORIGINALS, mboxrd_quote))
    assert detect_format(path) == "mbox"

    summary = run_import(app, path, mailbox)
    assert summary.line() == "read=3 stored=3 quarantined=0 duplicates=0 skipped=0 errors=0"
    stored = rows(app, mailbox)
    assert [raw for _, _, raw, _, _ in stored] == ORIGINALS
    assert [key for key, *_ in stored] == ["archief.mbox#1", "archief.mbox#2", "archief.mbox#3"]
    assert [when for _, _, _, when, _ in stored] == [
        datetime(2026, 11, 23, 8, 15, tzinfo=UTC), datetime(1996, 1, 3, 1, 5, 34, tzinfo=UTC),
        datetime(2006, 1, 26, 9, 0, tzinfo=UTC),
    ]
    assert "From now on we open at 9:00." in stored[0][2].decode()  # a body line, not a new mail

    assert run_import(app, path, mailbox).line() == "read=3 stored=0 quarantined=0 duplicates=3 skipped=0 errors=0"


def test_an_mboxo_file_unquotes_only_one_level(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    path = write(tmp_path / "oud.mbox", mbox(ORIGINALS, mboxo_quote))
    summary = run_import(app, path, mailbox, fmt="mboxo")
    assert summary.stored == 3
    first = rows(app, mailbox)[0][2]
    # mboxo cannot tell a written ">From" from a quoted "From": the original ">From a quoted reply" comes back
    # as "From a quoted reply", ">>From deeper" stays as it is.
    assert first == ORIGINALS[0].replace(b">From a quoted", b"From a quoted")


def test_the_same_mail_twice_in_one_mbox_is_stored_once(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    mail = customer_mail("Twee keer").replace(b"\r\n", b"\n")
    path = write(tmp_path / "dubbel.mbox", ENVELOPES[0] + mail + b"\n" + ENVELOPES[0] + mail)
    assert run_import(app, path, mailbox).line() == (
        "read=2 stored=1 quarantined=0 duplicates=1 skipped=0 errors=0"
    )


def test_reading_an_mbox_keeps_one_mail_in_memory_and_names_empty_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "leeg.mbox", ENVELOPES[0] + b"\n" + ENVELOPES[1] + ORIGINALS[1])
    entries = list(read_mbox(path))
    assert [type(e).__name__ for e in entries] == ["NotAMail", "SourceMail"]


# -------------------------------------------------------------------------------------------------- Maildir


def test_a_maildir_is_read_from_new_and_cur_and_left_as_it_is(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    root = tmp_path / "Maildir"
    early, late = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC)
    write(root / "cur" / "1700000000.1.host:2,S", customer_mail("Gelezen"), early)
    write(root / "new" / "1700000001.2.host", with_attachment(), late)
    write(root / "tmp" / "1700000002.3.host", b"From: half\r\n")  # still being delivered: never read
    write(root / "new" / ".verborgen", customer_mail("Geen mail"))
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    summary = run_import(app, root, mailbox)
    assert summary.line() == "read=2 stored=2 quarantined=0 duplicates=0 skipped=0 errors=0"
    assert [(key, subject, when) for key, _, _, when, subject in rows(app, mailbox)] == [
        ("cur/1700000000.1.host:2,S", "Gelezen", early), ("new/1700000001.2.host", "Kapotte container", late),
    ]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == before
    with pytest.raises(ImportSourceError, match="not a Maildir: it needs the folders cur/ and new/"):
        run_import(app, tmp_path, mailbox, fmt="maildir")


# -------------------------------------------------------------------------------------- a folder of files


def test_a_folder_with_other_files_imports_the_mails_and_counts_the_rest(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    folder = tmp_path / "bewaard"
    write(folder / "vraag.eml", customer_mail("Vraag"))
    write(folder / "sub" / "bericht", customer_mail("Zonder extensie"))  # starts like a mail
    write(folder / "kapot.eml", b"dit is geen mail maar wel zo genoemd\n")  # kept, in quarantine
    write(folder / "notities.txt", b"Bel Karel terug\n")
    write(folder / "foto.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF")
    write(folder / "leeg.eml", b"")
    write(folder / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(folder / ".git" / "HEAD", b"ref: refs/heads/main\n")
    (folder / "weg.eml").symlink_to(folder / "bestaat-niet.eml")

    summary = run_import(app, folder, mailbox)
    assert summary.line() == "read=3 stored=2 quarantined=1 duplicates=0 skipped=6 errors=0"
    assert dict(summary.skipped_names) == {
        ".DS_Store": "hidden file", ".git/": "hidden directory", "foto.jpg": "does not start with a mail header",
        "leeg.eml": "empty file", "notities.txt": "does not start with a mail header",
        "weg.eml": "not a regular file (a symbolic link or a device is never imported)",
    }
    assert sorted((key, state) for key, state, *_ in rows(app, mailbox)) == [
        ("kapot.eml", "quarantaine"), ("sub/bericht", "te_beoordelen"), ("vraag.eml", "te_beoordelen"),
    ]


def test_a_dry_run_counts_without_storing(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    write(tmp_path / "a.eml", customer_mail("A"))
    write(tmp_path / "b.eml", customer_mail("A").replace(b"Subject: A", b"Subject: B"))
    write(tmp_path / "kopie.eml", (tmp_path / "a.eml").read_bytes())
    summary = run_import(app, tmp_path, mailbox, dry_run=True)
    assert summary.line() == "read=3 stored=2 quarantined=0 duplicates=1 skipped=0 errors=0"
    assert rows(app, mailbox) == []


def test_paths_that_cannot_be_imported_are_refused_with_what_to_do(app: App, tmp_path: Path) -> None:
    text = write(tmp_path / "notities.txt", b"Geen mail, geen mbox.\n")
    with pytest.raises(ImportSourceError, match="not an mbox .* nor a mail, nor a directory; .* or pass --format"):
        run_import(app, text, new_mailbox())
    with pytest.raises(ImportSourceError, match="is not an mbox: its first line does not start with 'From '"):
        run_import(app, text, new_mailbox(), fmt="mbox")
    with pytest.raises(ImportSourceError, match="is not a file, so it cannot be an mbox"):
        run_import(app, tmp_path, new_mailbox(), fmt="mbox")
    with pytest.raises(ImportSourceError, match="is neither a file nor a directory"):
        run_import(app, tmp_path / "bestaat-niet", new_mailbox())


def test_a_symlink_in_a_folder_is_never_followed(app: App, tmp_path: Path) -> None:
    mailbox = new_mailbox()
    folder = tmp_path / "map"
    write(folder / "vraag.eml", customer_mail("Vraag"))
    secret = tmp_path / "geheim"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")  # starts like a header line, as /etc/passwd does
    (folder / "passwd.eml").symlink_to(secret)
    summary = run_import(app, folder, mailbox)
    assert (summary.stored, summary.read) == (1, 1)
    assert dict(summary.skipped_names)["passwd.eml"].startswith("not a regular file")
    assert [key for key, *_ in rows(app, mailbox)] == ["vraag.eml"]
