"""What the suites need from outside the repository, and the one rule for when it is missing.

A missing peer or corpus skips a test on a developer's laptop, but under KCC_REQUIRE_ALL=1 (CI) it fails: an
integration test that did not run proves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("KCC_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (KCC_REQUIRE_ALL=1: every suite must run)")
    pytest.skip(reason)


def corpus_file(relative: str) -> Path:
    """A file of the shared real-world mail corpus (../shared/corpus beside the repository)."""
    path = CORPUS / relative
    if not path.exists():
        unavailable(f"the shared corpus is not at {CORPUS} (expected beside the repository)")
    return path
