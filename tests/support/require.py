"""What the suites need from outside the repository, and the one rule for when it is missing.

A missing peer (Dovecot, PostgreSQL) skips a test on a developer's laptop, but under KCC_REQUIRE_ALL=1 (CI) it
fails: an integration test that did not run proves nothing.

The shared mail corpus is different: it is not part of the repository, so a fresh clone has none. Its folder comes
from KCC_TEST_CORPUS (default ../shared/corpus beside the checkout). Tests that read it are marked `corpus` (or use
the `corpus` fixture); when the folder is absent they are not run, and the run says so in one line
(tests/conftest.py), whatever KCC_REQUIRE_ALL says. When it is present, they run and a skip fails as any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("KCC_TEST_CORPUS") or ROOT.parent / "shared" / "corpus")
SPECS = Path(os.environ.get("KCC_TEST_SPECS") or ROOT.parent / "shared" / "specs")
"""The OpenAPI files of Open Klant and Open Zaak the register test servers validate against; like the corpus, not
part of the repository: tests marked `specs` are left out (and counted in one line) when the folder is absent."""


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("KCC_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (KCC_REQUIRE_ALL=1: every suite must run)")
    pytest.skip(reason)


def corpus_file(relative: str) -> Path:
    """A file of the shared real-world mail corpus; its test must be marked `corpus`."""
    path = CORPUS / relative
    if not path.exists():
        unavailable(f"{relative} is not in the shared corpus at {CORPUS} (KCC_TEST_CORPUS)")
    return path
