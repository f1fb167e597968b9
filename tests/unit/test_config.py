"""The configuration refuses what an administrator could get wrong, naming the key and the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kcc.config import ConfigError, load_config
from kcc.secrets import resolve_secret

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kcc-mail.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_configuration_is_valid_and_documents_the_imap_mailbox() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.database.url == "sqlite:///var/kcc-mail.db"
    assert config.storage.max_mail_bytes == 52428800
    (mailbox,) = config.mailboxes
    assert (mailbox.name, mailbox.kind, mailbox.host, mailbox.security) == ("info", "imap", "imap.example.nl", "tls")
    assert mailbox.password_env == "KCC_MAILBOX_INFO_PASSWORD"
    assert config.smtp.kind == "smtp" and config.smtp.port == 587


def test_the_example_documents_every_key_with_a_comment() -> None:
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()
    keys = [i for i, line in enumerate(text) if line and not line.startswith(("#", "[")) and "=" in line]
    undocumented = [text[i] for i in keys if not text[i - 1].startswith("#") and "=" not in text[i - 1]]
    assert undocumented == []


def test_without_a_file_the_laptop_defaults_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.source == "built-in defaults"
    assert config.database.url == "sqlite:///var/kcc-mail.db"
    assert [(m.name, m.kind, m.path) for m in config.mailboxes] == [("info", "maildir", "var/mail/info")]
    assert (config.smtp.kind, config.smtp.directory) == ("directory", "var/outgoing")


def test_kcc_mail_toml_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[organisatie]\nnaam = "Gemeente Wittewiek"\n')
    assert load_config(None, environ={}).organisatie.naam == "Gemeente Wittewiek"


def test_an_unknown_key_is_named_with_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[storage]\nmax_mail_byte = 10\n")
    with pytest.raises(ConfigError, match=r"kcc-mail.toml: unknown key storage.max_mail_byte"):
        load_config(path, environ={})


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section or key 'smpt'"):
        load_config(write(tmp_path, "[smpt]\nhost = 'x'\n"), environ={})


def test_a_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage.max_mail_bytes must be int, not str"):
        load_config(write(tmp_path, '[storage]\nmax_mail_bytes = "25MB"\n'), environ={})
    with pytest.raises(ConfigError, match=r"organisatie.vertrouwelijk must be bool"):
        load_config(write(tmp_path, "[organisatie]\nvertrouwelijk = 1\n"), environ={})


def test_a_value_outside_its_choices_lists_them(tmp_path: Path) -> None:
    text = '[[mailbox]]\nname = "info"\nkind = "pop3"\n'
    with pytest.raises(ConfigError, match=r"mailbox\[0\].kind is 'pop3'; it must be one of imap \| maildir"):
        load_config(write(tmp_path, text), environ={})


def test_an_inline_password_is_refused_with_the_alternative(tmp_path: Path) -> None:
    text = '[smtp]\nkind = "smtp"\nhost = "smtp.gemeente.nl"\npassword = "geheim"\n'
    with pytest.raises(ConfigError, match="smtp.password holds a secret inline.*password_env or password_file") as e:
        load_config(write(tmp_path, text), environ={})
    assert "geheim" not in str(e.value)


def test_plain_text_to_a_remote_server_is_refused(tmp_path: Path) -> None:
    text = '[[mailbox]]\nname = "info"\nkind = "imap"\nhost = "imap.gemeente.nl"\nsecurity = "none"\n'
    with pytest.raises(ConfigError, match="only allowed to a loopback host"):
        load_config(write(tmp_path, text), environ={})
    local = text.replace("imap.gemeente.nl", "127.0.0.1")
    assert load_config(write(tmp_path, local), environ={}).mailboxes[0].security == "none"


def test_two_mailboxes_with_one_name_are_refused(tmp_path: Path) -> None:
    text = '[[mailbox]]\nname = "info"\n[[mailbox]]\nname = "info"\n'
    with pytest.raises(ConfigError, match="two \\[\\[mailbox\\]\\] tables are named 'info'"):
        load_config(write(tmp_path, text), environ={})


def test_invalid_toml_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[database\n"), environ={})


def test_kcc_database_url_overrides_the_file() -> None:
    config = load_config(EXAMPLE, environ={"KCC_DATABASE_URL": "postgresql+psycopg://kcc@db/kcc"})
    assert config.database.url == "postgresql+psycopg://kcc@db/kcc"


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert resolve_secret("KCC_PW", "", "mailbox info", {"KCC_PW": "s3cret"}) == "s3cret"
    secret_file = tmp_path / "pw"
    secret_file.write_text("uit-bestand\n")
    assert resolve_secret("", str(secret_file), "mailbox info", {}) == "uit-bestand"
    with pytest.raises(ConfigError, match="environment variable KCC_PW is not set"):
        resolve_secret("KCC_PW", "", "mailbox info", {})


def test_a_secret_pasted_into_password_env_is_never_printed(tmp_path: Path) -> None:
    from kcc.bootstrap import smtp_settings

    text = ('[smtp]\nkind = "smtp"\nhost = "smtp.gemeente.nl"\nusername = "kcc"\n'
            'password_env = "MyRealPassw0rd!"\n')
    config = load_config(write(tmp_path, text), environ={})
    settings = smtp_settings(config.smtp, environ={})
    assert settings.secret is not None
    with pytest.raises(ConfigError) as refused:
        settings.secret()
    assert "MyRealPassw0rd" not in str(refused.value) and "password_env must name an environment variable" in str(
        refused.value)


@pytest.mark.parametrize("text", ['[smtp]\npassword_file = 73194207\n', '[smtp]\ntoken_env = ["MyRealPassw0rd!"]\n'])
def test_a_wrong_type_of_a_secret_key_is_refused_without_its_value(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be str") as refused:
        load_config(write(tmp_path, text), environ={})
    assert "MyRealPassw0rd" not in str(refused.value) and "73194207" not in str(refused.value)


def test_a_password_in_the_database_url_is_refused_with_the_alternatives(tmp_path: Path) -> None:
    text = '[database]\nurl = "postgresql+psycopg://kcc:Geheim-DB-1@db.gemeente.nl/kcc"\n'
    with pytest.raises(ConfigError, match="KCC_DATABASE_URL.*database.password_file") as refused:
        load_config(write(tmp_path, text), environ={})
    assert "Geheim-DB-1" not in str(refused.value)
    secret = tmp_path / "db-wachtwoord"
    secret.write_text("Geheim-DB-1\n")
    config = load_config(write(tmp_path, f'[database]\nurl = "postgresql+psycopg://kcc@db.gemeente.nl/kcc"\n'
                                          f'password_file = "{secret}"\n'), environ={})
    assert config.database.url_with_password() == "postgresql+psycopg://kcc:Geheim-DB-1@db.gemeente.nl/kcc"


@pytest.mark.parametrize(("text", "message"), [
    ('[smtp]\nfrom_address = "info@gemeente.nl\\r\\nBcc: kwaad@example.org"\n', "smtp.from_address"),
    ('[smtp]\nfrom_address = "Gemeente <info@gemeente.nl>"\n', "one plain e-mail address"),
    ('[replies]\nlease_seconds = -1\n', "replies.lease_seconds must be more than 0"),
    ('[storage]\nmax_mail_bytes = 0\n', "storage.max_mail_bytes must be more than 0"),
    ('[smtp]\ndata_timeout = -5\n', "smtp.data_timeout must be more than 0"),
    ('[smtp]\nkind = "smtp"\nhost = "localhost"\ndata_timeout = 900\n',
     r"replies.lease_seconds \(900\) must be more than smtp.timeout \+ smtp.data_timeout \(960\)"),
])
def test_values_that_cannot_work_are_refused_at_start(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_group_commit_defaults_and_limits(tmp_path: Path) -> None:
    mailbox = load_config(write(tmp_path, '[[mailbox]]\nname = "info"\n'), environ={}).mailboxes[0]
    assert (mailbox.commit_group_mails, mailbox.commit_group_ms) == (50, 200.0)
    example = load_config(EXAMPLE, environ={}).mailboxes[0]
    assert (example.commit_group_mails, example.commit_group_ms) == (50, 200.0)
    for key in ("commit_group_mails", "commit_group_ms"):
        with pytest.raises(ConfigError, match=f"mailbox info.{key} must be more than 0"):
            load_config(write(tmp_path, f'[[mailbox]]\nname = "info"\n{key} = 0\n'), environ={})


def test_a_configuration_file_that_is_not_utf8_or_is_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    latin = tmp_path / "kcc-mail.toml"
    latin.write_bytes('[organisatie]\nnaam = "Gemeente Súdwest-Fryslân"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(latin, environ={})
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, environ={})


def test_the_example_signs_in_through_oidc_with_groups_as_roles() -> None:
    web = load_config(EXAMPLE, environ={}).web
    assert (web.auth, web.listen, web.public_url) == ("oidc", "127.0.0.1:8000", "https://kcc-mail.gemeente.nl")
    assert (web.oidc.roles_claim, web.oidc.role_kcc, web.oidc.afdeling_prefix) == ("groups", "kcc-medewerkers",
                                                                                  "afdeling-")
    assert web.base_url == "https://kcc-mail.gemeente.nl"


@pytest.mark.parametrize(("web", "refused"), [
    ('listen = "0.0.0.0:8000"', 'only allowed on a loopback address, not on 0.0.0.0'),
    ('listen = "192.0.2.10:8000"\nauth = "dev"', "not on 192.0.2.10"),
    ('auth = "oidc"\nsession_secret_env = "S"\n[web.oidc]\nclient_id = "kcc"', "needs web.oidc.issuer"),
    ('auth = "oidc"\nsession_secret_env = "S"\n[web.oidc]\nissuer = "http://idp.gemeente.nl"\nclient_id = "kcc"',
     "must be an https:// address"),
    ('auth = "oidc"\n[web.oidc]\nissuer = "https://idp.gemeente.nl"\nclient_id = "kcc"', "needs a session secret"),
    ('listen = "8000"', "must be HOST:PORT"),
    ('timezone = "Europe/Utrecht"', "is not a time zone"),
])
def test_a_web_screen_that_would_let_anyone_in_or_cannot_work_is_refused(
    tmp_path: Path, web: str, refused: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(refused)):
        load_config(write(tmp_path, f"[web]\n{web}\n"), environ={})


def test_the_development_sign_in_is_allowed_on_loopback_and_an_idp_on_loopback_may_be_plain_http(
    tmp_path: Path
) -> None:
    assert load_config(write(tmp_path, '[web]\nlisten = "[::1]:8080"\n'), environ={}).web.port == 8080
    oidc = ('[web]\nlisten = "0.0.0.0:8000"\nauth = "oidc"\nsession_secret_env = "S"\n'
            '[web.oidc]\nissuer = "http://localhost:9000"\nclient_id = "kcc"\n')
    assert load_config(write(tmp_path, oidc), environ={}).web.oidc.issuer == "http://localhost:9000"


def lmtp_table(**keys: object) -> str:
    values = {"name": "lmtp", "kind": "lmtp", "recipients": ["info@gemeente.nl"], **keys}
    lines = [f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false")
             for key, value in values.items()]
    return "[[mailbox]]\n" + "\n".join(lines) + "\n"


def test_the_example_lmtp_mailbox_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").split("\n[smtp]")[0]
    block = text[text.index("# [[mailbox]]"):].splitlines()
    lines = [line[2:] for line in block if line.startswith("# ") and not line.startswith("# # ")]
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"), environ={})
    (mailbox,) = config.mailboxes
    assert (mailbox.kind, mailbox.listen, mailbox.recipients) == ("lmtp", "127.0.0.1:2424", ("info@gemeente.nl",))
    assert (mailbox.socket_mode, mailbox.max_message_bytes, mailbox.allow_remote) == (0o660, 100 * 1024 * 1024, False)


@pytest.mark.parametrize(("table", "message"), [
    (lmtp_table(listen="0.0.0.0:2424"), "would accept mail over LMTP from other machines on 0.0.0.0"),
    (lmtp_table(listen="2424"), "listen '2424' must be HOST:PORT"),
    (lmtp_table(listen="unix:relative.sock"), "or unix:/absolute/path.sock"),
    (lmtp_table(recipients=[]), "lists no recipients"),
    (lmtp_table(recipients=["Info <info@gemeente.nl>"]), "is not one plain address"),
    (lmtp_table(max_recipients=0), "mailbox lmtp.max_recipients must be more than 0"),
    (lmtp_table(socket_mode=0o7777), "socket_mode must be file permissions"),
    (lmtp_table() + lmtp_table(name="wmo", listen="127.0.0.1:2525", recipients=["INFO@gemeente.nl"]),
     "INFO@gemeente.nl is a recipient of both mailbox lmtp and wmo"),
    (lmtp_table() + lmtp_table(name="wmo", recipients=["wmo@gemeente.nl"]),
     "mailboxes lmtp and wmo both listen on 127.0.0.1:2424"),
])
def test_an_lmtp_mailbox_that_cannot_work_or_listens_to_the_network_unasked_is_refused(
    tmp_path: Path, table: str, message: str,
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, table), environ={})


def test_a_remote_lmtp_address_is_allowed_when_asked_for(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, lmtp_table(listen="[::]:2424", allow_remote=True)), environ={})
    assert config.mailboxes[0].listen == "[::]:2424"
