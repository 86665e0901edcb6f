"""The installed plugin through service-backup's real command line, as an operator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from webdav_server import WebDAVServer


def service_backup(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service_backup", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def write_config(path: Path, source: Path, dest_config: dict) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "destinations": [{"type": "webdav", "name": "nas", "config": dest_config}],
                "source_folder": str(source),
                "cron_schedule": "0 2 * * *",
                "deployment_name": "redis-prod",
                "add_deployment_name_to_backup_path": True,
            }
        )
    )
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    (folder / "aof").mkdir(parents=True)
    (folder / "dump.rdb").write_bytes(b"REDIS0011" + bytes(range(256)) * 64)
    (folder / "aof" / "appendonly 1.aof").write_text("*2\r\n$6\r\nSELECT\r\n")
    return folder


def test_plugins_lists_the_installed_distribution() -> None:
    result = service_backup("plugins")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    expected = ["service_backup", "webdav", "service-backup-webdav", "0.1.0"]
    assert [*expected, "webdav", "-"] in rows, result.stdout


def test_manual_backup_uploads_to_webdav(dav: WebDAVServer, fresh_config, source, tmp_path):
    config = write_config(tmp_path / "backup.yml", source, fresh_config)
    result = service_backup("backup", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # stdout is JSON only
    messages = [line["message"] for line in lines]
    day = time.strftime("%Y/%m/%d")
    remote = f"{fresh_config['url']}/redis-prod/{day}"
    assert f"ServiceBackup.about to upload {source} to WebDAV remote path {remote}" in messages
    done = [
        line for line in lines if line["message"].endswith("Upload backup completed successfully")
    ]
    assert done and done[0]["data"]["destination_name"] == "nas"
    assert done[0]["data"]["size_in_bytes"] == sum(
        f.stat().st_size for f in source.rglob("*") if f.is_file()
    )
    stored = dav.root / fresh_config["url"].removeprefix(dav.url + "/") / "redis-prod" / day
    for relative in ("dump.rdb", "aof/appendonly 1.aof"):
        assert (stored / relative).read_bytes() == (source / relative).read_bytes()
    assert fresh_config["password"] not in result.stdout + result.stderr


def test_wrong_password_fails_the_run_without_showing_it(dav, fresh_config, source, tmp_path):
    wrong = {**fresh_config, "password": "wrong-password-123"}
    config = write_config(tmp_path / "backup.yml", source, wrong)
    result = service_backup("backup", str(config))
    assert result.returncode == 1
    errors = [json.loads(line) for line in result.stdout.splitlines()]
    failed = [e for e in errors if e["message"].endswith("Upload backup completed with error")]
    assert failed and "401" in failed[0]["data"]["error"]
    for secret in ("wrong-password-123", fresh_config["password"]):
        assert secret not in result.stdout + result.stderr


def test_check_round_trips_a_probe(dav: WebDAVServer, fresh_config, source, tmp_path) -> None:
    config = write_config(tmp_path / "backup.yml", source, fresh_config)
    result = service_backup("check", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok   nas (webdav): "), result.stdout
    stored = dav.root / fresh_config["url"].removeprefix(dav.url + "/")
    assert stored.is_dir(), "check creates the collection"
    assert [p for p in stored.rglob("*") if p.is_file()] == [], "the probe was not deleted"

    broken = write_config(
        tmp_path / "broken.yml", source, {**fresh_config, "password": "wrong-password-123"}
    )
    result = service_backup("check", str(broken))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL nas (webdav): "), result.stdout
    assert "wrong-password-123" not in result.stdout + result.stderr


def test_validate_names_a_missing_url(tmp_path: Path, source: Path) -> None:
    config = write_config(tmp_path / "backup.yml", source, {"username": "backup"})
    result = service_backup("validate", str(config))
    assert result.returncode == 2
    assert "destinations[0].config.url: required field missing" in result.stderr
