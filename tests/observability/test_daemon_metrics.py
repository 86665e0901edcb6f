"""The daemon's ``/metrics`` endpoint, scraped over HTTP from a real daemon process."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.core.cli import cli_command, write_config
from tests.servers import free_port, wait_for_port

from .helpers import Samples, parse_metrics, value


class Daemon:
    """A daemon process whose JSON log lines are read as they come (the pipe never fills)."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(cli_command("daemon", str(config)), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(json.loads(raw))

    def wait_for(self, suffix: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {suffix!r} log line; saw {self.seen}") from None
            self.seen.append(line)
            if line["message"].endswith(suffix):
                return line

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return parse_metrics(response.read().decode())


def scrape_until(port: int, ready: Any, timeout: float = 20) -> Samples:
    """Scrape until ``ready(samples)``: the run is recorded just after its last log line."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.fixture
def daemon_config(tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"x" * 4096)
    return {
        "destinations": [{"type": "local", "name": "nfs", "config": {"path": str(tmp_path / "d")}}],
        "source_folder": str(source),
        "cron_schedule": "*/2 * * * * *",
    }


def test_endpoint_serves_runs_and_next_run(tmp_path: Path, daemon_config: dict[str, Any]) -> None:
    port = free_port()
    textfile = tmp_path / "service-backup.prom"
    daemon_config["metrics"] = {"listen": f"127.0.0.1:{port}", "textfile": str(textfile)}
    daemon = Daemon(write_config(tmp_path / "daemon.yml", daemon_config))
    try:
        daemon.wait_for("Service-backup Started")
        assert wait_for_port(port, timeout=15, process=daemon.proc), "/metrics never listened"
        # served from before the scheduler starts: the next run time follows once it has
        before = scrape_until(
            port, lambda s: value(s, "service_backup_next_run_timestamp_seconds") is not None
        )
        assert value(before, "service_backup_runs_total", result="rejected") == 0, before
        next_run = value(before, "service_backup_next_run_timestamp_seconds")
        assert next_run is not None and time.time() - 5 < next_run <= time.time() + 2.5, (
            f"*/2 seconds: the next run is at most 2 s away, got {next_run} at {time.time()}"
        )
        daemon.wait_for("Cleanup completed successfully")
        samples = scrape_until(
            port, lambda s: value(s, "service_backup_runs_total", result="success")
        )
        assert value(samples, "service_backup_runs_total", result="success") >= 1  # type: ignore[operator]
        assert value(samples, "service_backup_last_run_success") == 1
        assert value(samples, "service_backup_destination_last_run_success", destination="nfs") == 1
        assert (
            value(samples, "service_backup_destination_last_run_bytes", destination="nfs") == 4096
        )
        assert value(samples, "service_backup_destination_last_run_files", destination="nfs") == 1
        later = value(samples, "service_backup_next_run_timestamp_seconds")
        assert later is not None and later > time.time() - 5, "the next run time moves on"
        with pytest.raises(OSError):  # bound to 127.0.0.1 only, not to every address
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
        on_disk = parse_metrics(textfile.read_text())
        assert value(on_disk, "service_backup_runs_total", result="success") >= 1  # type: ignore[operator]
        assert value(on_disk, "service_backup_next_run_timestamp_seconds") is not None
    finally:
        assert daemon.stop() == 0, "the daemon exits cleanly on SIGTERM"
    assert daemon.proc.stderr is not None and daemon.proc.stderr.read() == ""
    with pytest.raises(OSError):  # the endpoint went away with the daemon
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_endpoint_port_taken_backups_go_on(tmp_path: Path, daemon_config: dict[str, Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon_config["metrics"] = {"listen": f"127.0.0.1:{port}"}
        daemon = Daemon(write_config(tmp_path / "daemon.yml", daemon_config))
        try:
            line = daemon.wait_for("Metrics endpoint could not be started")
            assert line["log_level"] == "error" and f"127.0.0.1:{port}" in line["data"]["error"]
            daemon.wait_for("Upload backup completed successfully")
        finally:
            assert daemon.stop() == 0


def test_endpoint_shows_manual_runs(tmp_path: Path, daemon_config: dict[str, Any]) -> None:
    """A manual run beside the daemon counts in the same numbers (through the textfile)."""
    port = free_port()
    daemon_config["cron_schedule"] = "0 0 1 1 *"  # not during this test
    daemon_config["metrics"] = {"listen": f"127.0.0.1:{port}",
                                "textfile": str(tmp_path / "service-backup.prom")}  # fmt: skip
    config = write_config(tmp_path / "daemon.yml", daemon_config)
    daemon = Daemon(config)
    try:
        assert wait_for_port(port, timeout=15, process=daemon.proc), "/metrics never listened"
        assert value(scrape(port), "service_backup_last_run_success") is None, "no run yet"
        manual = subprocess.run(cli_command("backup", str(config)), capture_output=True, timeout=60)
        assert manual.returncode == 0, manual.stderr
        samples = scrape(port)
        assert value(samples, "service_backup_runs_total", result="success") == 1, samples
        assert value(samples, "service_backup_last_run_success") == 1
        assert value(samples, "service_backup_destination_last_run_files", destination="nfs") == 1
        next_run = value(samples, "service_backup_next_run_timestamp_seconds")
        assert next_run is not None and next_run > time.time(), "the daemon's own next run"
    finally:
        assert daemon.stop() == 0
