"""Run one command as a whole process and measure it: wall, CPU, peak RSS.

Every measured command is started through GNU ``time -v``: a process started straight from
this (Python) harness would report the harness's own RSS high-water mark as its peak, because
the kernel carries ``maxrss`` across fork and exec. ``time`` is a small C program, so the
figure it reports is the tool's own. Its ``Maximum resident set size`` is the largest single
process of the tree; for tools that run helpers (``scp`` runs ``ssh``), a sampler also adds up
the RSS of the whole tree every 50 ms. The peak reported is the larger of the two.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

GNU_TIME = "/usr/bin/time"
SAMPLE_INTERVAL = 0.05


@attrs.frozen
class Measurement:
    """One measured run of one command."""

    wall: float
    user: float
    system: float
    max_rss_kib: int
    tree_peak_kib: int
    exit_status: int
    stderr_tail: str = ""
    #: CPU seconds the server spent during the run (None: no server, or not measurable).
    server_cpu: float | None = None

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def peak_rss_kib(self) -> int:
        return max(self.max_rss_kib, self.tree_peak_kib)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` from ``/proc`` (every thread's ``children`` file)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_kib(root: int, include_root: bool = True) -> int:
    """Sum of RSS over ``root`` and all its descendants (KiB)."""
    total = _rss_kib(root) if include_root else 0
    stack = _children(root)
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        stack.extend(_children(pid))
    return total


class _TreeSampler(threading.Thread):
    """Samples the summed RSS of everything below the ``time`` process until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_INTERVAL):
            self.peak = max(self.peak, tree_rss_kib(self.pid, include_root=False))


_FIELDS = {
    "user": re.compile(r"User time \(seconds\): ([\d.]+)"),
    "system": re.compile(r"System time \(seconds\): ([\d.]+)"),
    "max_rss_kib": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
    "exit_status": re.compile(r"Exit status: (\d+)"),
}


def parse_time_report(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, pattern in _FIELDS.items():
        match = pattern.search(text)
        if match:
            values[name] = float(match.group(1))
    signalled = re.search(r"Command terminated by signal (\d+)", text)
    if signalled and "exit_status" not in values:
        values["exit_status"] = 128 + int(signalled.group(1))
    return values


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout_path: Path | None = None,
    timeout: float = 3600,
) -> Measurement:
    """Run ``argv`` under ``time -v``; stdout goes to ``stdout_path`` (or nowhere)."""
    with tempfile.TemporaryDirectory(prefix="bench-time-") as tmp:
        report = Path(tmp) / "time.txt"
        err_path = Path(tmp) / "stderr.txt"
        out = open(stdout_path, "wb") if stdout_path else open(os.devnull, "wb")  # noqa: SIM115
        with out, open(err_path, "wb") as err:
            started = time.monotonic()
            process = subprocess.Popen(
                [GNU_TIME, "-v", "-o", str(report), *argv],
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            sampler = _TreeSampler(process.pid)
            sampler.start()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            wall = time.monotonic() - started
            sampler.done.set()
            sampler.join()
        values = parse_time_report(report.read_text() if report.exists() else "")
        stderr_tail = err_path.read_bytes()[-2000:].decode(errors="replace").strip()
    return Measurement(
        wall=wall,
        user=values.get("user", 0.0),
        system=values.get("system", 0.0),
        max_rss_kib=int(values.get("max_rss_kib", 0)),
        tree_peak_kib=sampler.peak,
        exit_status=int(values.get("exit_status", process.returncode or 0)),
        stderr_tail=stderr_tail,
    )


@attrs.frozen
class Summary:
    """The medians of the successful runs of one tool in one cell."""

    runs: int
    failed: int
    wall: float
    cpu: float
    peak_rss_kib: int
    walls: tuple[float, ...]
    server_cpu: float | None = None

    @classmethod
    def of(cls, measurements: Sequence[Measurement]) -> Summary | None:
        good = [m for m in measurements if m.ok]
        if not good:
            return None
        return cls(
            runs=len(good),
            failed=len(measurements) - len(good),
            wall=statistics.median(m.wall for m in good),
            cpu=statistics.median(m.cpu for m in good),
            peak_rss_kib=max(m.peak_rss_kib for m in good),
            walls=tuple(m.wall for m in good),
            server_cpu=statistics.median(server)
            if (server := [m.server_cpu for m in good if m.server_cpu is not None])
            else None,
        )
