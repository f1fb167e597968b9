"""Reprocess speed: the process pool against a single-process loop over the same mails, in the same run.

    python benchmarks/reprocess.py [--mails 5000] [--workers N] [--slices 10]

A temporary SQLite database gets `--mails` stored mails (the corpus cycled, each copy made distinct by one extra
header), all quarantined by a simulated parser bug, spread over `--slices` mailboxes; it is then copied, so both
contenders start from the same rows. Two scenarios:

(a) release: the parser is fixed, every mail parses and leaves quarantine (one write transaction per mail);
(b) refresh: run again, every mail comes out unchanged (parse and compare only, no writes).

Each contender is a process of its own (so its peak memory is its own) that reprocesses one mailbox (slice) at a
time when told; the two take turns slice by slice, alternating who goes first, so a busy moment on a shared
machine hits both alike. Printed per scenario: mails/s of each, the ratio pool/single (target ≥ 1.6 on 2 cores),
the median of the per-slice ratios, and the peak resident memory of each main process (getrusage) and of the
largest pool worker (VmHWM, sampled from /proc); target < 300 MB. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from ingest.analysis import (  # noqa: E402
    AnalyseSettings,
    ClassifyOptions,
    analyse,
)
from ingest.parse import ParsedMail  # noqa: E402
from ingest.sources.base import FetchedMail, MailRef  # noqa: E402
from ingest.sources.files import looks_like_mail  # noqa: E402
from ingest.workers import default_workers  # noqa: E402
from kcc.bootstrap import App, build_app  # noqa: E402
from kcc.config import Config, DatabaseConfig  # noqa: E402
from kcc.usecases.intake import store_mail  # noqa: E402
from kcc.usecases.reprocess import Selection, reprocess  # noqa: E402
from store.schema import upgrade  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
RECEIVED = datetime(2026, 11, 23, 8, 15, tzinfo=UTC)
MAX_MAIL_BYTES = 50 * 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


def parser_with_a_bug(raw: bytes, received_at: datetime) -> ParsedMail:
    raise KeyError("boundary")


def corpus_mails(count: int) -> Iterator[bytes]:
    """`count` distinct mails, one at a time: the corpus's mails cycled, each copy made unique by one header."""
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and "_meta" not in p.parts)
    sources = [data for data in (p.read_bytes() for p in files) if looks_like_mail(data[:4096])]
    for number in range(count):
        yield b"X-Bench-Seq: %d\r\n" % number + sources[number % len(sources)]


def app_on(path: Path) -> App:
    return build_app(Config(database=DatabaseConfig(url=f"sqlite:///{path}")))


def slice_name(number: int) -> str:
    return f"slice-{number:03}"


def fill(path: Path, count: int, slices: int) -> None:
    """Store the mails as intake would, all quarantined by the parser bug (so storing costs no parsing)."""
    app = app_on(path)
    upgrade(app.engine)
    for number, raw in enumerate(corpus_mails(count)):
        analysis = analyse(raw, RECEIVED, max_mail_bytes=MAX_MAIL_BYTES, options=ClassifyOptions(),
                           parser=parser_with_a_bug)
        fetched = FetchedMail(ref=MailRef(uid=None, key=str(number), size=len(raw)), raw=raw, internaldate=RECEIVED)
        store_mail(app.uow(), slice_name(number % slices), fetched, None, analysis)
    app.close()  # the last connection closed checkpoints the write-ahead log into the file, so it can be copied


# ----------------------------------------------------------------------------------------- one contender


class TreeWatch:
    """This process's descendants (the pool): their largest peak resident set (VmHWM) and the CPU seconds they
    used, sampled from /proc (a worker's last tenth of a second may be missed)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_kb = 0
        self.cpu: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def restart(self) -> None:
        """Count CPU from now on (the forkserver lives on from one run to the next)."""
        self._base = {pid: cpu_seconds(pid) for pid in descendants(os.getpid())}
        self.cpu = dict(self._base)

    def used(self) -> float:
        return sum(seconds - self._base.get(pid, 0.0) for pid, seconds in self.cpu.items())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in descendants(os.getpid()):
                self.peak_kb = max(self.peak_kb, high_water_kb(pid))
                self.cpu[pid] = cpu_seconds(pid)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all programs on the machine used so far (every core)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_bytes().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: list[int] = []
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier}
        found += children
        frontier = children
    return found


def high_water_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def serve_contender(database: str, workers: int) -> None:
    """Reprocess one slice for each line on stdin; answer with a JSON line; report peaks at end of input."""
    app = app_on(Path(database))
    settings = AnalyseSettings(MAX_MAIL_BYTES, ClassifyOptions())
    with TreeWatch() as tree:
        for line in sys.stdin:
            tree.restart()
            started, own = time.perf_counter(), time.process_time()
            summary = reprocess(app.uow, Selection(states=None, mailbox=line.strip()), settings, workers=workers)
            seconds = time.perf_counter() - started
            main_cpu = time.process_time() - own
            cpu = main_cpu + tree.used()
            print(json.dumps({"seconds": seconds, "cpu": cpu, "main_cpu": main_cpu, "summary": summary.as_json()}),
                  flush=True)
    app.close()
    peaks = {"main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "worker_mb": tree.peak_kb / 1024}
    print(json.dumps(peaks), flush=True)


class Contender:
    """A contender process, driven one slice at a time."""

    def __init__(self, database: Path, workers: int) -> None:
        self.workers = workers
        # Started with -c, as `python -m kcc` starts: pool workers then have no main script to import again
        # (CPython 3.11's forkserver ignores a "__main__" preload, so each worker would import this file).
        code = f"from benchmarks.reprocess import serve_contender; serve_contender({str(database)!r}, {workers})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.seconds: list[float] = []
        self.others: list[float] = []  # CPU seconds other programs used while this contender ran
        self.cpu: list[float] = []
        self.main_cpu: list[float] = []
        self.selected: list[int] = []
        self.totals: dict[str, int] = {}

    def run(self, mailbox: str) -> float:
        stdin, stdout = self._pipes()
        busy = machine_busy_seconds()
        stdin.write(mailbox + "\n")
        stdin.flush()
        result = json.loads(stdout.readline())
        self.others.append(max(0.0, machine_busy_seconds() - busy - result["cpu"]))
        self.seconds.append(result["seconds"])
        self.cpu.append(result["cpu"])
        self.main_cpu.append(result["main_cpu"])
        self.selected.append(result["summary"]["selected"])
        for key, value in result["summary"].items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.totals[key] = self.totals.get(key, 0) + value
        return float(result["seconds"])

    def line(self) -> str:
        keys = ("selected", "reparsed", "released", "still_quarantined", "unchanged", "errors")
        return " ".join(f"{key}={self.totals.get(key, 0)}" for key in keys)

    def finish(self) -> dict[str, float]:
        stdin, stdout = self._pipes()
        stdin.close()
        peaks: dict[str, float] = json.loads(stdout.readline())
        self.process.wait(timeout=60)
        return peaks

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout


# ----------------------------------------------------------------------------------------------- the report


def scenario(name: str, single: Contender, pooled: Contender, slices: int) -> list[float]:
    ratios = []
    for number in range(slices):
        order = (single, pooled) if number % 2 == 0 else (pooled, single)
        times = {id(contender): contender.run(slice_name(number)) for contender in order}
        ratios.append(times[id(single)] / times[id(pooled)])
    done = len(single.seconds) - slices
    single_s, pool_s = sum(single.seconds[done:]), sum(pooled.seconds[done:])
    mails = sum(single.selected[done:])
    assert mails == sum(pooled.selected[done:])
    print(f"{name}: {mails} mails; so far in all: {pooled.line()}")
    single_others, pool_others = sum(single.others[done:]) / single_s, sum(pooled.others[done:]) / pool_s
    print(f"  single process      {single_s:7.2f} s {mails / single_s:8.1f} mails/s   "
          f"CPU {sum(single.cpu[done:]):6.2f} s; other programs meanwhile used {single_others:.2f} cores")
    print(f"  pool ({pooled.workers} workers)    {pool_s:7.2f} s {mails / pool_s:8.1f} mails/s   "
          f"CPU {sum(pooled.cpu[done:]):6.2f} s; other programs meanwhile used {pool_others:.2f} cores")
    print(f"  ratio pool/single   {single_s / pool_s:7.2f}x   (median of {slices} slices "
          f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f})")
    cores = os.cpu_count() or 1
    projected = sum(single.cpu[done:]) / max(sum(pooled.main_cpu[done:]), sum(pooled.cpu[done:]) / cores)
    print(f"  projected on {cores} free cores {projected:5.2f}x   (CPU-bound estimate: single CPU / "
          "max(pool main-process CPU, pool CPU / cores); for a machine others share)")
    assert single.line() == pooled.line(), (single.line(), pooled.line())
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--slices", type=int, default=5)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kcc-bench-reprocess-") as folder:
        single_db, pool_db = Path(folder) / "single.db", Path(folder) / "pool.db"
        fill(single_db, args.mails, args.slices)
        shutil.copy(single_db, pool_db)
        size = single_db.stat().st_size / 2**20
        print(f"{args.mails} stored mails ({size:.0f} MB database) in {args.slices} slices, {args.workers} workers, "
              f"{os.cpu_count()} cores; setup {time.perf_counter() - began:.1f} s; {machine_load()}")
        single, pooled = Contender(single_db, 1), Contender(pool_db, args.workers)
        scenario("(a) release after a parser fix", single, pooled, args.slices)
        scenario("(b) refresh, nothing changes  ", single, pooled, args.slices)
        single_peaks, pool_peaks = single.finish(), pooled.finish()
    print(f"peak RSS: single process {single_peaks['main_mb']:.0f} MB; pool main {pool_peaks['main_mb']:.0f} MB, "
          f"largest worker {pool_peaks['worker_mb']:.0f} MB (target < 300 MB)")
    print(f"{machine_load()}; total {time.perf_counter() - began:.1f} s")


def machine_load() -> str:
    """Other work on the machine takes cores from both contenders; say how much there was."""
    text = f"load average {os.getloadavg()[0]:.2f}"
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n")[0]
        text += f", cpu pressure {some.split()[2].replace('avg60=', '')}% (avg60)"
    except (OSError, IndexError):
        pass
    return text


if __name__ == "__main__":
    main()
