"""Reconciliation against the real Dovecot: every server UID ↔ a stored mail, and each disagreement named.

Each test makes a disagreement behind kcc-mail's back (a stored row deleted, a keyword set by hand, the folder
renumbered) and checks that `reconcile_mailbox` finds it, names the UID, keeps it for status, and says what is
a loss.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, delete, select
from support.dovecot import ImapUser

from kcc.bootstrap import App, build_app
from kcc.config import MailboxConfig
from kcc.monitoring import Level
from kcc.polling import poll_once
from kcc.usecases.reconcile import Reconciliation, reconcile_mailbox
from kcc.usecases.status import check_status
from store.mail import InboundMail, ReconcileResult

KEYWORD = "$KccOpgeslagen"


def mail(subject: str) -> bytes:
    return (f"From: Karel <karel@example.nl>\r\nTo: info@gemeente.nl\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.nl>\r\n\r\nVraag: {subject}\r\n").encode()


def app_for(engine: Engine, database_url: str, tmp_path: Path, mailbox: MailboxConfig) -> App:
    from conftest import make_config

    return build_app(make_config(database_url, tmp_path, mailboxes=(mailbox,)), engine=engine)


def uid_of(user: ImapUser, subject: str, folder: str = "INBOX") -> int:
    client = user.client()
    try:
        client.select_folder(folder, readonly=True)
        [uid] = client.search(["HEADER", "Subject", subject])
        return int(uid)
    finally:
        client.logout()


def reconcile(app: App) -> Reconciliation:
    mailbox = app.config.mailboxes[0]
    return reconcile_mailbox(app.uow, mailbox, app.inventory(mailbox))


def test_a_mailbox_in_agreement_is_nothing_lost_and_fetches_no_content(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    app = app_for(engine, database_url, tmp_path, imap_user.mailbox_config(name=imap_user.name))
    for subject in ("Een", "Twee", "Drie"):
        imap_user.append(mail(subject))
    poll_once(app, app.config.mailboxes)
    imap_user.append(mail("Net binnen"))  # not fetched yet: still to come, not lost

    result = reconcile(app)
    [inbox] = result.folders
    assert (result.lost, inbox.matched, inbox.waiting, inbox.content_fetched) == (0, 3, 1, 0)
    assert result.summary() == (f"mailbox {imap_user.name}: nothing lost; folder INBOX: 3 of 4 on the server "
                                "stored, 1 still to be fetched")
    report = check_status(app.uow(), app.config)
    assert any(c.level == Level.OK and c.message.startswith(f"mailbox {imap_user.name}: reconciled with the server")
               for c in report.checks)


def test_a_stored_row_deleted_behind_kcc_mails_back_is_a_loss_named_by_uid(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    app = app_for(engine, database_url, tmp_path, imap_user.mailbox_config(name=imap_user.name))
    imap_user.append(mail("Blijft"))
    imap_user.append(mail("Verdwijnt"))
    poll_once(app, app.config.mailboxes)
    with app.uow() as uow:
        uow.session.execute(delete(InboundMail).where(InboundMail.mailbox == imap_user.name,
                                                      InboundMail.subject == "Verdwijnt"))
        uow.commit()

    result = reconcile(app)
    lost_uid = uid_of(imap_user, "Verdwijnt")
    [inbox] = result.folders
    assert result.lost == 1 and [f.uid for f in inbox.marked_not_stored] == [lost_uid]
    assert f"1 LOST, marked processed but not stored (UID {lost_uid})" in result.summary()
    with app.uow() as uow:
        kept = uow.session.get(ReconcileResult, imap_user.name)
        assert kept is not None and kept.lost == 1
    report = check_status(app.uow(), app.config)
    assert report.level == Level.CRITICAL
    assert any(c.level == Level.CRITICAL and "found 1 lost mail(s)" in c.message for c in report.checks)


def test_a_keyword_set_by_hand_on_an_unstored_mail_is_a_loss(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    app = app_for(engine, database_url, tmp_path, imap_user.mailbox_config(name=imap_user.name))
    imap_user.append(mail("Opgeslagen"))
    poll_once(app, app.config.mailboxes)
    imap_user.append(mail("Nooit gezien"), flags=[KEYWORD])  # looks processed, but kcc-mail never had it

    result = reconcile(app)
    [inbox] = result.folders
    assert [f.uid for f in inbox.marked_not_stored] == [uid_of(imap_user, "Nooit gezien")]
    assert result.lost == 1 and inbox.matched == 1


def test_a_mail_intake_went_past_without_storing_is_a_loss_and_a_stored_unmarked_one_is_named(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    app = app_for(engine, database_url, tmp_path, imap_user.mailbox_config(name=imap_user.name))
    for subject in ("Eerste", "Tweede", "Derde"):
        imap_user.append(mail(subject))
    poll_once(app, app.config.mailboxes)
    client = imap_user.client()
    client.select_folder("INBOX")
    client.remove_flags([uid_of(imap_user, "Eerste"), uid_of(imap_user, "Tweede")], [KEYWORD])
    client.logout()
    with app.uow() as uow:  # Eerste: unmarked and gone from the database, below the high-water mark
        uow.session.execute(delete(InboundMail).where(InboundMail.mailbox == imap_user.name,
                                                      InboundMail.subject == "Eerste"))
        uow.commit()

    result = reconcile(app)
    [inbox] = result.folders
    assert [f.uid for f in inbox.never_stored] == [uid_of(imap_user, "Eerste")]
    assert [f.uid for f in inbox.stored_unmarked] == [uid_of(imap_user, "Tweede")]
    assert result.lost == 1


def test_a_changed_uidvalidity_is_named_and_the_mails_matched_by_content(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    mailbox = imap_user.mailbox_config(name=imap_user.name, folder="Aanvragen")
    app = app_for(engine, database_url, tmp_path, mailbox)
    client = imap_user.client()
    client.create_folder("Aanvragen")
    for subject in ("Een", "Twee"):
        imap_user.append(mail(subject), folder="Aanvragen")
    poll_once(app, app.config.mailboxes)
    old = client.select_folder("Aanvragen", readonly=True)[b"UIDVALIDITY"]
    client.select_folder("INBOX", readonly=True)  # a selected folder cannot be deleted
    client.delete_folder("Aanvragen")  # as a server migration does: the folder renumbered, keywords carried over
    client.create_folder("Aanvragen")
    for subject in ("Een", "Twee"):
        imap_user.append(mail(subject), folder="Aanvragen", flags=[KEYWORD])
    imap_user.append(mail("Verloren"), folder="Aanvragen", flags=[KEYWORD])
    new = client.select_folder("Aanvragen", readonly=True)[b"UIDVALIDITY"]
    client.logout()
    assert new != old

    result = reconcile(app)
    [folder] = result.folders
    assert folder.stored_uidvalidities == (old,) and folder.matched == 2
    assert folder.content_fetched == 2, "Een and Twee by content; no stored mail has the size of Verloren"
    assert [f.uid for f in folder.marked_not_stored] == [uid_of(imap_user, "Verloren", "Aanvragen")]
    assert f"the server's UIDVALIDITY is {new}, kcc-mail stored under {old}" in result.summary()


def test_mails_moved_to_the_processed_folder_are_matched_there(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    app = app_for(engine, database_url, tmp_path,
                  imap_user.mailbox_config(name=imap_user.name, processed_folder="Verwerkt"))
    for subject in ("Een", "Twee"):
        imap_user.append(mail(subject))
    poll_once(app, app.config.mailboxes)
    imap_user.append(mail("Ongevraagd verplaatst"), folder="Verwerkt")

    result = reconcile(app)
    inbox, processed = result.folders
    assert (inbox.on_server, processed.folder, processed.matched) == (0, "Verwerkt", 2)
    assert [f.uid for f in processed.marked_not_stored] == [uid_of(imap_user, "Ongevraagd verplaatst", "Verwerkt")]
    assert processed.content_fetched == 2, "moved mails have new UIDs: only their content matches them"
    again = reconcile(app).folders[1]
    assert (again.matched, len(again.marked_not_stored), again.content_fetched) == (2, 1, 0), \
        "a UID's content is fetched once, then remembered"
    with app.uow() as uow:
        assert len(list(uow.session.scalars(select(InboundMail.id).where(InboundMail.mailbox == imap_user.name)))) == 2


def test_a_mail_purged_by_retention_while_the_server_keeps_it_is_no_loss(
    engine: Engine, database_url: str, tmp_path: Path, imap_user: ImapUser,
) -> None:
    from datetime import timedelta

    from kcc.records.actor import parse_actor
    from kcc.usecases.purge import purge
    from kcc.usecases.review import dismiss
    from store.types import utcnow

    app = app_for(engine, database_url, tmp_path, imap_user.mailbox_config(name=imap_user.name))
    imap_user.append(mail("Spam"))
    poll_once(app, app.config.mailboxes)
    with app.uow() as uow:
        [mail_id] = uow.session.scalars(select(InboundMail.id).where(InboundMail.mailbox == imap_user.name))
    dismiss(app.uow(), mail_id, "spam", parse_actor("medewerker:anna@gemeente.nl"))
    # INTERNALDATE has whole seconds; the cut-off is a second on. Purge is for every mailbox: keep this test last.
    purge(app.uow(), state="afgewezen", older_than_days=0, now=utcnow() + timedelta(seconds=1))

    result = reconcile(app)
    [inbox] = result.folders
    assert (result.lost, inbox.purged) == (0, 1)
    assert ", 1 purged by retention" in result.summary()
