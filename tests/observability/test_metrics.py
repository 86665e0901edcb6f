"""The metrics textfile after manual runs: success, failure, prepare failure, rejected.

Every check parses the file with prometheus_client's own parser, so a file node_exporter
could not read fails here too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from service_backup.guard import exclusive_run
from tests.core.cli import run_cli, write_config

from .helpers import Samples, parse_metrics, value

SOURCE_FILES = {"dump.rdb": b"r" * 3000, "nested/aof.log": b"a" * 1234}
SOURCE_BYTES = sum(len(d) for d in SOURCE_FILES.values())
NAMES = {
    "service_backup_last_run_timestamp_seconds",
    "service_backup_last_run_success",
    "service_backup_last_run_duration_seconds",
    "service_backup_destination_last_run_success",
    "service_backup_destination_last_success_timestamp_seconds",
    "service_backup_destination_last_run_bytes",
    "service_backup_destination_last_run_files",
    "service_backup_runs_total",
}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    source = tmp_path / "source"
    for path, data in SOURCE_FILES.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(data)
    (tmp_path / "prom").mkdir()
    monkeypatch.setenv("SERVICE_BACKUP_LOCK_DIR", str(tmp_path / "locks"))
    return {
        "destinations": [
            {"type": "local", "name": "primary", "config": {"path": str(tmp_path / "one")}},
            {"type": "local", "name": "secondary", "config": {"path": str(tmp_path / "two")}},
        ],
        "source_folder": str(source),
        "cron_schedule": "@daily",
        "metrics": {"textfile": str(tmp_path / "prom" / "service-backup.prom")},
    }


def backup(tmp_path: Path, config: dict[str, Any], expect: int) -> Samples:
    started = time.time()
    result = run_cli("backup", str(write_config(tmp_path / "backup.yml", config)))
    assert result.returncode == expect, f"backup exit {result.returncode}, expected {expect}"
    assert result.stderr == "", f"stderr must stay empty off a terminal: {result.stderr!r}"
    result.lines  # noqa: B018 - stdout must still be JSON lines only
    folder = tmp_path / "prom"
    assert os.listdir(folder) == ["service-backup.prom"], f"temp files left: {os.listdir(folder)}"
    samples = parse_metrics((folder / "service-backup.prom").read_text())
    stamp = value(samples, "service_backup_last_run_timestamp_seconds")
    if stamp is not None:
        assert stamp <= time.time() + 1, "last run timestamp is in the future"
        assert stamp >= started - 3600 * 24 * 365, "last run timestamp is not a Unix time"
    return samples


def test_success(tmp_path: Path, setup: dict[str, Any]) -> None:
    before = time.time()
    samples = backup(tmp_path, setup, expect=0)
    after = time.time()
    assert {name for name, _ in samples} == NAMES, "every metric of DESIGN, and only those"
    assert value(samples, "service_backup_last_run_success") == 1
    assert before <= value(samples, "service_backup_last_run_timestamp_seconds") <= after  # type: ignore[operator]
    duration = value(samples, "service_backup_last_run_duration_seconds")
    assert duration is not None and 0 < duration <= after - before, duration
    for name in ("primary", "secondary"):
        d = {"destination": name}
        assert value(samples, "service_backup_destination_last_run_success", **d) == 1
        assert value(samples, "service_backup_destination_last_run_bytes", **d) == SOURCE_BYTES
        assert value(samples, "service_backup_destination_last_run_files", **d) == 2
        stamp = value(samples, "service_backup_destination_last_success_timestamp_seconds", **d)
        assert stamp is not None and before <= stamp <= after, stamp
    assert value(samples, "service_backup_runs_total", result="success") == 1
    assert value(samples, "service_backup_runs_total", result="failure") == 0
    assert value(samples, "service_backup_runs_total", result="rejected") == 0
    assert value(samples, "service_backup_next_run_timestamp_seconds") is None, "daemon only"


def test_failure_keeps_the_last_success_time(tmp_path: Path, setup: dict[str, Any]) -> None:
    first = backup(tmp_path, setup, expect=0)
    last_ok = value(first, "service_backup_destination_last_success_timestamp_seconds",
                    destination="secondary")  # fmt: skip
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the destination folder should be")
    setup["destinations"][1]["config"]["path"] = str(blocker)
    samples = backup(tmp_path, setup, expect=1)
    assert value(samples, "service_backup_last_run_success") == 0
    primary, secondary = {"destination": "primary"}, {"destination": "secondary"}
    assert value(samples, "service_backup_destination_last_run_success", **primary) == 1
    assert value(samples, "service_backup_destination_last_run_success", **secondary) == 0
    assert value(samples, "service_backup_destination_last_run_bytes", **secondary) == 0
    assert value(samples, "service_backup_destination_last_run_files", **secondary) == 0
    assert value(samples, "service_backup_destination_last_run_files", **primary) == 2
    kept = value(samples, "service_backup_destination_last_success_timestamp_seconds", **secondary)
    assert kept == last_ok, "a failure must not erase when it last worked"
    newer = value(samples, "service_backup_destination_last_success_timestamp_seconds", **primary)
    assert newer is not None and last_ok is not None and newer > last_ok
    assert value(samples, "service_backup_runs_total", result="success") == 1, "counted across runs"
    assert value(samples, "service_backup_runs_total", result="failure") == 1


def test_prepare_failure_fails_every_destination(tmp_path: Path, setup: dict[str, Any]) -> None:
    setup["source_executable"] = "false"
    samples = backup(tmp_path, setup, expect=1)
    assert value(samples, "service_backup_last_run_success") == 0
    for name in ("primary", "secondary"):
        d = {"destination": name}
        assert value(samples, "service_backup_destination_last_run_success", **d) == 0
        assert (
            value(samples, "service_backup_destination_last_success_timestamp_seconds", **d) is None
        ), "never succeeded: no timestamp rather than a fake 0"
    assert value(samples, "service_backup_runs_total", result="failure") == 1


def test_rejected_run_counts(tmp_path: Path, setup: dict[str, Any]) -> None:
    setup["exit_if_in_progress"] = True
    backup(tmp_path, setup, expect=0)
    with exclusive_run(setup["source_folder"], True) as may_run:
        assert may_run, "the test must hold the in-progress lock"
        samples = backup(tmp_path, setup, expect=1)
    assert value(samples, "service_backup_runs_total", result="rejected") == 1
    assert value(samples, "service_backup_runs_total", result="success") == 1
    assert value(samples, "service_backup_last_run_success") == 1, (
        "a rejected run is not the last run: the one it met reports itself"
    )


def test_unwritable_textfile_never_fails_the_run(tmp_path: Path, setup: dict[str, Any]) -> None:
    missing = tmp_path / "no-such-folder" / "service-backup.prom"
    setup["metrics"]["textfile"] = str(missing)
    result = run_cli("backup", str(write_config(tmp_path / "backup.yml", setup)))
    assert result.returncode == 0, "metrics are never a reason for a backup to fail"
    [line] = result.find("Metrics textfile could not be written")
    assert line["log_level"] == "error" and str(missing) in line["data"]["error"], line


@pytest.mark.parametrize(
    ("listen", "why"),
    [("9756", "is not host:port"), ("localhost:http", "port from 1 to 65535"),
     ("::1:9756", "[::1]:9756"), ("127.0.0.1:70000", "port from 1 to 65535")],
)  # fmt: skip
def test_listen_must_be_host_port(tmp_path: Path, listen: str, why: str) -> None:
    config = {"destinations": [], "metrics": {"listen": listen}}
    result = run_cli("validate", str(write_config(tmp_path / "m.yml", config)))
    assert result.returncode == 2, f"listen {listen!r} must be refused"
    assert f"metrics.listen: '{listen}'" in result.stderr and why in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
