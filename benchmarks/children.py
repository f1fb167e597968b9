"""Measuring one child process as cron or systemd would start it: its wall time and its own peak memory.

Linux keeps a process's peak resident set across exec, and a child forked from a benchmark starts as a copy of
it: measured directly, its ru_maxrss is at least the benchmark's own peak (with all the test mails it holds). A
small launcher process starts the command instead and reports the command's ru_maxrss, which then begins at the
launcher's few MB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_pid, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def child_environment(environment: dict[str, str] | None = None) -> dict[str, str]:
    """`environment` (default: this one) with bytecode caching allowed, as an installed package has its .pyc."""
    return {k: v for k, v in (environment or dict(os.environ)).items() if k != "PYTHONDONTWRITEBYTECODE"}


def measured(command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None
             ) -> tuple[str, float, float]:
    """Run `command` through the launcher; its output, wall seconds (the launcher's start included, a few tens
    of ms) and peak RSS in MB. A command that fails is an error, not a figure."""
    with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as report:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", LAUNCHER, report.name, *command], cwd=cwd,
                                env=env if env is not None else child_environment(), capture_output=True, text=True)
        seconds = time.perf_counter() - started
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {output}")
        return result.stdout.strip(), seconds, int(report.read()) / 1024
