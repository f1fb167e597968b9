"""Start time of `kcc-mail`, against the floors under it, measured in fresh processes as cron starts them.

    python benchmarks/startup.py [--runs 7] [--imap]

Each round runs every command once, one after the other, so a noisy moment on a shared machine hits all of them;
the median over the rounds is reported, with the fastest run beside it. Measured:
(a) `python -c pass`: the interpreter alone;
(b) `python -c "import sqlalchemy.orm"`: the floor of any command that touches the database;
(c) `kcc-mail --help`;
(d) `kcc-mail poll --once` on an empty Maildir mailbox with a SQLite database, on the built-in defaults (a
    working directory with nothing but what `kcc-mail init` made);
(e) with --imap, `kcc-mail poll --once` on an empty folder of a private Dovecot (tests/support/dovecot.py).
Children run with bytecode caching allowed (PYTHONDONTWRITEBYTECODE removed), as an installed package has its .pyc
files; a first run of each command writes them and is not counted. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from e2e.kcc_cli import write_config  # noqa: E402
from support.dovecot import PrivateDovecot  # noqa: E402

from benchmarks import children  # noqa: E402


def child_environment() -> dict[str, str]:
    """The caller's environment without KCC_ settings (the defaults are measured) and with bytecode caching."""
    return children.child_environment({k: v for k, v in os.environ.items() if not k.startswith("KCC_")})


def run_seconds(command: Sequence[str], cwd: Path) -> float:
    """Wall time of one fresh process; a command that fails is an error, not a fast figure."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=child_environment(), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - started


def measure(commands: dict[str, tuple[Sequence[str], Path]], runs: int) -> dict[str, dict[str, float]]:
    """Median and fastest wall time of each command over `runs` rounds, after one uncounted warm-up run each."""
    for command, cwd in commands.values():
        run_seconds(command, cwd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, cwd) in commands.items():
            times[name].append(run_seconds(command, cwd))
    return {name: {"median_ms": round(statistics.median(t) * 1000), "min_ms": round(min(t) * 1000)}
            for name, t in times.items()}


def kcc_mail(*args: str) -> list[str]:
    return [sys.executable, "-m", "kcc", *args]


def maildir_defaults(directory: Path) -> Path:
    """A working directory on the built-in defaults (SQLite in var/, Maildir var/mail/info), initialised."""
    directory.mkdir()
    subprocess.run(kcc_mail("init"), cwd=directory, env=child_environment(), check=True, capture_output=True)
    subprocess.run(kcc_mail("poll", "--once"), cwd=directory, env=child_environment(), check=True,
                   capture_output=True)  # the first poll creates the mailbox's state row
    return directory


def imap_directory(directory: Path, dovecot: PrivateDovecot) -> Path:
    """A working directory whose kcc-mail.toml points at an empty folder of `dovecot`, initialised."""
    directory.mkdir()
    user = dovecot.new_user("leeg")
    write_config(directory, f"sqlite:///{directory / 'kcc-mail.db'}", imap=user)
    for args in (("init",), ("poll", "--once")):
        subprocess.run(kcc_mail(*args), cwd=directory, env=child_environment(), check=True, capture_output=True)
    return directory


def startup_commands(tmp: Path) -> dict[str, tuple[Sequence[str], Path]]:
    defaults = maildir_defaults(tmp / "defaults")
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], tmp),
        "import sqlalchemy.orm": ([sys.executable, "-c", "import sqlalchemy.orm"], tmp),
        "kcc-mail --help": (kcc_mail("--help"), defaults),
        "poll --once, empty Maildir, SQLite": (kcc_mail("poll", "--once"), defaults),
    }


def report(results: dict[str, dict[str, float]], runs: int) -> None:
    for name, figures in results.items():
        print(f"{name:45s} median {figures['median_ms']:5.0f} ms  (fastest {figures['min_ms']:4.0f} ms, "
              f"{runs} runs; target for kcc-mail < 300 ms)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--imap", action="store_true", help="also poll an empty folder of a private Dovecot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        commands = startup_commands(Path(tmp))
        if args.imap:
            with PrivateDovecot() as dovecot:
                imap = imap_directory(Path(tmp) / "imap", dovecot)
                commands["poll --once, empty IMAP folder, SQLite"] = (kcc_mail("poll", "--once"), imap)
                results = measure(commands, args.runs)
        else:
            results = measure(commands, args.runs)
    report(results, args.runs)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
