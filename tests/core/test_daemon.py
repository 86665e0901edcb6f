"""The daemon and the in-progress guard, driven through real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.core.cli import cli_command, run_cli, write_config

TRAPPING_CHILD = """#!/usr/bin/env bash
# Announces itself through a FIFO, then waits; on SIGTERM it writes evidence and exits.
trap 'echo "cleaned up after SIGTERM" > "$2"; exit 0' TERM
echo ready > "$1"
sleep 600 &
wait $!
"""

BLOCKING_CHILD = """#!/usr/bin/env bash
# Tells the test it holds the run (FIFO 1), then waits until the test releases it (FIFO 2).
echo holding > "$1"
cat "$2" > /dev/null
"""


class JsonLines:
    """Reads a child's stdout line by line: waiting for a log line is waiting for an event."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[dict] = []

    def wait_for(self, suffix: str) -> dict:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = json.loads(raw)
            self.seen.append(line)
            if line["message"].endswith(suffix):
                return line
        raise AssertionError(f"stdout ended before {suffix!r}; saw {self.seen}")

    def rest(self) -> list[dict]:
        assert self.proc.stdout is not None
        self.seen.extend(json.loads(raw) for raw in self.proc.stdout)
        return self.seen


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def base_config(tmp_path: Path) -> dict:
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.txt").write_text("data")
    return {
        "destinations": [{"type": "local", "config": {"path": str(tmp_path / "dest")}}],
        "source_folder": str(source),
        "cron_schedule": "@every 1s",
    }


def test_sigterm_is_forwarded_and_daemon_exits(tmp_path: Path, base_config: dict) -> None:
    ready, evidence = tmp_path / "ready.fifo", tmp_path / "evidence.txt"
    os.mkfifo(ready)
    child = script(tmp_path / "snapshot.sh", TRAPPING_CHILD)
    base_config["source_executable"] = f"{child} {ready} {evidence}"
    cfg = write_config(tmp_path / "daemon.yml", base_config)
    proc = subprocess.Popen(cli_command("daemon", str(cfg)), stdout=subprocess.PIPE, text=True)
    try:
        log = JsonLines(proc)
        log.wait_for("Service-backup Started")
        log.wait_for("Perform backup started")
        with open(ready) as fifo:  # blocks until the child has set its trap
            assert fifo.read().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = log.rest()
    messages = [line["message"] for line in lines]
    assert evidence.read_text() == "cleaned up after SIGTERM\n"
    assert messages.count("ServiceBackup.Perform backup started") == 1, "one run only"
    assert messages[-1] == "ServiceBackup.All backup processes terminated. Exiting"


def test_invalid_schedule_logs_error_scheduling_job(tmp_path: Path, base_config: dict) -> None:
    base_config["cron_schedule"] = "* * * * * 99"
    result = run_cli("daemon", str(write_config(tmp_path / "d.yml", base_config)))
    assert result.returncode == 2
    line = result.find("Error scheduling job")[0]
    assert line["log_level"] == "error"
    assert line["data"]["error"].startswith("End of range (99) above maximum (6): 99")


def test_daemon_without_destinations_idles(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "none.yml", {"destinations": []})
    proc = subprocess.Popen(cli_command("daemon", str(cfg)), stdout=subprocess.PIPE, text=True)
    try:
        log = JsonLines(proc)
        log.wait_for("Service-backup Started")
        log.wait_for("No destination provided - skipping backup")
        assert proc.poll() is None, "the daemon keeps running without destinations"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("exit_if_in_progress", [True, False])
def test_exit_if_in_progress(tmp_path: Path, base_config: dict, exit_if_in_progress: bool) -> None:
    holding, release = tmp_path / "holding.fifo", tmp_path / "release.fifo"
    os.mkfifo(holding)
    os.mkfifo(release)
    child = script(tmp_path / "hold.sh", BLOCKING_CHILD)
    base_config["exit_if_in_progress"] = exit_if_in_progress
    first_cfg = write_config(tmp_path / "first.yml", {**base_config,
                             "source_executable": f"{child} {holding} {release}"})  # fmt: skip
    second_cfg = write_config(tmp_path / "second.yml", base_config)
    env = {**os.environ, "SERVICE_BACKUP_LOCK_DIR": str(tmp_path / "locks")}
    first = subprocess.Popen(
        cli_command("backup", str(first_cfg)), stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        with open(holding) as fifo:  # the first run is inside its prepare step
            assert fifo.read().strip() == "holding"
        second = run_cli("backup", str(second_cfg), env={"SERVICE_BACKUP_LOCK_DIR": env[
            "SERVICE_BACKUP_LOCK_DIR"]})  # fmt: skip
        with open(release, "w") as fifo:
            fifo.write("go\n")
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    rejected = second.find(
        "Backup currently in progress, exiting. "
        "Another backup will not be able to start until this is completed."
    )
    if exit_if_in_progress:
        assert second.returncode == 1
        assert rejected[0]["log_level"] == "error"
        assert rejected[0]["data"]["error"] == "backup operation rejected"
        assert not second.find("Upload backup started")
    else:
        assert second.returncode == 0
        assert not rejected
        assert second.find("Upload backup completed successfully")


def test_manual_backup_forwards_sigint_to_children(tmp_path: Path, base_config: dict) -> None:
    ready, evidence = tmp_path / "ready.fifo", tmp_path / "evidence.txt"
    os.mkfifo(ready)
    child = script(tmp_path / "snapshot.sh", TRAPPING_CHILD)
    base_config["source_executable"] = f"{child} {ready} {evidence}"
    cfg = write_config(tmp_path / "manual.yml", base_config)
    proc = subprocess.Popen(cli_command("backup", str(cfg)), stdout=subprocess.PIPE, text=True)
    try:
        log = JsonLines(proc)
        log.wait_for("Perform backup started")
        with open(ready) as fifo:
            assert fifo.read().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert evidence.read_text() == "cleaned up after SIGTERM\n"
    failed = [line for line in log.rest() if line["log_level"] == "error"]
    assert failed[0]["data"]["error"] == "upload interrupted: service-backup is shutting down"
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("*.txt"))
