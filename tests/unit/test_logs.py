"""Log lines carry ids, come as text or JSON, and never show a secret kcc-mail has read."""

from __future__ import annotations

import json
import logging

import pytest

from kcc.logs import configure_logging
from kcc.secrets import resolve_secret


def test_a_secret_that_was_read_is_masked_in_every_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    secret = resolve_secret("KCC_TEST_PW", "", "test", {"KCC_TEST_PW": "Geheim-Wachtwoord-42"})
    configure_logging("DEBUG", "text")
    logging.getLogger("some.library").debug("> b'LOGIN info %s'", secret)  # any library, any level
    logging.getLogger("kcc").warning("login failed for %s with Geheim-Wachtwoord-42", "info")
    err = capsys.readouterr().err
    assert "Geheim-Wachtwoord-42" not in err
    assert err.count("***") == 2


def test_json_lines_carry_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("ingest.poller").info("stored", extra={"mailbox": "info", "mail": 12})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "ingest.poller", "stored")
    assert (line["mailbox"], line["mail"]) == ("info", 12)
    assert line["time"].endswith("+00:00")


def test_a_failure_is_one_error_line_with_the_traceback_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy.exc import OperationalError

    from kcc.logs import log_failure

    error = OperationalError("INSERT INTO inbound_mail …", {"subject": "Mijn geheime vraag"}, Exception("gone"))
    configure_logging("INFO", "text")
    log_failure(logging.getLogger("kcc.service"), "writing failed", error)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "writing failed: OperationalError (Exception: gone)" in lines[0]
    assert "Mijn geheime vraag" not in lines[0]
