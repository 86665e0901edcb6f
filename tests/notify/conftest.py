"""Fixtures for the notification plugins: configs through the real loader, runs, log lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from service_backup.config import BackupConfig, parse_config
from service_backup.logs import format_line
from service_backup.plugins import PluginRegistry, load_registry
from service_backup.processes import ProcessManager
from service_backup.results import RunResult
from service_backup.run import run_backup

from .servers import HttpServer, SmtpServer, http_server, smtp_server

#: A healthchecks ping UUID: a capability, so it must never show in any output.
PING_UUID = "5b3f9c2e-8d41-4e7a-b6a0-7c1d2e3f4a5b"
JSON_USER, JSON_PASSWORD = "hook-user", "json-pass-7Qx2Lm9"
SMTP_USER, SMTP_PASSWORD = "backup-mailer", "smtp-pass-4Kd8Wz1"


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with http_server() as running:
        yield running


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server(SMTP_USER, SMTP_PASSWORD) as running:
        yield running


def ping_url(server: HttpServer) -> str:
    return f"{server.url}/ping/{PING_UUID}"


def json_url(server: HttpServer, path: str = "hooks/backup") -> str:
    return f"json://{JSON_USER}:{JSON_PASSWORD}@127.0.0.1:{server.port}/{path}"


def mailto_url(smtp: SmtpServer) -> str:
    return (
        f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}"
        "?mode=insecure&from=backup@example.com&to=ops@example.com"
    )


def backup_data(tmp_path: Path, succeed: bool = True, **sections: Any) -> dict[str, Any]:
    """A whole backup.yml: one local destination, a prepare step that succeeds or fails."""
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "dump.rdb").write_bytes(b"redis dump")
    return {
        "destinations": [
            {"type": "local", "name": "nfs", "config": {"path": str(tmp_path / "backups")}}
        ],
        "source_folder": str(source),
        "source_executable": "true" if succeed else "false",
        "cron_schedule": "*/5 * * * *",
        "service_identifier_executable": "echo instance-42",
        "deployment_name": "redis-prod",
        **sections,
    }


def load(data: dict[str, Any]) -> tuple[BackupConfig, PluginRegistry]:
    """Through the core's real loader, with every installed hook plugin, as the daemon does."""
    registry = load_registry()
    return parse_config(data, registry), registry


def run(data: dict[str, Any]) -> RunResult:
    config, registry = load(data)
    return run_backup(config, registry, ProcessManager())


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line as the daemon would print it (parsed JSON), debug included."""
    lines: list[dict[str, Any]] = []
    sink = logger.add(
        lambda message: lines.append(json.loads(format_line(message.record))),
        level="DEBUG",
        format="{message}",
    )
    yield lines
    logger.remove(sink)


def messages(lines: list[dict[str, Any]]) -> list[str]:
    return [line["message"].split(".", 1)[1].removeprefix("WithIdentifier.") for line in lines]


def errors_of(lines: list[dict[str, Any]], message: str) -> list[str]:
    return [
        line["data"].get("error", "") for line in lines if line["message"].endswith("." + message)
    ]
