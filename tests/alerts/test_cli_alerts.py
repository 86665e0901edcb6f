"""End to end: the real CLI, a failing ``source_executable``, and the local CF server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import cf_server
from .cf_server import CfServer
from .conftest import PRODUCT, ROOT, alerts_section


def run_backup_cli(tmp_path: Path, alerts: dict[str, Any] | None) -> tuple[int, list[dict], str]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"redis dump")
    config: dict[str, Any] = {
        "destinations": [
            {"type": "local", "name": "nfs", "config": {"path": str(tmp_path / "backups")}}
        ],
        "source_folder": str(source),
        "source_executable": "false",
        "cron_schedule": "*/5 * * * *",
        "service_identifier_executable": "echo instance-e2e",
    }
    if alerts is not None:
        config["alerts"] = alerts
    path = tmp_path / "backup.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "service_backup.cli", "backup", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return out.returncode, lines, out.stdout + out.stderr


def texts(lines: list[dict]) -> list[str]:
    return [line["message"].removeprefix("ServiceBackup.WithIdentifier.") for line in lines]


def assert_no_secrets(server: CfServer, output: str) -> None:
    for secret in (cf_server.CC_PASSWORD, cf_server.CLIENT_SECRET, *server.issued_tokens()):
        assert secret not in output


def test_failed_source_executable_sends_exactly_one_alert(cf: CfServer, tmp_path: Path) -> None:
    status, lines, output = run_backup_cli(tmp_path, alerts_section(cf, timeout_seconds=20))

    assert status == 1, output
    (notification,) = cf.notifications()
    body = notification.json()
    assert body["subject"] == f"[Service Alert][{PRODUCT}] Service Backup Failed"
    assert body["text"].startswith(f"Alert from {PRODUCT}, service instance instance-e2e:\n\n")
    assert "A backup run has failed with the following error: exit status 1" in body["text"]

    messages = texts(lines)
    assert "Perform backup completed with error" in messages
    failed = lines[messages.index("Perform backup completed with error")]
    assert failed["data"]["error"] == "exit status 1"
    assert messages[-2:] == ["Sending alert.", "Sent alert."]
    assert "error sending service alert" not in messages
    assert "Upload backup started" not in messages
    assert not (tmp_path / "backups").exists()
    assert_no_secrets(cf, output)


def test_failed_alert_is_logged_once_and_the_run_error_stays(cf: CfServer, tmp_path: Path) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["notifications"]["cf_space"] = "deleted-space"
    status, lines, output = run_backup_cli(tmp_path, alerts)

    assert status == 1, output
    assert cf.notifications() == []
    messages = texts(lines)
    failed = lines[messages.index("Perform backup completed with error")]
    assert failed["data"]["error"] == "exit status 1"
    assert messages[-2:] == ["Sending alert.", "error sending service alert"]
    assert messages.count("error sending service alert") == 1
    assert lines[-1]["data"]["error"] == (
        f"CF space 'deleted-space' not found in org '{cf_server.ORG}'"
    )
    assert lines[-1]["data"]["identifier"] == "instance-e2e"
    assert_no_secrets(cf, output)


def test_without_alerts_section_the_cli_logs_not_configured(cf: CfServer, tmp_path: Path) -> None:
    status, lines, output = run_backup_cli(tmp_path, None)

    assert status == 1, output
    assert cf.requests == []
    assert texts(lines)[-1] == "Alerts not configured."
