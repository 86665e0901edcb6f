"""The progress display: drawn on a terminal's stderr only, never on stdout or a pipe."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from service_backup.progress import NULL_PROGRESS, RichProgress, progress_display
from service_backup.source import Source
from tests.core.cli import CliResult, cli_command, run_cli, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (source / "small.txt").write_text("small")
    return write_config(tmp_path / "backup.yml", {
        "destinations": [
            {"type": "local", "name": "primary", "config": {"path": str(tmp_path / "one")}},
            {"type": "local", "name": "offsite", "config": {"path": str(tmp_path / "two")}},
        ],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    })  # fmt: skip


def run_with_tty_stderr(command: list[str], stdout_too: bool = False) -> tuple[CliResult, str]:
    """Run with stderr on a pseudo-terminal (120 columns), stdout on a pipe or the same one."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    drawn = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    try:
        stdout = slave if stdout_too else subprocess.PIPE
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=stdout,
                              stderr=slave, env=env, timeout=120)  # fmt: skip
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    result = CliResult(proc.returncode, (proc.stdout or b"").decode(), "")
    return result, drawn.decode(errors="replace")


def test_drawn_on_a_terminal_stdout_stays_json(config_path: Path) -> None:
    result, drawn = run_with_tty_stderr(cli_command("backup", str(config_path)))
    assert result.returncode == 0, result
    assert result.find("Upload backup completed successfully"), "the run's log lines"
    assert all(line["source"] == "ServiceBackup" for line in result.lines), "stdout is JSON only"
    assert "\x1b" not in result.stdout, "no control characters on stdout"
    assert ANSI.search(drawn), f"nothing was drawn on the terminal: {drawn!r}"
    text = ANSI.sub("", drawn)
    for name in ("primary", "offsite"):
        assert re.search(rf"{name}.*3\.0/3\.0 MiB.*2/2 files", text), (
            f"no finished line for {name} (bytes done/total, files):\n{text}"
        )


def test_log_lines_above_the_display_on_a_shared_terminal(config_path: Path) -> None:
    """Interactive ``manual-backup``: stdout is the same terminal; no log line is lost or cut."""
    result, drawn = run_with_tty_stderr(cli_command("backup", str(config_path)), stdout_too=True)
    assert result.returncode == 0
    lines = [line for line in ANSI.sub("", drawn).replace("\r", "\n").split("\n") if "{" in line]
    messages = [json.loads(line[line.index("{") :])["message"] for line in lines]
    expected = [
        "ServiceBackup.Perform backup started",
        "ServiceBackup.Cleanup completed successfully",
    ]
    assert all(m in messages for m in expected), f"log lines lost or torn: {messages}"
    assert messages.count("ServiceBackup.Upload backup completed successfully") == 2, messages
    assert re.search(r"offsite.*3\.0/3\.0 MiB.*2/2 files", ANSI.sub("", drawn)), "no display"


def test_manual_backup_no_progress_draws_nothing(config_path: Path) -> None:
    manual = str(Path(sys.executable).with_name("manual-backup"))
    result, drawn = run_with_tty_stderr([manual, str(config_path), "--no-progress"])
    assert result.returncode == 0, result
    assert drawn == "", f"--no-progress drew on the terminal: {drawn!r}"
    assert result.find("Upload backup completed successfully")


def test_nothing_on_a_pipe(config_path: Path) -> None:
    result = run_cli("backup", str(config_path))
    assert result.returncode == 0
    assert result.stderr == "", f"stderr is a pipe: nothing may be drawn there: {result.stderr!r}"
    assert result.lines


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reporter_counts_from_threads() -> None:
    """The API ``restore`` reuses: add_task, advance from many threads, finish."""
    screen = FakeTerminal()
    with progress_display(stream=screen) as reporter:
        assert isinstance(reporter, RichProgress)
        task = reporter.add_task("restore", total_bytes=8 * 1000 * 1024, total_files=8)

        def one_file() -> None:
            for _ in range(1000):
                reporter.advance(task, bytes=1024)
            reporter.advance(task, files=1)

        workers = [threading.Thread(target=one_file) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        reporter.finish(task)
    text = ANSI.sub("", screen.getvalue())
    assert re.search(r"restore.*7\.8/7\.8 MiB.*8/8 files", text), text


def test_no_terminal_no_display() -> None:
    plain = io.StringIO()
    with progress_display(stream=plain) as reporter:
        assert reporter is NULL_PROGRESS
        reporter.advance(reporter.add_task("x", 10, 1), bytes=10, files=1)
    with progress_display(enabled=False, stream=FakeTerminal()) as reporter:
        assert reporter is NULL_PROGRESS
    assert plain.getvalue() == ""


def test_source_reports_each_byte_once() -> None:
    data = os.urandom(100_000)
    source = Source.from_bytes(data, "x")
    counted: list[int] = []
    source.on_read = counted.append
    with source.open() as stream:
        stream.read(60_000)
        stream.seek(10_000)  # an SDK retry rewinds: those bytes are not progress again
        while stream.read(7_000):
            pass
    assert sum(counted) == len(data), f"counted {sum(counted)} of {len(data)} bytes"
    assert source.sha256


def test_failed_task_says_so() -> None:
    screen = FakeTerminal()
    with progress_display(stream=screen) as reporter:
        ok = reporter.add_task("primary", total_bytes=100, total_files=1)
        bad = reporter.add_task("offsite", total_bytes=100, total_files=1)
        reporter.advance(ok, bytes=100, files=1)
        reporter.advance(bad, bytes=40)
        reporter.finish(ok)
        reporter.finish(bad, ok=False)
    text = ANSI.sub("", screen.getvalue()).splitlines()[-2:]
    assert "failed" not in text[0] and "100/100 bytes" in text[0], text
    assert "offsite failed" in text[1] and "40/100 bytes" in text[1], text


def test_names_are_not_markup() -> None:
    screen = FakeTerminal()
    with progress_display(stream=screen) as reporter:
        reporter.finish(reporter.add_task("s3[1] [red]x", total_bytes=1, total_files=1), ok=False)
    assert "s3[1] [red]x failed" in ANSI.sub("", screen.getvalue()), screen.getvalue()


def _backed_up(config_path: Path) -> None:
    result = run_cli("backup", str(config_path))
    assert result.returncode == 0, result


def test_restore_draws_the_display_on_a_terminal(config_path: Path, tmp_path: Path) -> None:
    _backed_up(config_path)
    into = tmp_path / "restored"
    result, drawn = run_with_tty_stderr(cli_command("restore", str(config_path), "--to", str(into)))
    assert result.returncode == 0, result
    assert "ok restored 2 of 2 files" in result.stdout, result.stdout
    assert "\x1b" not in result.stdout, "no control characters on stdout"
    text = ANSI.sub("", drawn)
    assert re.search(r"primary.*3\.0/3\.0 MiB.*2/2 files", text), (
        f"no finished display line for the restore (bytes done/total, files):\n{text}"
    )
    assert "restore: 2/2 files" not in text, f"plain lines tore through the display:\n{text}"
    assert (into / "big.bin").stat().st_size == 3 * 1024 * 1024


def test_restore_no_progress_draws_nothing(config_path: Path, tmp_path: Path) -> None:
    _backed_up(config_path)
    command = cli_command("restore", str(config_path), "--to", str(tmp_path / "r"), "--no-progress")
    result, drawn = run_with_tty_stderr(command)
    assert result.returncode == 0, result
    assert "\x1b" not in drawn and "restore: " not in drawn, (
        f"--no-progress still showed progress: {drawn!r}"
    )
    assert "restoring 2 files" in drawn, f"the opening line is a message, kept: {drawn!r}"


def test_restore_writes_plain_progress_lines_on_a_pipe(config_path: Path, tmp_path: Path) -> None:
    _backed_up(config_path)
    result = run_cli("restore", str(config_path), "--to", str(tmp_path / "r"))
    assert result.returncode == 0, result
    assert "\x1b" not in result.stderr, f"control characters on a pipe: {result.stderr!r}"
    assert "restore: 2/2 files, 3.0 MiB of 3.0 MiB" in result.stderr, result.stderr
