"""The export's pure rules: what goes into a request body, how numbers and addresses are made acceptable to Open
Klant, the backoff, and the [openklant]/[export] configuration checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kcc.config import ConfigError, load_config
from kcc.usecases.export import backoff
from kcc.usecases.export_bodies import (
    UNCHECKED_EMAIL,
    ExportRefused,
    Remote,
    digest,
    digitaal_adres_body,
    interne_taak_body,
    klantcontact_body,
    patch_of,
    remote_referentienummer,
)

BETROKKENE = Remote("7d7bd6c2-7d4d-4a52-9d2b-0b6f3c1c2d11", "https://ok.example/betrokkenen/7d7b")
KLANTCONTACT = Remote("0a4b4f0e-2a0c-4a49-9f41-6f1f1f0c9a01", "https://ok.example/klantcontacten/0a4b")


def test_the_referentienummer_goes_out_with_the_prefix_and_never_cut() -> None:
    assert remote_referentienummer("0000000042", "KM") == "KM00000042"
    assert remote_referentienummer("0000000042", "KCCM") == "KCCM000042"
    assert len(remote_referentienummer("0012345678", "KM")) == 10
    with pytest.raises(ExportRefused, match="does not fit in 8 digits"):
        remote_referentienummer("0123456789", "KM")


@pytest.mark.parametrize(("adres", "soort"), [
    ("karel@example.nl", "email"), ("k.de.vries+kcc@sub.example.nl", "email"),
    ("a@b.c", "overig"), ('"jan jansen"@example.nl', "overig"), ("bea@localhost", "overig"),
])
def test_an_address_open_klant_would_refuse_as_email_goes_as_overig(adres: str, soort: str) -> None:
    body = digitaal_adres_body({"soort_digitaal_adres": "email", "adres": adres, "omschrijving": ""}, BETROKKENE)
    assert (body["soortDigitaalAdres"], body["adres"]) == (soort, adres)
    assert body["verstrektDoorPartij"] is None, "the key is required by the server, null when there is no partij"
    assert body["omschrijving"] == (UNCHECKED_EMAIL if soort == "overig" else "")


def test_a_rerouted_task_names_the_task_it_replaces_within_1000_characters() -> None:
    taak = {"gevraagde_handeling": "Terugbellen", "toelichting": "x" * 1000, "status": "te_verwerken",
            "afgehandeld_op": None}
    vorige = Remote("5e7f0c36-55d2-4c39-8d9d-3a1f2d6e7b44", "https://ok.example/internetaken/5e7f")
    body = interne_taak_body(taak, KLANTCONTACT, [], vorige)
    assert len(body["toelichting"]) == 1000
    assert body["toelichting"].endswith(f"… [Vervangt interne taak {vorige.uuid}]")
    assert "toegewezenOp" not in body, "read-only in Open Klant"


def test_only_what_may_change_is_patched_and_an_unchanged_body_has_the_same_digest() -> None:
    contact = {"referentienummer": "0000000007", "kanaal": "e-mail", "onderwerp": "Vraag", "inhoud": "",
               "indicatie_contact_gelukt": None, "taal": "nld", "vertrouwelijk": False,
               "plaatsgevonden_op": datetime(2026, 11, 23, 8, 15, tzinfo=UTC)}
    body = klantcontact_body(contact, "KM")
    assert body["plaatsgevondenOp"] == "2026-11-23T08:15:00Z"
    assert "referentienummer" not in patch_of("klantcontact", body)
    assert patch_of("betrokkene", {"rol": "klant"}) == {}
    assert digest(body) == digest(dict(reversed(list(body.items()))))
    assert digest(body) != digest(klantcontact_body({**contact, "indicatie_contact_gelukt": True}, "KM"))


def test_backoff_doubles_up_to_its_maximum() -> None:
    assert [backoff(n, 3600).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff(20, 3600) == timedelta(hours=1)


OPEN = "[openklant]\nenabled = true\nurl = 'https://ok.gemeente.nl/k'\ntoken_env = 'T'\n"
DRC = ("[documenten]\nurl = 'https://oz.gemeente.nl/d'\nclient_id = 'kcc-mail'\nsecret_env = 'S'\n"
       "bronorganisatie = '002220647'\ninformatieobjecttype = 'https://oz/c/iot/1'\n")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kcc-mail.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("[openklant]\nenabled = true\nurl = 'http://openklant.gemeente.nl/api'\ntoken_env = 'T'\n", "https://"),
    ("[openklant]\nenabled = true\nurl = 'https://openklant.gemeente.nl/api'\n", "openklant.token_env"),
    ("[openklant]\nreferentienummer_prefix = '12'\n", "1 to 4 letters"),
    ("[openklant]\ntoken = 'geheim-token'\n", "holds a secret inline"),
    ("[export]\nlease_seconds = 60.0\n", "4 × openklant.timeout"),
    ("[export]\nbatch_size = 0\n", "export.batch_size must be more than 0"),
    ("[documenten]\nurl = 'https://oz.gemeente.nl/documenten/api/v1'\n", "switch on \\[openklant\\] too"),
    (OPEN + "[documenten]\nurl = 'https://oz.gemeente.nl/d'\nclient_id = 'kcc-mail'\nsecret_env = 'S'\n"
     "bronorganisatie = '1234'\ninformatieobjecttype = 'https://oz/c/iot/1'\n", "RSIN, 9 digits"),
    (OPEN + "[documenten]\nurl = 'https://oz.gemeente.nl/d'\nclient_id = 'kcc-mail'\n", "documenten.secret_env"),
    (OPEN + "[documenten]\nsecret = 'geheim-token'\n", "holds a secret inline"),
    (OPEN + DRC + "inline_max_bytes = -1\n", "inline_max_bytes must be a number of bytes from 0 to 67108864"),
    (OPEN + DRC + "inline_max_bytes = 100000000\n", "inline_max_bytes must be a number of bytes from 0 to 67108864"),
    (OPEN + DRC + "inline_max_bytes = '4 MiB'\n", "documenten.inline_max_bytes"),
    (OPEN + DRC + "inline_max_bytes = 4.5\n", "documenten.inline_max_bytes"),
])
def test_an_export_that_cannot_work_is_refused_at_start(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(write(tmp_path, text), environ={})
    assert "geheim-token" not in str(refused.value)


def test_documents_go_inline_up_to_4_mib_unless_configured(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, OPEN + DRC), environ={}).documenten.inline_max_bytes == 4 * 1024 * 1024
    config = load_config(write(tmp_path, OPEN + DRC + "inline_max_bytes = 0\n"), environ={})
    assert config.documenten.inline_max_bytes == 0, "0: every document with bytes goes through bestandsdelen"


def test_the_export_on_a_loopback_register_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[openklant]\nenabled = true\nurl = 'http://127.0.0.1:8001/api'\n"
                                         "token_file = '/run/secrets/openklant'\n"), environ={})
    assert config.openklant.enabled and config.openklant.referentienummer_prefix == "KM"


def test_differences_compare_references_by_uuid_and_times_as_moments() -> None:
    from kcc.usecases.export_bodies import differences

    sent = {"hadKlantcontact": {"uuid": "a"}, "plaatsgevondenOp": "2026-11-23T08:15:00Z", "rol": "klant",
            "toegewezenAanActoren": [{"uuid": "x"}, {"uuid": "y"}], "inhoud": "bytes"}
    found = {"hadKlantcontact": {"uuid": "a", "url": "https://ok/klantcontacten/a"}, "rol": "klant",
             "plaatsgevondenOp": "2026-11-23T09:15:00+01:00", "toegewezenAanActoren": [{"uuid": "y"}, {"uuid": "x"}],
             "inhoud": "https://drc/download"}
    assert differences("betrokkene 1", sent, found) == []
    assert differences("betrokkene 1", {**sent, "rol": "vertegenwoordiger"}, found) == [
        'betrokkene 1: rol is "klant" in the register, "vertegenwoordiger" here']
