"""Run the `kcc-mail` command as a user would: a separate process, in a working directory of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def kcc_mail(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kcc-mail ARGS` with the environment cleared of KCC_ variables except those given."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KCC_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kcc", *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
